//! Failover: retries on another backend, passive ejection, active health checks, backups,
//! fail-open, and no lost request when a backend dies under load.

mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use support::{
    Backend, Http, TestProxy, answered_by, refusing_address, scripted_backend, stalled_backend,
    until_served_by, wait_until,
};
use tokio::net::TcpListener;

/// `[pool.web]` over these addresses, round robin (so the first request goes to the first),
/// plus `extra` lines in the pool table.
fn pool_of(addresses: &[String], extra: &str) -> String {
    let entries: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[pool.web]\nstrategy = \"round_robin\"\nbackends = [{}]\n{extra}\n",
        entries.join(", ")
    )
}

fn post(path: &str, body: &'static str) -> http::Request<support::TestBody> {
    http::Request::post(path)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())).boxed())
        .unwrap()
}

#[tokio::test]
async fn post_to_a_refusing_backend_succeeds_on_the_next() {
    let dead = refusing_address().await;
    let good = Backend::start("good").await;
    let proxy = TestProxy::start(&pool_of(&[dead.to_string(), good.addr.to_string()], "")).await;
    let reply = Http::to(proxy.addr).send(post("/form", "name=value")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.backend(), "good");
    assert_eq!(good.served(), 1);
}

#[tokio::test]
async fn large_post_to_a_refusing_backend_is_replayed_whole() {
    let dead = refusing_address().await;
    let good = Backend::start("good").await;
    let proxy = TestProxy::start(&pool_of(&[dead.to_string(), good.addr.to_string()], "")).await;
    let request = http::Request::post("/upload")
        .body(support::PatternBody::new(1024 * 1024, true).boxed())
        .unwrap();
    let reply = Http::to(proxy.addr).send(request).await;
    assert_eq!(
        reply.body, "len=1048576 ok=true",
        "a body never sent is retried whatever its size"
    );
}

#[tokio::test]
async fn post_sent_to_a_hung_backend_is_504_and_never_sent_twice() {
    let (hung, received) = stalled_backend().await;
    let good = Backend::start("good").await;
    let config = pool_of(&[hung.to_string(), good.addr.to_string()], "")
        + "[timeouts]\nresponse = \"300ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let reply = Http::to(proxy.addr).send(post("/pay", "amount=10")).await;
    assert_eq!(reply.status, 504);
    assert!(
        received.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the hung backend got the POST"
    );
    assert_eq!(
        good.served(),
        0,
        "a POST that may have reached a backend is never sent again"
    );
}

#[tokio::test]
async fn get_sent_to_a_hung_backend_is_retried_elsewhere() {
    let (hung, _) = stalled_backend().await;
    let good = Backend::start("good").await;
    let config = pool_of(&[hung.to_string(), good.addr.to_string()], "")
        + "[timeouts]\nresponse = \"300ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let reply = Http::to(proxy.addr).get("/page").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "good");
}

#[tokio::test]
async fn reset_after_send_retries_get_but_not_post() {
    let hangup = scripted_backend(b"").await;
    let good = Backend::start("good").await;
    let config = pool_of(&[hangup.to_string(), good.addr.to_string()], "retries = 1");
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    assert_eq!(
        http.get("/a").await.status,
        200,
        "GET is idempotent: retried"
    );
    assert_eq!(good.served(), 1);
    // Round robin: the next request goes to `hangup` first again.
    let reply = http.send(post("/b", "x=1")).await;
    assert_eq!(
        reply.status, 502,
        "POST closed on after sending: not retried"
    );
    assert_eq!(good.served(), 1, "the POST reached no other backend");
}

#[tokio::test]
async fn small_put_body_is_replayed_after_a_reset() {
    let hangup = scripted_backend(b"").await;
    let good = Backend::start("good").await;
    let proxy = TestProxy::start(&pool_of(&[hangup.to_string(), good.addr.to_string()], "")).await;
    let request = http::Request::put("/upload")
        .body(support::PatternBody::new(10_000, false).boxed())
        .unwrap();
    let reply = Http::to(proxy.addr).send(request).await;
    assert_eq!(
        reply.body, "len=10000 ok=true",
        "the replayed body is intact"
    );
}

