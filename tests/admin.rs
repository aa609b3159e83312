//! The admin API as a service registry: register, deregister, drain, leases, persistence, tokens.

mod support;

use std::time::{Duration, Instant};

use fulcrum::Options;
use serde_json::Value;
use support::{
    Backend, Http, TestProxy, admin, answered_by, pool, pool_with_backups, scrape, wait_until,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The addresses `GET /pools/web/backends?available=true` lists.
async fn available(api: std::net::SocketAddr) -> Vec<String> {
    let listed = admin(api, "GET", "/pools/web/backends?available=true", None, None)
        .await
        .json;
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_owned())
        .collect()
}

fn member<'a>(list: &'a Value, address: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|b| b["address"] == address)
}

#[tokio::test]
async fn register_serves_at_once_and_deregister_stops_it() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);

    let body = format!(
        "{{\"address\": \"{}\", \"weight\": 2, \"backup\": false}}",
        b.addr
    );
    let reply = admin(api, "POST", "/pools/web/backends", Some(&body), None).await;
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    assert_eq!(reply.json["source"], "api");
    assert_eq!(reply.json["weight"], 2);
    assert!(
        answered_by(&http, 6).await.contains(&"b".to_owned()),
        "a registration serves at once"
    );

    let listed = admin(api, "GET", "/pools/web/backends", None, None)
        .await
        .json;
    assert_eq!(
        member(&listed, &a.addr.to_string()).unwrap()["source"],
        "file"
    );
    let registered = member(&listed, &b.addr.to_string()).unwrap();
    assert_eq!(registered["source"], "api");
    assert_eq!(registered["role"], "primary");
    assert_eq!(registered["health"], "healthy");

    let path = format!("/pools/web/backends/{}", b.addr);
    assert_eq!(admin(api, "DELETE", &path, None, None).await.status, 204);
    assert!(
        answered_by(&http, 6).await.iter().all(|n| n == "a"),
        "deregistered: no traffic"
    );
    assert_eq!(
        admin(api, "DELETE", &path, None, None).await.status,
        404,
        "already gone"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let cases = [
        ("POST", "/pools/web/backends", Some("{not json"), 400),
        (
            "POST",
            "/pools/web/backends",
            Some("{\"address\": \"nowhere\"}"),
            400,
        ),
        (
            "POST",
            "/pools/web/backends",
            Some("{\"address\": \"127.0.0.1:9\", \"weight\": 0}"),
            400,
        ),
        (
            "POST",
            "/pools/web/backends",
            Some("{\"address\": \"127.0.0.1:9\", \"ttl\": \"soon\"}"),
            400,
        ),
        (
            "POST",
            "/pools/web/backends",
            Some("{\"address\": \"127.0.0.1:9\", \"colour\": 1}"),
            400,
        ),
        (
            "POST",
            "/pools/nope/backends",
            Some("{\"address\": \"127.0.0.1:9\"}"),
            404,
        ),
        ("DELETE", "/pools/web/backends/127.0.0.1:9", None, 404),
        ("DELETE", "/pools/nope/backends/127.0.0.1:9", None, 404),
        ("POST", "/pools/web/backends/127.0.0.1:9/drain", None, 404),
        ("GET", "/pools/nope/backends", None, 404),
        ("GET", "/nothing/here", None, 404),
        ("DELETE", "/status", None, 405),
    ];
    for (method, path, body, expected) in cases {
        let reply = admin(api, method, path, body, None).await;
        assert_eq!(
            reply.status, expected,
            "{method} {path} {body:?}: {:?}",
            reply.json
        );
        assert!(
            reply.json["error"].is_string(),
            "{method} {path}: errors are JSON"
        );
    }
    let file_backend = format!("{{\"address\": \"{}\"}}", a.addr);
    let reply = admin(
        api,
        "POST",
        "/pools/web/backends",
        Some(&file_backend),
        None,
    )
    .await;
    assert_eq!(reply.status, 409, "already in the pool by the file");
}

#[tokio::test]
async fn token_is_required_when_set() {
    let a = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&a]) + ADMIN + "token = \"s3cret\"\n";
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    assert_eq!(admin(api, "GET", "/status", None, None).await.status, 401);
    assert_eq!(
        admin(api, "GET", "/status", None, Some("wrong"))
            .await
            .status,
        401
    );
    assert_eq!(admin(api, "POST", "/reload", None, None).await.status, 401);
    assert_eq!(
        admin(api, "GET", "/status", None, Some("s3cret"))
            .await
            .status,
        200
    );
}

