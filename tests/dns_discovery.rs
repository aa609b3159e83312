//! Backends from DNS (`[pool.NAME.dns]`), against a real DNS server (dnsmasq) on a loopback
//! port: A records on a port, SRV records with weights and priorities, changes followed, the
//! last answer kept while DNS fails, and an authoritative empty answer honoured only after `hold`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, Dnsmasq, Http, TestProxy, admin, scrape, until_served_by};
use tokio::net::TcpListener;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// Two backends on one port, at 127.0.0.1 and 127.0.0.2, as A records give them.
async fn pair() -> (Backend, Backend, u16) {
    let one = Backend::start("one").await;
    let port = one.addr.port();
    let listener = TcpListener::bind(("127.0.0.2", port))
        .await
        .expect("bind 127.0.0.2 on the same port");
    (one, Backend::serve("two", listener), port)
}

fn address_pool(dns: &Dnsmasq, port: u16, extra: &str) -> String {
    format!(
        "[pool.api]\n[pool.api.dns]\nname = \"api.test\"\nport = {port}\nnameservers = [\"{}\"]\n\
         refresh = \"100ms\"\n{extra}[[route]]\npool = \"api\"\n{ADMIN}",
        dns.addr
    )
}

async fn status_pool(proxy: &TestProxy) -> Value {
    admin(proxy.admin.unwrap(), "GET", "/status", None, None)
        .await
        .json["pools"]["api"]
        .clone()
}

