//! What a route does besides naming one pool: `redirect` and `respond` answered by the proxy,
//! `split` between pools (sticky when the pools are), its own `timeout`, `retries` and
//! `max_body`, and `mirror` copies to a shadow pool.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::recorder::Recorder;
use support::{
    Backend, Http, TestBody, TestProxy, admin, empty, pool, refusing_address, scrape,
    stalled_backend, wait_until,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body of these chunks, its length unknown beforehand: sent chunked.
struct Chunks(Vec<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = (!self.0.is_empty()).then(|| self.0.remove(0));
        std::task::Poll::Ready(next.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }
}

#[tokio::test]
async fn redirect_fills_in_the_location_and_keeps_the_query() {
    let backend = Backend::start("web").await;
    let config = pool("web", "round_robin", &[&backend])
        + r#"
[[route]]
path_prefix = "/old/"
redirect = { to = "https://www.example.com{path}", status = 301 }
response_headers = { set = { "strict-transport-security" = "max-age=63072000" } }

[[route]]
path = "/moved"
redirect = { to = "/new?from=moved" }

[[route]]
pool = "web"
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let reply = http.get("/old/a/b?x=1&y=2").await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.headers["location"],
        "https://www.example.com/old/a/b?x=1&y=2"
    );
    assert_eq!(
        reply.headers["strict-transport-security"], "max-age=63072000",
        "response_headers apply to a redirect too"
    );
    let reply = http.get("/moved?a=1").await;
    assert_eq!(reply.status, 302, "302 unless the route says otherwise");
    assert_eq!(reply.headers["location"], "/new?from=moved&a=1");
    let reply = http.get("/moved").await;
    assert_eq!(reply.headers["location"], "/new?from=moved");
    assert_eq!(backend.served(), 0, "a redirect never reaches a backend");
}

#[tokio::test]
async fn respond_answers_without_a_backend() {
    let backend = Backend::start("web").await;
    let config = pool("web", "round_robin", &[&backend])
        + r#"
[[route]]
path = "/healthz"
respond = { status = 200, body = "ok\n", content_type = "text/plain" }

[[route]]
path = "/gone"
respond = { status = 410 }

[[route]]
pool = "web"
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let reply = http.get("/healthz").await;
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ok\n"));
    assert_eq!(reply.headers["content-type"], "text/plain");
    let head = http
        .send(Request::head("/healthz").body(empty()).unwrap())
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "3", "HEAD keeps the length");
    assert_eq!(head.body, "");
    let gone = http.get("/gone").await;
    assert_eq!((gone.status.as_u16(), gone.body.as_str()), (410, ""));
    assert_eq!(backend.served(), 0);
    assert_eq!(http.get("/other").await.status, 200);
    assert_eq!(backend.served(), 1);
}

#[tokio::test]
async fn split_gives_each_pool_its_share_and_status_counts_them() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let config = pool("stable", "round_robin", &[&stable])
        + &pool("canary", "round_robin", &[&canary])
        + ADMIN
        + r#"
[[route]]
name = "shop"
split = [{ pool = "stable", weight = 3 }, { pool = "canary", weight = 1 }]
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for _ in 0..400 {
        assert_eq!(http.get("/").await.status, 200);
    }
    assert_eq!(stable.served() + canary.served(), 400);
    assert!(
        (50..=150).contains(&canary.served()),
        "a quarter of 400 goes to the canary, got {}",
        canary.served()
    );
    let status = admin(proxy.admin.unwrap(), "GET", "/status", None, None).await;
    let route = &status.json["routes"][0];
    assert_eq!(route["name"], "shop");
    let split = route["split"].as_array().unwrap();
    assert_eq!(split[0]["pool"], "stable");
    assert_eq!(split[0]["weight"], 3);
    assert_eq!(split[0]["requests"], stable.served() as u64);
    assert_eq!(split[1]["requests"], canary.served() as u64);
}