/// The token is checked once a head has arrived: before that, a silent or dribbling client
/// must not hold an admin connection (a descriptor) for ever. It gets `request_header`.
#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&a])
        + "[timeouts]\nrequest_header = \"300ms\"\n"
        + ADMIN
        + "token = \"s3cret\"\n";
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    for head in ["", "GET /status HTTP/1.1\r\nHost: a\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(api).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        assert!(
            closed.await.is_ok(),
            "an admin connection with the head {head:?} unfinished is still open after 10 s"
        );
    }
    // The API still answers.
    let status = admin(api, "GET", "/status", None, Some("s3cret")).await;
    assert_eq!(status.status, 200);
}

#[tokio::test]
async fn status_shows_generation_pools_and_backends() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let config = pool_with_backups("web", "least_connections", &[&a], &[&spare]) + ADMIN;
    let proxy = TestProxy::start(&config).await;
    Http::to(proxy.addr).get("/").await;
    let status = admin(proxy.admin.unwrap(), "GET", "/status", None, None)
        .await
        .json;
    assert_eq!(status["generation"], 1);
    assert!(
        status["loaded_at"].as_str().unwrap().ends_with('Z'),
        "{status}"
    );
    assert!(status["last_reload_error"].is_null());
    let web = &status["pools"]["web"];
    assert_eq!(web["strategy"], "least_connections");
    let primary = member(&web["backends"], &a.addr.to_string()).unwrap();
    assert_eq!(primary["role"], "primary");
    assert_eq!(primary["requests"], 1);
    assert_eq!(primary["in_flight"], 0);
    assert!(primary["ejected_until"].is_null());
    assert_eq!(
        member(&web["backends"], &spare.addr.to_string()).unwrap()["role"],
        "backup"
    );
}

#[tokio::test]
async fn drain_stops_new_requests_while_in_flight_ones_finish() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a, &b]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let held = {
        let http = Http::to(proxy.addr);
        tokio::spawn(async move { http.get("/hold").await })
    };
    wait_until("the held request reached a", Duration::from_secs(5), || {
        a.served() == 1
    })
    .await;

    let path = format!("/pools/web/backends/{}/drain", a.addr);
    let reply = admin(api, "POST", &path, None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["health"], "draining");
    assert_eq!(reply.json["in_flight"], 1);
    let http = Http::to(proxy.addr);
    assert!(
        answered_by(&http, 6).await.iter().all(|n| n == "b"),
        "a draining backend gets nothing new"
    );
    let available = admin(api, "GET", "/pools/web/backends?available=true", None, None)
        .await
        .json;
    assert_eq!(available.as_array().unwrap().len(), 1);
    assert_eq!(available[0]["address"], b.addr.to_string());

    a.release(1);
    assert_eq!(
        held.await.unwrap().status,
        200,
        "the in-flight request finishes"
    );
    let path = format!("/pools/web/backends/{}/enable", a.addr);
    assert_eq!(
        admin(api, "POST", &path, None, None).await.json["health"],
        "healthy"
    );
    assert!(answered_by(&http, 6).await.contains(&"a".to_owned()));
}

/// `disable` takes a backend out for maintenance: nothing new reaches it, its state is
/// `disabled` (outranking `draining`), and `enable` brings it back.
#[tokio::test]
async fn disable_takes_a_backend_out_until_enabled() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a, &b]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);
    let member = |action: &str| format!("/pools/web/backends/{}/{action}", a.addr);

    let reply = admin(api, "POST", &member("disable"), None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["health"], "disabled");
    assert_eq!(reply.json["available"], false);
    assert!(
        answered_by(&http, 6).await.iter().all(|n| n == "b"),
        "a disabled backend gets nothing"
    );
    let m = scrape(api).await;
    let state = |state: &str| {
        m.value(
            "fulcrum_backend_state",
            &[
                ("pool", "web"),
                ("backend", &a.addr.to_string()),
                ("state", state),
            ],
        )
    };
    assert_eq!(state("disabled"), 1.0);
    assert_eq!(
        admin(api, "GET", &member("disable"), None, None)
            .await
            .status,
        405
    );

    let reply = admin(api, "POST", &member("enable"), None, None).await;
    assert_eq!(reply.json["health"], "healthy");
    assert!(answered_by(&http, 6).await.contains(&"a".to_owned()));
}

