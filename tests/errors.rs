//! Upstream failures become the right status with a short reason, in bounded time.

mod support;

use std::time::{Duration, Instant};

use support::{
    Backend, Http, Reply, TestProxy, blackhole, body_stalling_backend, interim_flood_backend,
    raw_exchange, refusing_address, scripted_backend,
};

fn single_backend_pool(address: impl std::fmt::Display, timeouts: &str) -> String {
    format!("[timeouts]\n{timeouts}\n[pool.web]\nbackends = [{{ address = \"{address}\" }}]\n")
}

#[tokio::test]
async fn refused_connection_is_502() {
    let address = refusing_address().await;
    let proxy = TestProxy::start(&single_backend_pool(address, "")).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.body,
        "upstream connect error in pool \"web\": connection refused"
    );
}

#[tokio::test]
async fn slow_response_head_is_504_after_the_response_timeout() {
    let backend = Backend::start("slow").await;
    let config = single_backend_pool(backend.addr, "response = \"300ms\"");
    let proxy = TestProxy::start(&config).await;
    let started = Instant::now();
    let reply = Http::to(proxy.addr).get("/sleep/10000").await;
    // The backend sleeps 10 s.
    assert_timed_out(&reply, started.elapsed(), Duration::from_secs(5));
}

/// A 504 for the 300 ms response timeout these tests set: after it, and within `within`.
fn assert_timed_out(reply: &Reply, elapsed: Duration, within: Duration) {
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        reply.body.starts_with("upstream timeout in pool \"web\""),
        "{}",
        reply.body
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "504 came before the timeout: {elapsed:?}"
    );
    assert!(elapsed < within, "504 took {elapsed:?}");
}

#[tokio::test]
async fn a_reused_backend_connection_keeps_its_response_timeout() {
    let backend = Backend::start("slow").await;
    let config = single_backend_pool(backend.addr, "response = \"300ms\"");
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    // Each in time, together longer than the timeout: each exchange's deadline is its own.
    for _ in 0..3 {
        assert_eq!(http.get("/sleep/200").await.status, 200);
    }
    let started = Instant::now();
    let reply = http.get("/sleep/10000").await;
    assert_timed_out(&reply, started.elapsed(), Duration::from_secs(5));
    // One connection carried all four: the timed-out exchange ran on a reused one.
    assert_eq!(backend.connections(), 1);
    // The timed-out connection is not reused: the next request opens another.
    assert_eq!(http.get("/sleep/0").await.status, 200);
    assert_eq!(backend.connections(), 2);
}

// Several workers, so the backend's flood and the proxy's reads run at once: the exchange then
// always has bytes to read, which must not keep its deadline from being checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_interim_responses_are_504_after_the_response_timeout() {
    let backend = interim_flood_backend().await;
    let proxy = TestProxy::start(&single_backend_pool(backend, "response = \"300ms\"")).await;
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), Http::to(proxy.addr).get("/"))
        .await
        .expect("an answer, the response timeout being 300 ms");
    // A deadline starved of its checks was seen 1-10 s late (`upstream/h1/connection.rs` polls its timer outside the task budget).
    assert_timed_out(&reply, started.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn response_within_the_timeout_is_relayed() {
    let backend = Backend::start("prompt").await;
    let config = single_backend_pool(backend.addr, "response = \"2s\"");
    let proxy = TestProxy::start(&config).await;
    let reply = Http::to(proxy.addr).get("/sleep/100").await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn connect_that_never_completes_is_502_after_the_connect_timeout() {
    let (address, _fillers, _listener) = blackhole().await;
    let config = single_backend_pool(address, "connect = \"200ms\"");
    let proxy = TestProxy::start(&config).await;
    let started = Instant::now();
    let reply = Http::to(proxy.addr).get("/").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 502);
    assert!(
        reply
            .body
            .starts_with("upstream connect timeout in pool \"web\""),
        "{}",
        reply.body
    );
    assert!(
        elapsed >= Duration::from_millis(200),
        "502 came before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "connect timeout took {elapsed:?}"
    );
}

#[tokio::test]
async fn backend_closing_without_a_response_is_502() {
    let address = scripted_backend(b"").await;
    let proxy = TestProxy::start(&single_backend_pool(address, "")).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 502);
    assert!(
        reply.body.starts_with("upstream error in pool \"web\""),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn backend_speaking_garbage_is_502() {
    let address = scripted_backend(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    let proxy = TestProxy::start(&single_backend_pool(address, "")).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn empty_pool_is_503_without_delay() {
    let proxy = TestProxy::start("[pool.web]\nbackends = []\n").await;
    let started = Instant::now();
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "no healthy backend in pool \"web\"");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_failed_request_does_not_poison_the_next() {
    let good = Backend::start("good").await;
    let dead = refusing_address().await;
    let config = format!(
        "[pool.web]\nstrategy = \"round_robin\"\nretries = 0\nbackends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\n",
        good.addr
    );
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let statuses: Vec<u16> = [
        http.get("/").await.status,
        http.get("/").await.status,
        http.get("/").await.status,
        http.get("/").await.status,
    ]
    .map(|s| s.as_u16())
    .to_vec();
    assert_eq!(
        statuses,
        [502, 200, 502, 200],
        "the client connection survives a 502"
    );
}

/// A backend that goes silent mid-body is given up on after `response_body_idle`, as nginx's
/// `proxy_read_timeout` does: the head is out, so the client's connection is cut short (on both
/// of Fulcrum's client paths: its own for a GET, hyper's for a POST).
#[tokio::test]
async fn a_body_stalled_mid_way_is_cut_after_response_body_idle() {
    let backend = body_stalling_backend().await;
    let proxy = TestProxy::start(&single_backend_pool(
        backend,
        "response_body_idle = \"300ms\"",
    ))
    .await;
    for request in [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        let started = Instant::now();
        let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(10)).await;
        let elapsed = started.elapsed();
        assert!(
            reply.closed,
            "{request:?}: the connection is cut: {:?}",
            reply.text
        );
        assert!(reply.text.starts_with("HTTP/1.1 200"), "{:?}", reply.text);
        assert!(
            reply.text.ends_with("hello"),
            "only what came: {:?}",
            reply.text
        );
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "cut after {elapsed:?}");
    }
}
