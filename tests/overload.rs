//! Overload protection (`[pool.NAME.overload]`): per-backend limits, the priority queue, shedding
//! and its answers, the priority header, reloads, metrics and `/status`. Deterministic: the
//! backend holds `/hold` requests until the test releases them, and every wait is for a
//! condition the proxy reports.

mod support;

use std::time::Duration;

use http::Request;
use support::{Backend, Http, Reply, TestProxy, admin, empty, pool, scrape, wait_until};
use tokio::task::JoinHandle;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";
const TRUSTED: &str =
    "[server]\npriority_header = \"x-priority\"\npriority_trusted = [\"127.0.0.1/32\"]\n";
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "critical"];

/// One pool `api` over `backends` with `overload` as its `[pool.api.overload]` table.
fn config(backends: &[&Backend], overload: &str, extra: &str) -> String {
    pool("api", "round_robin", backends)
        + "[pool.api.overload]\n"
        + overload
        + "\n[[route]]\npool = \"api\"\n"
        + ADMIN
        + extra
}

/// `GET path` with `x-priority: priority`, in the background.
fn send(proxy: &TestProxy, path: &str, priority: &str) -> JoinHandle<Reply> {
    let http = Http::to(proxy.addr);
    let request = Request::get(path)
        .header("x-priority", priority)
        .body(empty())
        .unwrap();
    tokio::spawn(async move { http.send(request).await })
}

/// Requests waiting in pool `api`'s queue, all priorities.
async fn queued(proxy: &TestProxy) -> f64 {
    let metrics = scrape(proxy.admin.unwrap()).await;
    PRIORITIES
        .iter()
        .map(|p| metrics.value("fulcrum_pool_queued", &[("pool", "api"), ("priority", p)]))
        .sum()
}

async fn wait_for_queued(proxy: &TestProxy, count: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = queued(proxy).await;
        if now == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} queued, waiting for {count}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_served(backend: &Backend, count: usize) {
    wait_until(
        &format!("{count} requests at the backend"),
        Duration::from_secs(10),
        || backend.served() == count,
    )
    .await;
}

fn shed(metrics: &support::Metrics, priority: &str, reason: &str) -> f64 {
    metrics.value(
        "fulcrum_requests_shed_total",
        &[("pool", "api"), ("priority", priority), ("reason", reason)],
    )
}

#[tokio::test]
async fn queued_requests_go_by_priority_then_arrival() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(
        &[&backend],
        "max_in_flight = 1\nqueue = 10",
        TRUSTED,
    ))
    .await;
    let first = send(&proxy, "/hold?first", "normal");
    wait_for_served(&backend, 1).await;
    let mut waiting = Vec::new();
    for (name, priority) in [
        ("low1", "low"),
        ("normal1", "normal"),
        ("critical1", "critical"),
        ("low2", "low"),
        ("high1", "high"),
        ("critical2", "critical"),
    ] {
        waiting.push(send(&proxy, &format!("/hold?{name}"), priority));
        // One at a time, so that arrival order is the order sent.
        wait_for_queued(&proxy, waiting.len() as f64).await;
    }
    assert_eq!(backend.served(), 1, "the limit holds the others back");
    for served in 2..=7 {
        backend.release(1);
        wait_for_served(&backend, served).await;
    }
    backend.release(1);
    let order: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.trim_start_matches("/hold?").to_owned())
        .collect();
    assert_eq!(
        order,
        [
            "first",
            "critical1",
            "critical2",
            "high1",
            "normal1",
            "low1",
            "low2"
        ]
    );
    assert_eq!(first.await.unwrap().status, 200);
    for reply in waiting {
        assert_eq!(reply.await.unwrap().status, 200);
    }
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value("fulcrum_queue_wait_seconds_count", &[("pool", "api")]),
        6.0
    );
}