#[tokio::test]
async fn retries_stop_at_the_configured_count() {
    let dead: Vec<String> = [
        refusing_address().await,
        refusing_address().await,
        refusing_address().await,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let good = Backend::start("good").await;
    let mut addresses = dead.clone();
    addresses.push(good.addr.to_string());
    let proxy = TestProxy::start(&pool_of(&addresses, "retries = 2")).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(
        reply.status, 502,
        "three refusals exhaust 1 attempt + 2 retries"
    );
    assert_eq!(good.served(), 0);
}

#[tokio::test]
async fn killed_backend_is_ejected_and_gets_no_connection_until_the_period_ends() {
    let port_holder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = port_holder.local_addr().unwrap();
    drop(port_holder); // nothing listens: connects are refused
    let good = Backend::start("good").await;
    let outlier = "[pool.web.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1500ms\"\n";
    let proxy = TestProxy::start(&pool_of(
        &[dead.to_string(), good.addr.to_string()],
        outlier,
    ))
    .await;
    let http = Http::to(proxy.addr);
    for _ in 0..6 {
        assert_eq!(
            http.get("/").await.status,
            200,
            "refusals are retried on the good backend"
        );
    }
    // Three refusals in a row: ejected. The port comes back, and must see nothing while ejected.
    let ejected_at = Instant::now();
    let revived = Backend::serve("revived", TcpListener::bind(dead).await.unwrap());
    for _ in 0..10 {
        assert_eq!(http.get("/").await.status, 200);
    }
    if ejected_at.elapsed() < Duration::from_millis(1200) {
        assert_eq!(
            revived.connections(),
            0,
            "an ejected backend receives no connection attempt"
        );
    }
    until_served_by(&http, "revived", Duration::from_secs(10)).await;
}

const FAST_HEALTH: &str = "[pool.web.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_after = 2\nunhealthy_after = 2\n";

#[tokio::test]
async fn failing_health_check_stops_traffic_and_passing_brings_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = pool_of(&[a.addr.to_string(), b.addr.to_string()], "") + FAST_HEALTH;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    wait_until("both backends are probed", Duration::from_secs(5), || {
        a.probes() > 0 && b.probes() > 0
    })
    .await;

    a.set_health(503);
    let failing_since = Instant::now();
    let probes_before = a.probes();
    wait_until("two failed probes", Duration::from_secs(5), || {
        a.probes() >= probes_before + 2
    })
    .await;
    // interval × unhealthy_after has passed plus the probes themselves: `a` must be out now,
    // allowing one more interval for the last verdict to land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let elapsed = failing_since.elapsed();
    let served_before = a.served();
    assert!(
        answered_by(&http, 10).await.iter().all(|n| n == "b"),
        "an unhealthy backend gets no traffic"
    );
    assert_eq!(a.served(), served_before);
    assert!(
        elapsed < Duration::from_secs(3),
        "taking `a` out took {elapsed:?}"
    );

    a.set_health(200);
    wait_until("two passing probes", Duration::from_secs(5), || {
        a.probes() >= probes_before + 6
    })
    .await;
    until_served_by(&http, "a", Duration::from_secs(3)).await;
}

#[tokio::test]
async fn backups_serve_while_every_primary_fails_and_traffic_fails_back() {
    let p1 = Backend::start("p1").await;
    let p2 = Backend::start("p2").await;
    let spare = Backend::start("spare").await;
    let config = pool_of(
        &[p1.addr.to_string(), p2.addr.to_string()],
        &format!("backups = [{{ address = \"{}\" }}]", spare.addr),
    ) + FAST_HEALTH;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    assert!(
        answered_by(&http, 6).await.iter().all(|n| n != "spare"),
        "backups idle while primaries are up"
    );

    p1.set_health(500);
    p2.set_health(500);
    until_served_by(&http, "spare", Duration::from_secs(5)).await;
    assert!(answered_by(&http, 6).await.iter().all(|n| n == "spare"));

    p2.set_health(200);
    until_served_by(&http, "p2", Duration::from_secs(5)).await;
    assert!(
        answered_by(&http, 6).await.iter().all(|n| n == "p2"),
        "failback as soon as a primary is up"
    );
}

#[tokio::test]
async fn pool_with_nothing_available_answers_503_at_once_without_connecting() {
    let a = Backend::start("a").await;
    a.set_health(503);
    let health = FAST_HEALTH.replace("interval = \"100ms\"", "interval = \"1m\"")
        + "start = \"unhealthy\"\n";
    let proxy = TestProxy::start(&(pool_of(&[a.addr.to_string()], "") + &health)).await;
    let http = Http::to(proxy.addr);
    let started = Instant::now();
    let reply = http.get("/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "no healthy backend in pool \"web\"");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "503 took {:?}",
        started.elapsed()
    );
    assert_eq!(a.served(), 0, "no request reached the backend");
}