#[tokio::test]
async fn split_keeps_a_client_on_its_pool_when_the_pools_stick() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let sticky = pool("stable", "round_robin", &[&stable])
        + "[pool.stable.sticky]\n"
        + &pool("canary", "round_robin", &[&canary])
        + "[pool.canary.sticky]\n"
        + "[[route]]\nsplit = [{ pool = \"stable\", weight = 1 }, { pool = \"canary\", weight = 1 }]\n";
    let proxy = TestProxy::start(&sticky).await;
    let http = Http::to(proxy.addr);
    for _ in 0..10 {
        let first = http.get("/").await;
        let cookie = first.cookie();
        for _ in 0..10 {
            let request = Request::get("/")
                .header("cookie", &cookie)
                .body(empty())
                .unwrap();
            assert_eq!(
                http.send(request).await.backend(),
                first.backend(),
                "a client with the cookie of one pool stays there"
            );
        }
    }
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let hashed = pool("a", "consistent_hash", &[&a])
        + "hash_key = \"header:x-user\"\n"
        + &pool("b", "consistent_hash", &[&b])
        + "hash_key = \"header:x-user\"\n"
        + "[[route]]\nsplit = [{ pool = \"a\", weight = 1 }, { pool = \"b\", weight = 1 }]\n";
    let proxy = TestProxy::start(&hashed).await;
    let http = Http::to(proxy.addr);
    let mut pools = std::collections::HashSet::new();
    for user in 0..20 {
        let ask = || {
            Request::get("/")
                .header("x-user", format!("user-{user}"))
                .body(empty())
                .unwrap()
        };
        let first = http.send(ask()).await.backend().to_owned();
        for _ in 0..5 {
            assert_eq!(http.send(ask()).await.backend(), first, "user-{user}");
        }
        pools.insert(first);
    }
    assert_eq!(pools.len(), 2, "20 users are spread over both pools");
}

#[tokio::test]
async fn a_split_with_one_sticky_pool_keeps_its_shares() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let config = pool("stable", "round_robin", &[&stable])
        + &pool("canary", "round_robin", &[&canary])
        + "[pool.canary.sticky]\n"
        + "[[route]]\nsplit = [{ pool = \"stable\", weight = 9 }, { pool = \"canary\", weight = 1 }]\n";
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let mut on_canary = 0;
    for _ in 0..100 {
        let first = http.get("/").await;
        let cookies: Vec<String> = first
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with("fulcrum_affinity_pool=")),
            "the split pins every client, whichever pool it got: {cookies:?}"
        );
        for _ in 0..5 {
            let request = Request::get("/")
                .header("cookie", cookies.join("; "))
                .body(empty())
                .unwrap();
            assert_eq!(http.send(request).await.backend(), first.backend());
        }
        on_canary += usize::from(first.backend() == "canary");
    }
    assert!(
        on_canary <= 30,
        "about 10 of 100 clients stay on the canary, not all who ever drew it: {on_canary}"
    );
}

#[tokio::test]
async fn a_routes_timeout_retries_and_max_body_override_the_servers() {
    let (stalled, _) = stalled_backend().await;
    let good = Backend::start("good").await;
    let refusing = refusing_address().await;
    let config = format!(
        r#"
[limits]
max_body = "1KiB"

[pool.slow]
backends = [{{ address = "{stalled}" }}]

[pool.flaky]
backends = [{{ address = "{refusing}" }}, {{ address = "{good}" }}]
retries = 2

[[route]]
path_prefix = "/slow"
timeout = "200ms"
pool = "slow"

[[route]]
path_prefix = "/once"
retries = 0
pool = "flaky"

[[route]]
path_prefix = "/upload"
max_body = "1MiB"
pool = "flaky"

[[route]]
path_prefix = "/tiny"
max_body = "10B"
pool = "flaky"

[[route]]
pool = "flaky"
"#,
        good = good.addr
    );
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let slow = http.get("/slow").await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(slow.body.contains("request timeout"), "{}", slow.body);
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(http.get("/once").await.status.as_u16());
        }
        statuses
    };
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "without retries, the refusing backend's turns fail: {statuses:?}"
    );
    for _ in 0..4 {
        assert_eq!(http.get("/retried").await.status, 200, "retried elsewhere");
    }
    let post = |path: &str, len: usize| Request::post(path).body(body(vec![b'x'; len])).unwrap();
    assert_eq!(http.send(post("/upload", 10_000)).await.status, 200);
    assert_eq!(http.send(post("/other", 10_000)).await.status, 413);
    assert_eq!(http.send(post("/tiny", 100)).await.status, 413);
    assert_eq!(http.send(post("/tiny", 10)).await.status, 200);
}