#[tokio::test]
async fn a_full_queue_evicts_the_newest_of_the_lowest_priority() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(
        &[&backend],
        "max_in_flight = 1\nqueue = 2\nretry_after = \"7s\"",
        TRUSTED,
    ))
    .await;
    let _first = send(&proxy, "/hold", "critical");
    wait_for_served(&backend, 1).await;
    let low1 = send(&proxy, "/hold?low1", "low");
    wait_for_queued(&proxy, 1.0).await;
    let low2 = send(&proxy, "/hold?low2", "low");
    wait_for_queued(&proxy, 2.0).await;

    let high = send(&proxy, "/hold?high", "high");
    let evicted = low2.await.unwrap();
    assert_eq!(evicted.status, 503);
    assert_eq!(evicted.headers["retry-after"], "7");
    assert_eq!(
        evicted.body,
        "overloaded: pool \"api\" shed a low priority request (evicted by a more important request)"
    );
    assert!(!low1.is_finished(), "the older low request still waits");
    wait_for_queued(&proxy, 2.0).await;

    // Nothing below normal but low1: it goes next.
    let normal = send(&proxy, "/hold?normal", "normal");
    assert_eq!(low1.await.unwrap().status, 503);
    wait_for_queued(&proxy, 2.0).await;

    // Queue: high, normal. A low one, or another normal, finds nothing below it.
    for priority in ["low", "normal"] {
        let refused = send(&proxy, "/hold", priority).await.unwrap();
        assert_eq!(refused.status, 503, "{priority}");
        assert_eq!(
            refused.body,
            format!("overloaded: pool \"api\" shed a {priority} priority request (queue full)")
        );
        assert_eq!(refused.headers["retry-after"], "7");
    }
    assert_eq!(backend.served(), 1, "shed requests never reach the backend");

    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(shed(&metrics, "low", "evicted"), 2.0);
    assert_eq!(shed(&metrics, "low", "queue_full"), 1.0);
    assert_eq!(shed(&metrics, "normal", "queue_full"), 1.0);
    assert_eq!(shed(&metrics, "high", "queue_full"), 0.0);
    assert_eq!(
        metrics.value(
            "fulcrum_pool_queued",
            &[("pool", "api"), ("priority", "high")]
        ),
        1.0
    );
    backend.release(3);
    assert_eq!(high.await.unwrap().status, 200);
    assert_eq!(normal.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_request_waits_no_longer_than_queue_timeout() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(
        &[&backend],
        "max_in_flight = 1\nqueue_timeout = \"300ms\"\nretry_after = \"1500ms\"",
        "",
    ))
    .await;
    let _first = send(&proxy, "/hold", "normal");
    wait_for_served(&backend, 1).await;
    let started = std::time::Instant::now();
    let reply = Http::to(proxy.addr).get("/hold").await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.headers["retry-after"], "2",
        "whole seconds, rounded up"
    );
    assert_eq!(
        reply.body,
        "overloaded: pool \"api\" shed a normal priority request (waited too long in the queue)"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(shed(&metrics, "normal", "queue_timeout"), 1.0);
    assert_eq!(queued(&proxy).await, 0.0);
    assert_eq!(backend.served(), 1);
    backend.release(1);
}

#[tokio::test]
async fn queue_zero_sheds_at_once_and_a_free_slot_serves() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(&[&backend], "max_in_flight = 2\nqueue = 0", "")).await;
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.status, 200, "below the limit: served");
    let held = [
        send(&proxy, "/hold", "normal"),
        send(&proxy, "/hold", "normal"),
    ];
    wait_for_served(&backend, 3).await;
    let reply = http.get("/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.ends_with("(queue full)"), "{}", reply.body);
    backend.release(2);
    for reply in held {
        assert_eq!(reply.await.unwrap().status, 200);
    }
    assert_eq!(http.get("/").await.status, 200, "slots free again");
}