#[tokio::test]
async fn fail_open_spreads_over_all_when_none_is_available() {
    let a = Backend::start("a").await;
    let health = FAST_HEALTH.replace("interval = \"100ms\"", "interval = \"1m\"")
        + "start = \"unhealthy\"\n";
    let proxy =
        TestProxy::start(&(pool_of(&[a.addr.to_string()], "fail_open = true") + &health)).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(
        reply.status, 200,
        "fail-open uses the unhealthy backend rather than 503"
    );
}

#[tokio::test]
async fn stale_pooled_connections_never_surface_as_errors() {
    let backend = Backend::with_idle_timeout("b", Duration::from_millis(100)).await;
    let proxy = TestProxy::start(&pool_of(&[backend.addr.to_string()], "")).await;
    let http = Http::to(proxy.addr);
    for i in 0..12u64 {
        // Gaps around the backend's idle timeout, so pooled connections die in every phase.
        tokio::time::sleep(Duration::from_millis(80 + (i * 7) % 40)).await;
        let reply = http.get("/").await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_pooled_connection_closed_as_a_get_goes_out_is_retried_on_a_fresh_one() {
    // The backend closes each connection when a second request arrives on it: every GET after
    // the first meets a dead pooled connection, and must be sent again on a new one.
    let (backend, answered) = support::one_request_per_connection_backend().await;
    let config = format!("[pool.web]\nretries = 0\nbackends = [{{ address = \"{backend}\" }}]\n");
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for i in 0..20 {
        let reply = http.get("/").await;
        assert_eq!(reply.status, 200, "GET {i}: {}", reply.body);
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 20);
    // A POST is not idempotent: the backend may have acted on it, so it is not sent again.
    let post = http::Request::post("/").body(support::empty()).unwrap();
    let reply = http.send(post).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_under_load_loses_no_request() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let victim = Backend::start("victim").await;
    let addresses = [a.addr, b.addr, victim.addr].map(|x| x.to_string());
    let proxy = TestProxy::start(&pool_of(&addresses, "")).await;

    let load = support::Load::start(proxy.addr, 16, 150);
    wait_until("load is running", Duration::from_secs(10), || {
        load.done() > 400
    })
    .await;
    victim.stop();
    let (done, failures) = load.finish().await;
    assert_eq!(done, 16 * 150);
    assert!(
        failures.is_empty(),
        "{} requests failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

#[tokio::test]
async fn blackholed_connect_is_a_connect_failure_and_retried_for_post() {
    // The response timeout is shorter than the connect timeout: a connect that never completes
    // must still be a connect failure (retried for any method), not a response timeout.
    let (silent, _fillers, _listener) = support::blackhole().await;
    let good = Backend::start("good").await;
    let config = pool_of(&[silent.to_string(), good.addr.to_string()], "")
        + "[timeouts]\nconnect = \"500ms\"\nresponse = \"200ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let reply = http.send(post("/pay", "")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.backend(), "good", "a POST that never left is retried");
}

#[tokio::test]
async fn response_timeout_does_not_include_connect_time() {
    let (silent, _fillers, _listener) = support::blackhole().await;
    let config = pool_of(&[silent.to_string()], "")
        + "[timeouts]\nconnect = \"600ms\"\nresponse = \"200ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply.body.starts_with("upstream connect timeout"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn backup_takes_over_from_a_dead_primary_without_health_checks() {
    let dead = refusing_address().await;
    let spare = Backend::start("spare").await;
    let config = pool_of(
        &[dead.to_string()],
        &format!("backups = [{{ address = \"{}\" }}]", spare.addr),
    );
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for i in 0..300 {
        let reply = http.get("/").await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        assert_eq!(reply.backend(), "spare");
    }
}

/// Fail-open ends when a backend passes its health checks again, not at the next request: the
/// gauge drops back and the end is logged while no traffic comes.
#[tokio::test]
async fn fail_open_ends_when_a_backend_recovers_without_waiting_for_a_request() {
    let a = Backend::start("a").await;
    a.set_health(500);
    let admin_listen = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let config = pool_of(&[a.addr.to_string()], "fail_open = true") + FAST_HEALTH + admin_listen;
    let proxy = TestProxy::start(&config).await;
    let admin = proxy.admin.unwrap();
    let failing_open = || async {
        support::metrics::scrape(admin)
            .await
            .value("fulcrum_pool_fail_open", &[("pool", "web")])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // Once `a` is down, a request makes the pool fail open.
        Http::to(proxy.addr).get("/").await;
        if failing_open().await == 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fail-open never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.set_health(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while failing_open().await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "fail-open still on with the backend healthy again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