/// The members of pool `api` now: `(address, role, weight, source)`, sorted.
async fn members(proxy: &TestProxy) -> Vec<(String, String, u64, String)> {
    let pool = status_pool(proxy).await;
    let mut members: Vec<_> = pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_owned(),
                b["role"].as_str().unwrap().to_owned(),
                b["weight"].as_u64().unwrap(),
                b["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    members
}

async fn wait_for_members(proxy: &TestProxy, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = members(proxy).await;
        if now.len() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now:?}: waiting for {count} members"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_state(proxy: &TestProxy, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pool = status_pool(proxy).await;
        if pool["dns"]["state"] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dns {}: waiting for {state}",
            pool["dns"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_records_become_backends_and_follow_changes() {
    let (one, two, port) = pair().await;
    let dns = Dnsmasq::start("127.0.0.1 api.test\n", "");
    let proxy = TestProxy::start(&address_pool(&dns, port, "weight = 2\n")).await;
    let http = Http::to(proxy.addr);
    until_served_by(&http, "one", Duration::from_secs(10)).await;
    assert_eq!(
        members(&proxy).await,
        [(
            format!("127.0.0.1:{port}"),
            "primary".into(),
            2,
            "dns".into()
        )]
    );

    dns.set_hosts("127.0.0.1 api.test\n127.0.0.2 api.test\n");
    until_served_by(&http, "two", Duration::from_secs(10)).await;
    wait_for_members(&proxy, 2).await;

    dns.set_hosts("127.0.0.2 api.test\n");
    wait_for_members(&proxy, 1).await;
    for _ in 0..10 {
        assert_eq!(http.get("/").await.backend(), "two");
    }
    let metrics = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metrics.value(
            "fulcrum_discovery_backends",
            &[("pool", "api"), ("source", "dns")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "fulcrum_discovery_backends",
            &[("pool", "api"), ("source", "file")]
        ),
        0.0
    );
    drop((one, two));
}

#[tokio::test]
async fn srv_records_give_weights_and_a_backup_tier() {
    let primary = Backend::start("primary").await;
    let other = Backend::start("other").await;
    let backup = Backend::start("backup").await;
    let srv = |priority: u16, weight: u16, target: &str, backend: &Backend| {
        format!(
            "srv-host=_http._tcp.api.test,{target}.test,{},{priority},{weight}\n",
            backend.addr.port()
        )
    };
    let records = srv(10, 3, "a", &primary)
        + &srv(10, 1, "b", &other)
        + &srv(20, 5, "c", &backup)
        + "host-record=a.test,127.0.0.1\nhost-record=b.test,127.0.0.1\nhost-record=c.test,127.0.0.1\n";
    let dns = Dnsmasq::start("", &records);
    let config = format!(
        "[pool.api]\n[pool.api.dns]\nsrv = \"_http._tcp.api.test\"\nnameservers = [\"{}\"]\n\
         refresh = \"100ms\"\n[[route]]\npool = \"api\"\n{ADMIN}",
        dns.addr
    );
    let proxy = TestProxy::start(&config).await;
    wait_for_members(&proxy, 3).await;
    let mut expected = vec![
        (
            primary.addr.to_string(),
            "primary".to_owned(),
            3,
            "dns".to_owned(),
        ),
        (
            other.addr.to_string(),
            "primary".to_owned(),
            1,
            "dns".to_owned(),
        ),
        (
            backup.addr.to_string(),
            "backup".to_owned(),
            5,
            "dns".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(members(&proxy).await, expected);
    let http = Http::to(proxy.addr);
    for _ in 0..20 {
        assert_ne!(http.get("/").await.backend(), "backup", "backups wait");
    }
    assert_eq!(backup.served(), 0);
}

#[tokio::test]
async fn a_dns_that_stops_answering_leaves_the_last_answer_in_force() {
    let (one, _two, port) = pair().await;
    let mut dns = Dnsmasq::start("127.0.0.1 api.test\n", "");
    let proxy = TestProxy::start(&address_pool(&dns, port, "")).await;
    let http = Http::to(proxy.addr);
    until_served_by(&http, "one", Duration::from_secs(10)).await;

    dns.stop();
    wait_for_state(&proxy, "failing").await;
    let api = proxy.admin.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let errors = scrape(api).await.value(
            "fulcrum_discovery_errors_total",
            &[("pool", "api"), ("source", "dns")],
        );
        if errors >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{errors} errors counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        assert_eq!(
            http.get("/").await.backend(),
            "one",
            "the last answer serves"
        );
    }
    assert_eq!(members(&proxy).await.len(), 1);
    drop(one);
}

#[tokio::test]
async fn an_empty_answer_removes_the_backends_only_after_hold() {
    let (one, _two, port) = pair().await;
    let dns = Dnsmasq::start("127.0.0.1 api.test\n", "");
    let proxy = TestProxy::start(&address_pool(&dns, port, "hold = \"1s\"\n")).await;
    let http = Http::to(proxy.addr);
    until_served_by(&http, "one", Duration::from_secs(10)).await;

    dns.set_hosts("");
    wait_for_state(&proxy, "empty").await;
    let seen_empty = Instant::now();
    assert_eq!(
        http.get("/").await.backend(),
        "one",
        "NXDOMAIN alone does not empty the pool"
    );
    wait_for_members(&proxy, 0).await;
    assert!(
        seen_empty.elapsed() >= Duration::from_millis(700),
        "removed {:?} after the empty answer was seen",
        seen_empty.elapsed()
    );
    assert_eq!(http.get("/").await.status, 503);
    drop(one);
}

#[tokio::test]
async fn a_pool_starts_without_dns_and_fills_when_it_answers() {
    let (_one, _two, port) = pair().await;
    let mut dns = Dnsmasq::start("127.0.0.1 api.test\n", "");
    dns.stop();
    let proxy = TestProxy::start(&address_pool(&dns, port, "")).await;
    wait_for_state(&proxy, "failing").await;
    assert_eq!(Http::to(proxy.addr).get("/").await.status, 503);
    dns.restart("");
    wait_for_members(&proxy, 1).await;
    assert_eq!(Http::to(proxy.addr).get("/").await.backend(), "one");
}

#[tokio::test]
async fn dns_backends_join_the_files_and_a_reload_keeps_them() {
    let (one, _two, port) = pair().await;
    let file = Backend::start("file").await;
    let dns = Dnsmasq::start("127.0.0.1 api.test\n", "");
    let config = |extra: &str| {
        address_pool(&dns, port, "").replace(
            "[pool.api]\n",
            &format!(
                "[pool.api]\nbackends = [{{ address = \"{}\" }}]\n{extra}",
                file.addr
            ),
        )
    };
    let proxy = TestProxy::start(&config("")).await;
    wait_for_members(&proxy, 2).await;
    let sources: Vec<String> = members(&proxy).await.into_iter().map(|m| m.3).collect();
    assert!(sources.contains(&"dns".to_owned()) && sources.contains(&"file".to_owned()));
    // A reload that leaves [dns] as it was keeps what DNS found, at once.
    proxy.rewrite(&config("retries = 1\n"));
    proxy.control.reload().await.expect("the reload succeeds");
    assert_eq!(members(&proxy).await.len(), 2);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        members(&proxy)
            .await
            .iter()
            .any(|m| m.0 == addr.to_string())
    );
    drop(one);
}