#[tokio::test]
async fn untrusted_clients_may_only_lower_their_priority() {
    let backend = Backend::start("b").await;
    // 127.0.0.1 is not trusted here: its header can lower the route's `high`, never raise it.
    let untrusted =
        "[server]\npriority_header = \"x-priority\"\npriority_trusted = [\"10.0.0.0/8\"]\n";
    let proxy = TestProxy::start(
        &(pool("api", "round_robin", &[&backend])
            + "[pool.api.overload]\nmax_in_flight = 1\nqueue = 0\n"
            + "[[route]]\npool = \"api\"\npriority = \"high\"\n"
            + ADMIN
            + untrusted),
    )
    .await;
    let _held = send(&proxy, "/hold", "high");
    wait_for_served(&backend, 1).await;
    for (asked, got) in [
        ("critical", "high"),
        ("low", "low"),
        ("normal", "normal"),
        ("nonsense", "high"),
    ] {
        let reply = send(&proxy, "/", asked).await.unwrap();
        assert_eq!(reply.status, 503);
        assert!(
            reply
                .body
                .contains(&format!("shed a {got} priority request")),
            "asked {asked}: {}",
            reply.body
        );
    }
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(shed(&metrics, "high", "queue_full"), 2.0);
    assert_eq!(shed(&metrics, "critical", "queue_full"), 0.0);
    backend.release(1);
    // The backend (or a proxy behind this one) is told the priority the request got.
    assert_eq!(send(&proxy, "/", "critical").await.unwrap().status, 200);
    let last = backend.requests().pop().unwrap();
    assert_eq!(last.headers["x-priority"], "high");
}