#[tokio::test]
async fn mirror_copies_requests_and_their_bodies_to_the_shadow_pool() {
    let real = Backend::start("real").await;
    let shadow = Recorder::start().await;
    let config = pool("web", "round_robin", &[&real])
        + &format!(
            "[pool.shadow]\nbackends = [{{ address = \"{}\" }}]\n",
            shadow.addr
        )
        + r#"
[[route]]
path_prefix = "/none"
pool = "web"
mirror = { pool = "shadow", percent = 0 }

[[route]]
pool = "web"
mirror = { pool = "shadow" }
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let reply = http
        .send(Request::post("/submit?x=1").body(body("hello")).unwrap())
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "real", "the real backend answers");
    wait_until("the copy arrives", Duration::from_secs(5), || {
        shadow.received().len() == 1
    })
    .await;
    let copy = &shadow.received()[0];
    assert_eq!(copy.target(), "/submit?x=1");
    assert_eq!(copy.body, b"hello", "the copy carries the body");
    // A body streamed in chunks, without a length, is copied as the backend received it.
    let streamed = Chunks(vec![Bytes::from("chunk"), Bytes::from("ed")]).boxed();
    let reply = http
        .send(Request::post("/streamed").body(streamed).unwrap())
        .await;
    assert_eq!(reply.status, 200);
    wait_until("the streamed copy arrives", Duration::from_secs(5), || {
        shadow.received().iter().any(|r| r.target() == "/streamed")
    })
    .await;
    let copy = shadow
        .received()
        .into_iter()
        .find(|r| r.target() == "/streamed")
        .unwrap();
    assert_eq!(copy.show_body(), "body \"chunked\"", "{copy:?}");
    let large = Request::post("/large")
        .body(body(vec![b'y'; 100 << 10]))
        .unwrap();
    assert_eq!(http.send(large).await.status, 200);
    assert_eq!(http.get("/none").await.status, 200);
    assert_eq!(http.get("/after").await.status, 200);
    wait_until("the next copy arrives", Duration::from_secs(5), || {
        shadow.received().iter().any(|r| r.target() == "/after")
    })
    .await;
    let targets: Vec<String> = shadow
        .received()
        .iter()
        .map(|r| r.target().to_owned())
        .collect();
    assert_eq!(
        targets,
        ["/submit?x=1", "/streamed", "/after"],
        "a body over 64 KiB is not mirrored, nor a route's 0%"
    );
}

#[tokio::test]
async fn a_stalled_shadow_pool_neither_delays_nor_fails_requests() {
    let real = Backend::start("real").await;
    let (stalled, _) = stalled_backend().await;
    let config = pool("web", "round_robin", &[&real])
        + &format!("[pool.shadow]\nbackends = [{{ address = \"{stalled}\" }}]\n")
        + ADMIN
        + "[[route]]\npool = \"web\"\nmirror = { pool = \"shadow\", percent = 100 }\n";
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for _ in 0..100 {
        assert_eq!(http.get("/").await.status, 200);
    }
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value("fulcrum_mirror_dropped_total", &[("pool", "shadow")]),
        68.0,
        "32 copies wait on the stalled pool; the other 68 are dropped"
    );
}
