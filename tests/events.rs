//! State changes are events: each backend state change is logged once with its reason and
//! counted; reloads are logged with the pools they changed; a new backend's first health check
//! is logged.

mod support;

use std::time::Duration;

use support::{Backend, BinaryProxy, Http, TestProxy, admin, refusing_address, scrape, wait_until};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn changes_to(m: &support::Metrics, backend: &str, state: &str) -> f64 {
    m.value(
        "fulcrum_backend_state_changes_total",
        &[("pool", "web"), ("backend", backend), ("state", state)],
    )
}

/// A round-robin pool of a refusing backend then a live one, ejecting after one failure for
/// `ejection` (its `[pool.web.outlier]` lines), with the admin API on.
async fn dead_before_live(ejection: &str) -> (Backend, String, TestProxy) {
    let live = Backend::start("live").await;
    let dead = refusing_address().await.to_string();
    let config = format!(
        "[pool.web]\nstrategy = \"round_robin\"\nretries = 1\n\
         backends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\n\
         [pool.web.outlier]\nconsecutive_failures = 1\n{ejection}\nmax_ejected_percent = 100\n{ADMIN}",
        live.addr
    );
    (live, dead, TestProxy::start(&config).await)
}

#[tokio::test]
async fn every_state_change_is_counted_once_including_ejections_running_out() {
    let (live, dead, proxy) = dead_before_live("base_ejection = \"300ms\"").await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);

    // The dead backend is first in line: refused, ejected, and the request retried.
    assert_eq!(http.get("/").await.status, 200);
    let m = scrape(api).await;
    assert_eq!(changes_to(&m, &dead, "ejected"), 1.0);
    assert_eq!(changes_to(&m, &dead, "healthy"), 0.0);

    // Nobody acts when the ejection runs out; the pool's watcher reports it.
    let start = tokio::time::Instant::now();
    while changes_to(&scrape(api).await, &dead, "healthy") != 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the end of the ejection is never reported"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let live_addr = live.addr.to_string();
    let path = format!("/pools/web/backends/{live_addr}/drain");
    assert_eq!(admin(api, "POST", &path, None, None).await.status, 200);
    let m = scrape(api).await;
    assert_eq!(changes_to(&m, &live_addr, "draining"), 1.0);
    assert_eq!(
        m.value(
            "fulcrum_backend_state",
            &[
                ("pool", "web"),
                ("backend", &live_addr),
                ("state", "draining")
            ],
        ),
        1.0
    );
    // Draining it again changes nothing, so counts nothing.
    assert_eq!(admin(api, "POST", &path, None, None).await.status, 200);
    assert_eq!(changes_to(&scrape(api).await, &live_addr, "draining"), 1.0);
}

#[tokio::test]
async fn registrations_are_counted() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&(support::pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let body = format!("{{\"address\": \"{}\"}}", b.addr);
    assert_eq!(
        admin(api, "POST", "/pools/web/backends", Some(&body), None)
            .await
            .status,
        201
    );
    assert_eq!(
        admin(api, "POST", "/pools/web/backends", Some(&body), None)
            .await
            .status,
        200
    );
    let path = format!("/pools/web/backends/{}", b.addr);
    assert_eq!(admin(api, "DELETE", &path, None, None).await.status, 204);
    let m = scrape(api).await;
    for change in ["registered", "updated", "deregistered"] {
        assert_eq!(
            m.value("fulcrum_registry_changes_total", &[("change", change)]),
            1.0,
            "{change}"
        );
    }
}

#[tokio::test]
async fn health_changes_and_reloads_are_logged_with_their_reasons() {
    let a = Backend::start("a").await;
    a.set_health(503);
    let config = format!(
        "[pool.web]\nstrategy = \"round_robin\"\nbackends = [{{ address = \"{}\" }}]\n\
         [pool.web.health]\npath = \"/healthz\"\ninterval = \"20ms\"\ntimeout = \"1s\"\nunhealthy_after = 2\n\
         [pool.other]\nbackends = [{{ address = \"{}\" }}]\n[[route]]\npool = \"web\"\n",
        a.addr, a.addr
    );
    let proxy = BinaryProxy::start(&config);
    let deadline = Duration::from_secs(10);
    wait_until("the first health check is logged", deadline, || {
        proxy.logged("first health check failed")
    })
    .await;
    wait_until(
        "the change to unhealthy is logged with its reason",
        deadline,
        || {
            proxy.log.lock().unwrap().iter().any(|line| {
                line.contains("backend state changed")
                    && line.contains("unhealthy")
                    && line.contains("failed 2 health checks in a row")
                    && line.contains("status 503")
            })
        },
    )
    .await;
    a.set_health(200);
    wait_until("the change back to healthy is logged", deadline, || {
        proxy.log.lock().unwrap().iter().any(|line| {
            line.contains("backend state changed")
                && line.contains("health checks in a row")
                && line.contains("passed")
        })
    })
    .await;

    proxy.edit_config("[pool.other]\n", "[pool.other]\nretries = 3\n");
    proxy.signal("HUP");
    wait_until("the reload names the changed pool", deadline, || {
        proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("config reloaded") && line.contains("changed=[\"other\"]"))
    })
    .await;
    proxy.edit_config("retries = 3", "retries = -1");
    proxy.signal("HUP");
    wait_until("a rejected reload is logged", deadline, || {
        proxy.logged("reload rejected")
    })
    .await;
}

/// A backend that keeps failing is ejected again by live traffic as soon as an ejection runs
/// out, often before the pool's watcher looks: each ejection is still one event and one count,
/// and so is each end of one.
#[tokio::test]
async fn repeated_ejections_are_each_reported() {
    let (_live, dead, proxy) =
        dead_before_live("base_ejection = \"20ms\"\nmax_ejection = \"20ms\"").await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);
    let ejections = |m: &support::Metrics| {
        m.value(
            "fulcrum_backend_ejections_total",
            &[("pool", "web"), ("backend", &dead)],
        )
    };
    let start = tokio::time::Instant::now();
    while ejections(&scrape(api).await) < 4.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the dead backend is not ejected four times"
        );
        assert_eq!(http.get("/").await.status, 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let m = scrape(api).await;
    let ejected = ejections(&m);
    assert_eq!(changes_to(&m, &dead, "ejected"), ejected);
    // Every ejection but the last has ended by the time the next began.
    assert!(changes_to(&m, &dead, "healthy") >= ejected - 1.0);
}