#[tokio::test]
async fn trusted_clients_may_raise_their_priority() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(
        &[&backend],
        "max_in_flight = 1\nqueue = 1",
        TRUSTED,
    ))
    .await;
    let _held = send(&proxy, "/hold", "normal");
    wait_for_served(&backend, 1).await;
    let queued_normal = send(&proxy, "/hold?normal", "normal");
    wait_for_queued(&proxy, 1.0).await;
    // Raised to critical, it evicts the queued normal one.
    let raised = send(&proxy, "/hold?critical", "critical");
    let evicted = queued_normal.await.unwrap();
    assert_eq!(evicted.status, 503);
    assert!(evicted.body.contains("shed a normal priority request"));
    wait_for_queued(&proxy, 1.0).await;
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value(
            "fulcrum_pool_queued",
            &[("pool", "api"), ("priority", "critical")]
        ),
        1.0
    );
    backend.release(2);
    assert_eq!(raised.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_reload_keeps_limits_and_queued_requests_and_a_removed_pool_answers_them() {
    let backend = Backend::start("b").await;
    let other = Backend::start("other").await;
    let with_other = |routes: &str| {
        config(&[&backend], "max_in_flight = 1", "")
            + &pool("other", "round_robin", &[&other])
            + routes
    };
    let proxy = TestProxy::start(&with_other("")).await;
    let _held = send(&proxy, "/hold", "normal");
    wait_for_served(&backend, 1).await;
    let waiting = send(&proxy, "/hold?queued", "normal");
    wait_for_queued(&proxy, 1.0).await;

    // A reload that keeps the pool: the queued request still waits, the limit still holds.
    let routes = "[[route]]\npath_prefix = \"/other\"\npool = \"other\"\n";
    let reloaded = with_other(routes).replacen("[[route]]\npool = \"api\"\n", "", 1)
        + "[[route]]\npool = \"api\"\n";
    proxy.rewrite(&reloaded);
    proxy.control.reload().await.expect("the reload succeeds");
    assert_eq!(
        queued(&proxy).await,
        1.0,
        "a reload drops no queued request"
    );
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value(
            "fulcrum_backend_in_flight_limit",
            &[("pool", "api"), ("backend", &backend.addr.to_string())]
        ),
        1.0
    );
    let second = send(&proxy, "/hold?second", "normal");
    wait_for_queued(&proxy, 2.0).await;
    backend.release(1);
    wait_for_served(&backend, 2).await;
    assert_eq!(
        queued(&proxy).await,
        1.0,
        "one at a time, as before the reload"
    );

    // A reload that removes the pool answers what waits in it.
    proxy.rewrite(
        &(pool("other", "round_robin", &[&other]) + "[[route]]\npool = \"other\"\n" + ADMIN),
    );
    proxy.control.reload().await.expect("the reload succeeds");
    let removed = second.await.unwrap();
    assert_eq!(removed.status, 503);
    assert_eq!(
        removed.body,
        "pool \"api\" was removed by a reload while the request waited"
    );
    backend.release(2);
    assert_eq!(waiting.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_hashed_request_waits_for_its_own_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = pool("api", "consistent_hash", &[&a, &b])
        + "hash_key = \"header:x-user\"\n[pool.api.overload]\nmax_in_flight = 1\n"
        + "[[route]]\npool = \"api\"\n"
        + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let keyed = |path: &str| {
        let http = Http::to(proxy.addr);
        let request = Request::get(path)
            .header("x-user", "alice")
            .body(empty())
            .unwrap();
        tokio::spawn(async move { http.send(request).await })
    };
    let first = keyed("/hold");
    wait_until("the first request held", Duration::from_secs(10), || {
        a.served() + b.served() == 1
    })
    .await;
    let (home, spare) = if a.served() == 1 { (&a, &b) } else { (&b, &a) };
    let second = keyed("/hold?second");
    wait_for_queued(&proxy, 1.0).await;
    assert_eq!(
        spare.served(),
        0,
        "a free slot elsewhere is not its backend"
    );
    home.release(1);
    wait_for_served(home, 2).await;
    home.release(1);
    assert_eq!(first.await.unwrap().backend(), home.name());
    assert_eq!(second.await.unwrap().backend(), home.name());
}

#[tokio::test]
async fn status_and_metrics_show_queues_and_limits() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&config(&[&a, &b], "max_in_flight = 1\nqueue = 5", TRUSTED)).await;
    let held = [
        send(&proxy, "/hold", "normal"),
        send(&proxy, "/hold", "normal"),
    ];
    wait_until("both backends busy", Duration::from_secs(10), || {
        a.served() == 1 && b.served() == 1
    })
    .await;
    let waiting = [send(&proxy, "/hold", "high"), send(&proxy, "/hold", "low")];
    wait_for_queued(&proxy, 2.0).await;

    let status = admin(proxy.admin.unwrap(), "GET", "/status", None, None).await;
    let pool = &status.json["pools"]["api"];
    assert_eq!(pool["overload"]["max_in_flight"], 1);
    assert_eq!(pool["overload"]["queue"], 5);
    assert_eq!(pool["overload"]["queued"]["high"], 1);
    assert_eq!(pool["overload"]["queued"]["low"], 1);
    assert_eq!(pool["overload"]["queued"]["critical"], 0);
    for backend in pool["backends"].as_array().unwrap() {
        assert_eq!(backend["in_flight_limit"], 1);
        assert_eq!(backend["in_flight"], 1);
    }
    let metrics = scrape(proxy.admin.unwrap()).await;
    for backend in [&a, &b] {
        let labels = [("pool", "api"), ("backend", &*backend.addr.to_string())];
        assert_eq!(
            metrics.value("fulcrum_backend_in_flight_limit", &labels),
            1.0
        );
    }
    assert_eq!(
        metrics.kind("fulcrum_queue_wait_seconds"),
        Some("histogram")
    );
    assert_eq!(metrics.kind("fulcrum_requests_shed_total"), Some("counter"));

    a.release(3);
    b.release(3);
    for reply in held.into_iter().chain(waiting) {
        assert_eq!(reply.await.unwrap().status, 200);
    }
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value("fulcrum_queue_wait_seconds_count", &[("pool", "api")]),
        2.0
    );
    assert_eq!(queued(&proxy).await, 0.0);
}