#[tokio::test]
async fn lease_expires_without_heartbeats_and_lives_with_them() {
    let a = Backend::start("a").await;
    let kept = Backend::start("kept").await;
    let lapsed = Backend::start("lapsed").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    for backend in [&kept, &lapsed] {
        let body = format!("{{\"address\": \"{}\", \"ttl\": \"600ms\"}}", backend.addr);
        assert_eq!(
            admin(api, "POST", "/pools/web/backends", Some(&body), None)
                .await
                .status,
            201
        );
    }
    let heartbeat = format!("/pools/web/backends/{}/heartbeat", kept.addr);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(admin(api, "PUT", &heartbeat, None, None).await.status, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let listed = admin(api, "GET", "/pools/web/backends", None, None)
        .await
        .json;
    assert!(
        member(&listed, &kept.addr.to_string()).is_some(),
        "heartbeats keep the lease"
    );
    assert!(
        member(&listed, &lapsed.addr.to_string()).is_none(),
        "no heartbeat: expired"
    );
}

#[tokio::test]
async fn registrations_survive_a_reload_and_a_restart() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let state_dir = support::TempDir::new();
    let state_file = state_dir.path().join("registrations.json");
    let config = pool("web", "round_robin", &[&a])
        + ADMIN
        + &format!("state_file = \"{}\"\n", state_file.display());
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    let body = format!("{{\"address\": \"{}\", \"backup\": true}}", b.addr);
    assert_eq!(
        admin(api, "POST", "/pools/web/backends", Some(&body), None)
            .await
            .status,
        201
    );

    proxy.rewrite(&config.replace("round_robin", "random"));
    assert_eq!(admin(api, "POST", "/reload", None, None).await.status, 200);
    let listed = admin(api, "GET", "/pools/web/backends", None, None)
        .await
        .json;
    let registered = member(&listed, &b.addr.to_string()).expect("kept across the reload");
    assert_eq!(registered["role"], "backup");
    proxy.stop().await;

    let restarted = TestProxy::start_with(&config, Options::default()).await;
    let listed = admin(
        restarted.admin.unwrap(),
        "GET",
        "/pools/web/backends",
        None,
        None,
    )
    .await
    .json;
    let registered = member(&listed, &b.addr.to_string()).expect("kept across a restart");
    assert_eq!(registered["source"], "api");
    assert_eq!(registered["role"], "backup");
}

#[tokio::test]
async fn available_lists_only_what_would_be_picked_now() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let config = pool_with_backups("web", "round_robin", &[&a], &[&spare]) + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    assert_eq!(
        available(api).await,
        [a.addr.to_string()],
        "a backup is not picked while a primary is up"
    );

    let drain = format!("/pools/web/backends/{}/drain", a.addr);
    assert_eq!(admin(api, "POST", &drain, None, None).await.status, 200);
    assert_eq!(
        available(api).await,
        [spare.addr.to_string()],
        "with the primary out, the backup is what serves"
    );
}

#[tokio::test]
async fn a_registration_whose_pool_a_reload_removed_can_still_be_deregistered() {
    let a = Backend::start("a").await;
    let c = Backend::start("c").await;
    let with_extra = pool("web", "round_robin", &[&a])
        + "[pool.extra]\nbackends = []\n"
        + ADMIN
        + "[[route]]\npool = \"web\"\n";
    let proxy = TestProxy::start(&with_extra).await;
    let api = proxy.admin.unwrap();
    let body = format!("{{\"address\": \"{}\", \"ttl\": \"1m\"}}", c.addr);
    assert_eq!(
        admin(api, "POST", "/pools/extra/backends", Some(&body), None)
            .await
            .status,
        201
    );
    proxy.rewrite(&(pool("web", "round_robin", &[&a]) + ADMIN));
    assert_eq!(admin(api, "POST", "/reload", None, None).await.status, 200);
    let heartbeat = format!("/pools/extra/backends/{}/heartbeat", c.addr);
    assert_eq!(
        admin(api, "PUT", &heartbeat, None, None).await.status,
        200,
        "a dormant lease renews"
    );
    let path = format!("/pools/extra/backends/{}", c.addr);
    assert_eq!(admin(api, "DELETE", &path, None, None).await.status, 204);
    assert_eq!(admin(api, "DELETE", &path, None, None).await.status, 404);
}

/// A 405 says which methods the endpoint takes (`Allow`, RFC 9110 section 15.5.6), and `HEAD`
/// is served wherever `GET` is, without a body.
#[tokio::test]
async fn a_wrong_method_gets_allow_and_head_is_served_like_get() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let api = proxy.admin.unwrap();
    let backend = format!("/pools/web/backends/{}", a.addr);
    let cases = [
        ("PUT", "/status".to_owned(), "GET, HEAD"),
        ("GET", "/reload".to_owned(), "POST"),
        ("PUT", "/pools/web/backends".to_owned(), "GET, HEAD, POST"),
        ("POST", backend.clone(), "GET, HEAD, DELETE"),
        ("GET", format!("{backend}/drain"), "POST"),
        ("POST", format!("{backend}/heartbeat"), "PUT"),
    ];
    for (method, path, allow) in cases {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let reply = support::client::raw(api, request.as_bytes()).await;
        assert!(
            reply.starts_with("HTTP/1.1 405"),
            "{method} {path}: {reply}"
        );
        assert!(
            reply
                .to_ascii_lowercase()
                .contains(&format!("\r\nallow: {}\r\n", allow.to_ascii_lowercase())),
            "{method} {path}: Allow: {allow} in {reply}"
        );
    }
    let reply = support::client::raw(
        api,
        b"HEAD /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "no body: {reply}");
}
