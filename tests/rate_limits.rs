//! Rate limits per route and client: 429 with `Retry-After` and the draft RateLimit fields, one
//! bucket per key (client address, header or cookie), one shared bucket for requests without the
//! key, the client behind `trusted_proxies`, and bounded memory under a flood of keys.

mod support;

use std::time::{Duration, Instant};

use http::Request;
use support::{Backend, BinaryProxy, Http, Reply, TestProxy, empty, pool, scrape};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

async fn get_with(http: &Http, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get("/login");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    http.send(request.body(empty()).unwrap()).await
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_and_ratelimit_fields() {
    let backend = Backend::start("web").await;
    let config = pool("web", "round_robin", &[&backend])
        + ADMIN
        + r#"
[[route]]
name = "login"
path_prefix = "/login"
pool = "web"
rate_limit = { key = "client_ip", rate = "1/m", burst = 3 }
response_headers = { set = { "access-control-allow-origin" = "*" } }

[[route]]
pool = "web"
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for _ in 0..3 {
        assert_eq!(http.get("/login").await.status, 200, "the burst passes");
    }
    let refused = http.get("/login").await;
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (59..=60).contains(&retry_after),
        "one request a minute comes back within 60 s, got {retry_after}"
    );
    assert_eq!(refused.headers["ratelimit-policy"], "\"login\";q=1;w=60");
    assert_eq!(
        refused.headers["ratelimit"],
        format!("\"login\";r=0;t={retry_after}").as_str()
    );
    assert!(
        refused.body.contains("too many requests"),
        "{}",
        refused.body
    );
    assert_eq!(
        backend.served(),
        3,
        "a refused request never reaches a backend"
    );
    assert_eq!(
        http.get("/elsewhere").await.status,
        200,
        "other routes are not limited"
    );
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value("fulcrum_rate_limited_total", &[("route", "login")]),
        1.0
    );
}

#[tokio::test]
async fn each_key_has_its_bucket_and_requests_without_one_share_a_bucket() {
    let backend = Backend::start("web").await;
    let config = pool("web", "round_robin", &[&backend])
        + r#"
[[route]]
path_prefix = "/login"
rate_limit = { key = "header:x-api-key", rate = "1/m", burst = 1 }
pool = "web"
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let status = |reply: Reply| reply.status.as_u16();
    assert_eq!(status(get_with(&http, &[("x-api-key", "a")]).await), 200);
    assert_eq!(status(get_with(&http, &[("x-api-key", "a")]).await), 429);
    assert_eq!(status(get_with(&http, &[("x-api-key", "b")]).await), 200);
    assert_eq!(status(get_with(&http, &[]).await), 200);
    assert_eq!(
        status(get_with(&http, &[]).await),
        429,
        "leaving the key out is no way around the limit"
    );
    let cookies = pool("web", "round_robin", &[&backend])
        + r#"
[[route]]
respond = { status = 204 }
rate_limit = { key = "cookie:session", rate = "1/m", burst = 1 }
"#;
    let proxy = TestProxy::start(&cookies).await;
    let http = Http::to(proxy.addr);
    let session = |id: &str| format!("theme=dark; session={id}");
    assert_eq!(
        status(get_with(&http, &[("cookie", &session("s1"))]).await),
        204
    );
    assert_eq!(
        status(get_with(&http, &[("cookie", &session("s1"))]).await),
        429
    );
    assert_eq!(
        status(get_with(&http, &[("cookie", &session("s2"))]).await),
        204
    );
    assert_eq!(
        status(get_with(&http, &[("cookie", "theme=dark")]).await),
        204,
        "a respond route is limited too"
    );
}

#[tokio::test]
async fn trusted_proxies_name_the_client_behind_them() {
    let backend = Backend::start("web").await;
    let route = r#"
[[route]]
pool = "web"
rate_limit = { rate = "1/m", burst = 1 }
"#;
    let trusted = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}{route}",
        pool("web", "round_robin", &[&backend])
    );
    let proxy = TestProxy::start(&trusted).await;
    let http = Http::to(proxy.addr);
    let from = |client: &'static str| [("x-forwarded-for", client)];
    assert_eq!(get_with(&http, &from("192.0.2.1")).await.status, 200);
    assert_eq!(
        get_with(&http, &from("6.6.6.6, 192.0.2.2")).await.status,
        200
    );
    assert_eq!(
        get_with(&http, &from("192.0.2.1")).await.status,
        429,
        "the client named behind a trusted proxy has its own bucket"
    );
    let forwarded = backend.requests().pop().unwrap().headers;
    assert_eq!(
        forwarded["x-forwarded-for"],
        "6.6.6.6, 192.0.2.2, 127.0.0.1"
    );

    let untrusted = trusted.replace("127.0.0.0/8", "10.0.0.0/8");
    let proxy = TestProxy::start(&untrusted).await;
    let http = Http::to(proxy.addr);
    assert_eq!(get_with(&http, &from("192.0.2.1")).await.status, 200);
    assert_eq!(
        get_with(&http, &from("192.0.2.2")).await.status,
        429,
        "an untrusted peer's X-Forwarded-For names nobody"
    );
    let forwarded = backend.requests().pop().unwrap().headers;
    assert_eq!(
        forwarded["x-forwarded-for"], "127.0.0.1",
        "nor is it passed on"
    );
}

/// A flood of distinct keys: the limiter keeps at most `max_keys` clients, so the proxy's
/// resident memory after 1,000,000 keys is what it was after the first 200,000 (the store full
/// since 100,000).
#[test]
fn a_million_distinct_keys_leave_memory_flat() {
    let config = r#"
[log]
access = "off"

[pool.none]
backends = [{ address = "127.0.0.1:9" }]

[[route]]
respond = { status = 204 }
rate_limit = { key = "header:x-key", rate = "1/h", burst = 1 }
"#;
    let proxy = BinaryProxy::start(config);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    runtime.block_on(spray(proxy.addr, 0..200_000));
    let after_first = proxy.rss_kib();
    runtime.block_on(spray(proxy.addr, 200_000..1_000_000));
    let after_all = proxy.rss_kib();
    assert!(
        after_all <= after_first + 8 * 1024,
        "RSS grew from {after_first} KiB to {after_all} KiB over 800,000 more keys"
    );
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "bounded in time"
    );
}

/// Sends one request per key in `keys`, pipelined over 8 connections, and reads every answer.
async fn spray(addr: std::net::SocketAddr, keys: std::ops::Range<u32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNECTIONS: u32 = 8;
    const BATCH: u32 = 500;
    let per_connection = keys.len() as u32 / CONNECTIONS;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let start = keys.start + c * per_connection;
        tasks.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buffer = vec![0u8; 64 << 10];
            let mut key = start;
            while key < start + per_connection {
                let end = (key + BATCH).min(start + per_connection);
                let mut batch = Vec::new();
                for k in key..end {
                    batch.extend_from_slice(
                        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Key: k{k}\r\n\r\n").as_bytes(),
                    );
                }
                stream.write_all(&batch).await.unwrap();
                // Every answer is a bodiless head ending in an empty line: count them.
                let mut answers = 0;
                let mut tail = [0u8; 3];
                while answers < end - key {
                    let n = stream.read(&mut buffer).await.unwrap();
                    assert!(n > 0, "the proxy closed the connection");
                    for &byte in &buffer[..n] {
                        if tail == *b"\r\n\r" && byte == b'\n' {
                            answers += 1;
                        }
                        tail = [tail[1], tail[2], byte];
                    }
                }
                key = end;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}