#[tokio::test]
async fn pools_without_limits_have_no_overload_series() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&backend]) + ADMIN)).await;
    assert_eq!(Http::to(proxy.addr).get("/").await.status, 200);
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert!(!metrics.has("fulcrum_pool_queued"));
    assert!(!metrics.has("fulcrum_backend_in_flight_limit"));
    let status = admin(proxy.admin.unwrap(), "GET", "/status", None, None).await;
    assert!(status.json["pools"]["web"]["overload"].is_null());
}

#[tokio::test]
async fn a_client_that_leaves_while_queued_leaves_the_queue() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(&[&backend], "max_in_flight = 1", "")).await;
    let _held = send(&proxy, "/hold", "normal");
    wait_for_served(&backend, 1).await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_for_queued(&proxy, 1.0).await;
    drop(client);
    wait_for_queued(&proxy, 0.0).await;
    backend.release(1);
    assert_eq!(Http::to(proxy.addr).get("/").await.status, 200);
    assert_eq!(
        backend.served(),
        2,
        "the request that left never reached the backend"
    );
}

#[tokio::test]
async fn an_adaptive_limit_stays_within_its_bounds_while_serving() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&config(
        &[&backend],
        "max_in_flight = 40\nmin_in_flight = 3\nadaptive = true",
        "",
    ))
    .await;
    let http = Http::to(proxy.addr);
    let label = backend.addr.to_string();
    let labels = [("pool", "api"), ("backend", label.as_str())];
    let start = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        start.value("fulcrum_backend_in_flight_limit", &labels),
        3.0,
        "it starts at the floor, measuring the backend's baseline"
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = Http::to(proxy.addr);
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                assert_eq!(http.get("/").await.status, 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(http.get("/").await.status, 200);
    let limit = scrape(proxy.admin.unwrap())
        .await
        .value("fulcrum_backend_in_flight_limit", &labels);
    assert!((3.0..=40.0).contains(&limit), "{limit}");
    assert_eq!(
        backend.served(),
        401,
        "nothing shed: the queue absorbs the bursts"
    );
}

#[tokio::test]
async fn a_backend_that_comes_back_serves_the_queue() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&config(&[&a, &b], "max_in_flight = 1", "")).await;
    let api = proxy.admin.unwrap();
    let drain = format!("/pools/api/backends/{}/drain", b.addr);
    assert_eq!(admin(api, "POST", &drain, None, None).await.status, 200);
    let _held = send(&proxy, "/hold", "normal");
    wait_for_served(&a, 1).await;
    let waiting = send(&proxy, "/?queued", "normal");
    wait_for_queued(&proxy, 1.0).await;

    // No slot is released: b's return alone lets the queued request go.
    let enable = format!("/pools/api/backends/{}/enable", b.addr);
    assert_eq!(admin(api, "POST", &enable, None, None).await.status, 200);
    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "b");
    a.release(1);
}

#[tokio::test]
async fn a_retry_waits_for_a_slot_like_any_request() {
    let live = Backend::start("live").await;
    let dead = support::refusing_address().await;
    let config = format!(
        "[pool.api]\nbackends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\nretries = 1\n\
         [pool.api.outlier]\nconsecutive_failures = 0\n\
         [pool.api.overload]\nmax_in_flight = 1\n[[route]]\npool = \"api\"\n{ADMIN}{TRUSTED}",
        live.addr
    );
    let proxy = TestProxy::start(&config).await;
    // Round robin: the first request goes to the dead backend and is retried on the live one.
    let held = send(&proxy, "/hold", "normal");
    wait_for_served(&live, 1).await;
    // This one takes the dead backend's free slot, fails, and its retry finds the live one full.
    let retried = send(&proxy, "/?retried", "high");
    wait_for_queued(&proxy, 1.0).await;
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value(
            "fulcrum_pool_queued",
            &[("pool", "api"), ("priority", "high")]
        ),
        1.0,
        "the retry waits at the request's priority"
    );
    live.release(1);
    let reply = retried.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "live");
    assert_eq!(held.await.unwrap().status, 200);
}
