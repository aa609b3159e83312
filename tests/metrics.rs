//! `GET /metrics`: exact counts by pool, backend and code; valid histograms; backend states,
//! ejections, retries and health checks; listeners and reloads.

mod support;

use std::time::Duration;

use support::{Backend, Http, Metrics, TestProxy, pool, refusing_address, scrape};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn requests(m: &Metrics, pool: &str, backend: &str, code: &str) -> f64 {
    m.value(
        "fulcrum_requests_total",
        &[("pool", pool), ("backend", backend), ("code", code)],
    )
}

#[tokio::test]
async fn fifty_requests_move_the_counters_by_exactly_fifty() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = pool("web", "round_robin", &[&a, &b])
        + "[[route]]\nhost = \"app.example\"\npool = \"web\"\n"
        + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());

    let before = scrape(api).await;
    for _ in 0..50 {
        assert_eq!(http.get_host("app.example", "/").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(http.get_host("other.example", "/").await.status, 404);
    }
    let after = scrape(api).await;

    let delta = |backend: &str, code: &str| {
        requests(&after, "web", backend, code) - requests(&before, "web", backend, code)
    };
    assert_eq!(delta(&a_addr, "200"), 25.0, "round robin: half to a");
    assert_eq!(delta(&b_addr, "200"), 25.0, "round robin: half to b");
    assert_eq!(
        requests(&after, "", "", "404") - requests(&before, "", "", "404"),
        3.0,
        "unrouted requests count with empty pool and backend"
    );
    let count = |m: &Metrics, backend: &str| {
        m.value(
            "fulcrum_request_duration_seconds_count",
            &[("pool", "web"), ("backend", backend)],
        )
    };
    assert_eq!(count(&after, &a_addr) - count(&before, &a_addr), 25.0);
    assert_eq!(
        after.kind("fulcrum_request_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(after.kind("fulcrum_requests_total"), Some("counter"));
    assert!(
        after.value(
            "fulcrum_upstream_connect_duration_seconds_count",
            &[("pool", "web"), ("backend", &a_addr)],
        ) >= 1.0,
        "at least one connection to a was opened and timed"
    );
    assert_eq!(
        after.value(
            "fulcrum_backend_state",
            &[("pool", "web"), ("backend", &a_addr), ("state", "healthy")],
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "fulcrum_backend_state",
            &[("pool", "web"), ("backend", &a_addr), ("state", "ejected")],
        ),
        0.0
    );
    assert_eq!(
        after.value(
            "fulcrum_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn in_flight_follows_requests_until_their_body_ends() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let addr = a.addr.to_string();
    let labels = [("pool", "web"), ("backend", addr.as_str())];
    let held = {
        let http = Http::to(proxy.addr);
        tokio::spawn(async move { http.get("/hold").await.status })
    };
    let start = tokio::time::Instant::now();
    while scrape(api)
        .await
        .value("fulcrum_backend_in_flight", &labels)
        != 1.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "in flight never reached 1"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.release(1);
    assert_eq!(held.await.unwrap(), 200);
    let start = tokio::time::Instant::now();
    while scrape(api)
        .await
        .value("fulcrum_backend_in_flight", &labels)
        != 0.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "in flight never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn failures_count_as_502_retries_ejections_and_then_503() {
    let live = Backend::start("live").await;
    let dead = refusing_address().await.to_string();
    let config = format!(
        "[pool.web]\nstrategy = \"round_robin\"\nretries = 1\n\
         backends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\n\
         [pool.web.outlier]\nconsecutive_failures = 2\nbase_ejection = \"60s\"\nmax_ejected_percent = 100\n\
         [pool.solo]\nstrategy = \"round_robin\"\nbackends = [{{ address = \"{dead}\" }}]\n\
         [pool.solo.outlier]\nconsecutive_failures = 2\nbase_ejection = \"60s\"\nmax_ejected_percent = 100\n\
         [[route]]\nhost = \"solo\"\npool = \"solo\"\n[[route]]\npool = \"web\"\n{ADMIN}",
        live.addr
    );
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);

    // web: the dead backend is tried first on every other request, refused, and retried.
    for _ in 0..6 {
        assert_eq!(http.get("/").await.status, 200);
    }
    // solo: two 502s eject its only backend; then 503 with no backend to attribute it to.
    assert_eq!(http.get_host("solo", "/").await.status, 502);
    assert_eq!(http.get_host("solo", "/").await.status, 502);
    assert_eq!(http.get_host("solo", "/").await.status, 503);
    let m = scrape(api).await;

    let retried = m.value(
        "fulcrum_retries_total",
        &[("pool", "web"), ("reason", "connect_failure")],
    );
    assert_eq!(retried, 2.0, "two refusals before ejection, each retried");
    assert_eq!(requests(&m, "web", &live.addr.to_string(), "200"), 6.0);
    assert_eq!(requests(&m, "solo", &dead, "502"), 2.0);
    assert_eq!(requests(&m, "solo", "", "503"), 1.0);
    for pool in ["web", "solo"] {
        let labels = [("pool", pool), ("backend", dead.as_str())];
        assert_eq!(
            m.value("fulcrum_backend_ejections_total", &labels),
            1.0,
            "{pool}"
        );
        let ejected = [
            ("pool", pool),
            ("backend", dead.as_str()),
            ("state", "ejected"),
        ];
        assert_eq!(m.value("fulcrum_backend_state", &ejected), 1.0, "{pool}");
    }
}

#[tokio::test]
async fn health_checks_are_counted_by_result() {
    let a = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&a])
        + "[pool.web.health]\npath = \"/healthz\"\ninterval = \"20ms\"\ntimeout = \"1s\"\n"
        + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    let addr = a.addr.to_string();
    let result = |m: &Metrics, result: &str| {
        m.value(
            "fulcrum_health_checks_total",
            &[("pool", "web"), ("backend", &addr), ("result", result)],
        )
    };
    let start = tokio::time::Instant::now();
    while result(&scrape(api).await, "success") < 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no passing checks counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.set_health(500);
    while result(&scrape(api).await, "failure") < 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no failing checks counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_and_reloads_are_counted() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let listener = proxy.addr.to_string();
    let labels = [("listener", listener.as_str())];

    let before = scrape(api).await;
    assert_eq!(before.value("fulcrum_config_generation", &[]), 1.0);
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.status, 200);
    let during = scrape(api).await;
    assert_eq!(during.value("fulcrum_downstream_connections", &labels), 1.0);
    assert_eq!(
        during.value("fulcrum_downstream_connections_total", &labels)
            - before.value("fulcrum_downstream_connections_total", &labels),
        1.0
    );
    drop(http);
    let start = tokio::time::Instant::now();
    while scrape(api)
        .await
        .value("fulcrum_downstream_connections", &labels)
        != 0.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a closed connection stays counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    proxy.rewrite(&(pool("web", "least_connections", &[&a]) + ADMIN));
    proxy
        .control
        .reload()
        .await
        .expect("a valid config reloads");
    proxy.rewrite("[pool.web]\nstrategy = \"nonsense\"\n");
    proxy
        .control
        .reload()
        .await
        .expect_err("an invalid config is rejected");
    let after = scrape(api).await;
    assert_eq!(
        after.value("fulcrum_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        after.value("fulcrum_config_reloads_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(after.value("fulcrum_config_generation", &[]), 2.0);
    assert_eq!(
        requests(&after, "web", &a.addr.to_string(), "200"),
        1.0,
        "a backend kept by a reload keeps its counts"
    );
}

#[tokio::test]
async fn a_retry_with_nowhere_to_go_is_not_counted() {
    let dead = refusing_address().await.to_string();
    let config = format!(
        "[pool.web]\nretries = 2\nbackends = [{{ address = \"{dead}\" }}]\n\
         [pool.web.outlier]\nconsecutive_failures = 0\n{ADMIN}"
    );
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for _ in 0..3 {
        assert_eq!(http.get("/").await.status, 502);
    }
    let m = scrape(proxy.admin.unwrap()).await;
    let labels = [("pool", "web"), ("reason", "connect_failure")];
    assert_eq!(
        m.value("fulcrum_retries_total", &labels),
        0.0,
        "one backend: nothing to retry on"
    );
    assert_eq!(requests(&m, "web", &dead, "502"), 3.0);
}
