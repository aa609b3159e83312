//! Registrations shared through etcd (`[registry] etcd`): two Fulcrum instances on one real etcd
//! (started by the tests on loopback ports). A backend registered through one instance's admin
//! API is served by the other; an expired lease removes it from both; a key put with etcdctl
//! appears on both; etcd stopped, both keep serving and writes answer 503; a change made while one
//! instance was cut off applies when it reconnects.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, EtcdServer, Http, Relay, TestProxy, admin, scrape, until_served_by};

/// An instance with pool `api` (no backends of its own) following the registry at `etcd`.
async fn instance(etcd: SocketAddr) -> TestProxy {
    TestProxy::start(&format!(
        "[pool.api]\n[[route]]\npool = \"api\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [registry]\netcd = [\"{etcd}\"]\nprefix = \"/fulcrum\"\n"
    ))
    .await
}

async fn register(proxy: &TestProxy, body: &str) -> u16 {
    admin(
        proxy.admin.unwrap(),
        "POST",
        "/pools/api/backends",
        Some(body),
        None,
    )
    .await
    .status
}

async fn status(proxy: &TestProxy) -> Value {
    admin(proxy.admin.unwrap(), "GET", "/status", None, None)
        .await
        .json
}

/// Pool `api`'s members on `proxy`: `(address, weight, source, health)`.
async fn members(proxy: &TestProxy) -> Vec<(String, u64, String, String)> {
    let status = status(proxy).await;
    let mut members: Vec<_> = status["pools"]["api"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_owned(),
                b["weight"].as_u64().unwrap(),
                b["source"].as_str().unwrap().to_owned(),
                b["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    members
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "waited 15 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_members(proxy: &TestProxy, count: usize) {
    wait_for(&format!("{count} members"), async || {
        members(proxy).await.len() == count
    })
    .await;
}

async fn registry_state(proxy: &TestProxy) -> String {
    status(proxy).await["registry"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_backend_registered_through_one_instance_is_served_by_the_other() {
    let etcd = EtcdServer::start();
    let backend = Backend::start("shared").await;
    let a = instance(etcd.addr).await;
    let b = instance(etcd.addr).await;
    wait_for("a connected", async || {
        registry_state(&a).await == "connected"
    })
    .await;
    let body = format!(r#"{{"address": "{}", "weight": 3}}"#, backend.addr);
    assert_eq!(register(&a, &body).await, 201);
    assert_eq!(
        members(&a).await,
        [(backend.addr.to_string(), 3, "etcd".into(), "healthy".into())],
        "the reply waits until this instance serves it"
    );
    until_served_by(&Http::to(b.addr), "shared", Duration::from_secs(10)).await;
    assert_eq!(members(&b).await, members(&a).await);

    // Drained through B: every instance drains it.
    let drain = format!("/pools/api/backends/{}/drain", backend.addr);
    assert_eq!(
        admin(b.admin.unwrap(), "POST", &drain, None, None)
            .await
            .status,
        200
    );
    wait_for("drained on A", async || {
        members(&a).await.first().is_some_and(|m| m.3 == "draining")
    })
    .await;

    // Deregistered through B: gone from both.
    let path = format!("/pools/api/backends/{}", backend.addr);
    assert_eq!(
        admin(b.admin.unwrap(), "DELETE", &path, None, None)
            .await
            .status,
        204
    );
    wait_for_members(&a, 0).await;
    assert_eq!(
        admin(b.admin.unwrap(), "DELETE", &path, None, None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn an_expired_lease_removes_the_backend_from_every_instance() {
    let etcd = EtcdServer::start();
    let backend = Backend::start("leased").await;
    let a = instance(etcd.addr).await;
    let b = instance(etcd.addr).await;
    wait_for("a connected", async || {
        registry_state(&a).await == "connected"
    })
    .await;
    let body = format!(r#"{{"address": "{}", "ttl": "2s"}}"#, backend.addr);
    assert_eq!(register(&a, &body).await, 201);
    wait_for_members(&b, 1).await;
    // A heartbeat keeps it: through B, whichever instance registered it.
    let beat = format!("/pools/api/backends/{}/heartbeat", backend.addr);
    assert_eq!(
        admin(b.admin.unwrap(), "PUT", &beat, None, None)
            .await
            .status,
        200
    );
    // Then none: etcd deletes the key when the lease runs out, and both drop the backend.
    wait_for_members(&a, 0).await;
    wait_for_members(&b, 0).await;
    assert_eq!(Http::to(b.addr).get("/").await.status, 503);
    assert_eq!(
        admin(a.admin.unwrap(), "PUT", &beat, None, None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_key_put_with_etcdctl_appears_on_every_instance() {
    let etcd = EtcdServer::start();
    let backend = Backend::start("self-registered").await;
    let a = instance(etcd.addr).await;
    let b = instance(etcd.addr).await;
    let key = format!("/fulcrum/pools/api/backends/{}", backend.addr);
    // A bad value is skipped, not fatal; once valid it applies.
    etcd.put(&key, "{weight: 2");
    etcd.put("/fulcrum/pools/nope/backends/127.0.0.1:1", "{}");
    wait_for("a connected", async || {
        registry_state(&a).await == "connected"
    })
    .await;
    assert_eq!(Http::to(a.addr).get("/").await.status, 503);
    etcd.put(&key, r#"{"weight": 2}"#);
    for proxy in [&a, &b] {
        wait_for_members(proxy, 1).await;
        assert_eq!(
            members(proxy).await,
            [(backend.addr.to_string(), 2, "etcd".into(), "healthy".into())]
        );
        assert_eq!(
            Http::to(proxy.addr).get("/").await.backend(),
            "self-registered"
        );
    }
    let metrics = scrape(a.admin.unwrap()).await;
    assert_eq!(
        metrics.value(
            "fulcrum_discovery_backends",
            &[("pool", "api"), ("source", "etcd")]
        ),
        1.0
    );
}

#[tokio::test]
async fn etcd_down_keeps_the_last_set_and_writes_answer_503() {
    let mut etcd = EtcdServer::start();
    let backend = Backend::start("kept").await;
    let other = Backend::start("other").await;
    let a = instance(etcd.addr).await;
    let b = instance(etcd.addr).await;
    wait_for("a connected", async || {
        registry_state(&a).await == "connected"
    })
    .await;
    let body = format!(r#"{{"address": "{}"}}"#, backend.addr);
    assert_eq!(register(&a, &body).await, 201);
    wait_for_members(&b, 1).await;

    etcd.stop();
    for proxy in [&a, &b] {
        wait_for("unreachable", async || {
            registry_state(proxy).await == "unreachable"
        })
        .await;
        for _ in 0..5 {
            assert_eq!(Http::to(proxy.addr).get("/").await.backend(), "kept");
        }
    }
    let body = format!(r#"{{"address": "{}"}}"#, other.addr);
    assert_eq!(register(&a, &body).await, 503);
    let errors = scrape(a.admin.unwrap()).await.value(
        "fulcrum_discovery_errors_total",
        &[("pool", ""), ("source", "etcd")],
    );
    assert!(errors >= 1.0, "{errors}");

    etcd.resume();
    wait_for("connected again", async || {
        registry_state(&a).await == "connected"
    })
    .await;
    assert_eq!(register(&a, &body).await, 201);
    wait_for_members(&b, 2).await;
}

#[tokio::test]
async fn a_change_made_while_an_instance_was_cut_off_applies_when_it_reconnects() {
    let etcd = EtcdServer::start();
    let first = Backend::start("first").await;
    let second = Backend::start("second").await;
    let mut relay = Relay::start(etcd.addr).await;
    let a = instance(etcd.addr).await;
    let b = instance(relay.addr).await;
    wait_for("b connected", async || {
        registry_state(&b).await == "connected"
    })
    .await;
    let body = format!(r#"{{"address": "{}"}}"#, first.addr);
    assert_eq!(register(&a, &body).await, 201);
    wait_for_members(&b, 1).await;

    relay.cut();
    wait_for("b cut off", async || {
        registry_state(&b).await == "unreachable"
    })
    .await;
    let body = format!(r#"{{"address": "{}"}}"#, second.addr);
    assert_eq!(register(&a, &body).await, 201);
    let path = format!("/pools/api/backends/{}", first.addr);
    assert_eq!(
        admin(a.admin.unwrap(), "DELETE", &path, None, None)
            .await
            .status,
        204
    );
    assert_eq!(members(&b).await.len(), 1, "cut off, B keeps what it knew");
    assert_eq!(Http::to(b.addr).get("/").await.backend(), "first");

    relay.restore().await;
    wait_for("b reconnected with the change", async || {
        members(&b)
            .await
            .iter()
            .map(|m| m.0.clone())
            .collect::<Vec<_>>()
            == [second.addr.to_string()]
    })
    .await;
    assert_eq!(Http::to(b.addr).get("/").await.backend(), "second");
}

#[tokio::test]
async fn a_key_of_a_pool_the_config_lacks_applies_once_a_reload_adds_the_pool() {
    let etcd = EtcdServer::start();
    let backend = Backend::start("web").await;
    let a = instance(etcd.addr).await;
    etcd.put(
        &format!("/fulcrum/pools/web/backends/{}", backend.addr),
        "{}",
    );
    wait_for("a connected", async || {
        registry_state(&a).await == "connected"
    })
    .await;
    let with_web = format!(
        "[pool.api]\n[pool.web]\n[[route]]\npath_prefix = \"/web\"\npool = \"web\"\n\
         [[route]]\npool = \"api\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [registry]\netcd = [\"{}\"]\nprefix = \"/fulcrum\"\n",
        etcd.addr
    );
    a.rewrite(&with_web);
    a.control.reload().await.expect("the reload succeeds");
    wait_for("the web pool served from etcd", async || {
        Http::to(a.addr)
            .try_get("/web")
            .await
            .is_ok_and(|r| r.backend() == "web")
    })
    .await;
}
