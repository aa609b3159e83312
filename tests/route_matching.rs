//! A route's conditions besides host and prefix: an exact path, a path regex, methods, headers
//! (exact or present) and query parameters, all of which must hold; routes still tried in file
//! order, first match wins.

mod support;

use http::Request;
use support::{Backend, Http, TestProxy, empty, pool};

/// Pools named after what their route matches, one backend each (named the same).
async fn setup() -> (Vec<Backend>, TestProxy) {
    let names = [
        "exact", "regex", "write", "canary", "tenant", "debug", "rest",
    ];
    let mut backends = Vec::new();
    let mut config = String::new();
    for name in names {
        let backend = Backend::start(name).await;
        config += &pool(name, "round_robin", &[&backend]);
        backends.push(backend);
    }
    config += r#"
[[route]]
path = "/health"
pool = "exact"

[[route]]
path_regex = "^/users/[0-9]+$"
methods = ["GET", "HEAD"]
pool = "regex"

[[route]]
path_prefix = "/users/"
methods = ["POST", "PUT"]
pool = "write"

[[route]]
headers = { "x-canary" = "1" }
pool = "canary"

[[route]]
headers = { "x-tenant" = "*", "x-region" = "eu" }
pool = "tenant"

[[route]]
query = { "debug" = "1" }
pool = "debug"

[[route]]
pool = "rest"
"#;
    (backends, TestProxy::start(&config).await)
}

async fn served_by(http: &Http, request: Request<support::TestBody>) -> String {
    http.send(request).await.backend().to_owned()
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path)
}

#[tokio::test]
async fn every_condition_given_must_hold() {
    let (_backends, proxy) = setup().await;
    let http = Http::to(proxy.addr);
    let cases: Vec<(http::request::Builder, &str)> = vec![
        (get("/health"), "exact"),
        (get("/health/"), "rest"),
        (get("/healthz"), "rest"),
        (get("/users/42"), "regex"),
        (get("/users/42?x=1"), "regex"),
        (get("/users/abc"), "rest"),
        (get("/users/42/orders"), "rest"),
        (Request::post("/users/42"), "write"),
        (Request::delete("/users/42"), "rest"),
        (get("/").header("x-canary", "1"), "canary"),
        (get("/").header("x-canary", "2"), "rest"),
        (
            get("/").header("x-tenant", "acme").header("x-region", "eu"),
            "tenant",
        ),
        (
            get("/").header("x-tenant", "").header("x-region", "eu"),
            "tenant",
        ),
        (get("/").header("x-region", "eu"), "rest"),
        (
            get("/").header("x-tenant", "acme").header("x-region", "us"),
            "rest",
        ),
        (get("/search?debug=1"), "debug"),
        (get("/search?a=b&debug=1"), "debug"),
        (get("/search?%64ebug=%31"), "debug"),
        (get("/search?debug=0"), "rest"),
        (get("/search?nodebug=1"), "rest"),
        // First match wins: the exact path before the header route.
        (get("/health").header("x-canary", "1"), "exact"),
    ];
    for (builder, expected) in cases {
        let request = builder.body(empty()).unwrap();
        let described = format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.headers()
        );
        assert_eq!(served_by(&http, request).await, expected, "{described}");
    }
}

#[tokio::test]
async fn a_path_condition_sees_the_normalized_path() {
    let (_backends, proxy) = setup().await;
    let http = Http::to(proxy.addr);
    assert_eq!(
        served_by(&http, get("/users/7/../42").body(empty()).unwrap()).await,
        "regex"
    );
    assert_eq!(
        served_by(&http, get("//health").body(empty()).unwrap()).await,
        "exact"
    );
}

#[tokio::test]
async fn strip_prefix_and_rewrite_change_the_path_the_backend_receives() {
    let stripped = Backend::start("stripped").await;
    let rewritten = Backend::start("rewritten").await;
    let config = pool("stripped", "round_robin", &[&stripped])
        + &pool("rewritten", "round_robin", &[&rewritten])
        + r#"
[[route]]
path_prefix = "/v1/"
strip_prefix = "/v1"
pool = "stripped"

[[route]]
path_regex = "^/old/"
rewrite = { regex = "^/old/(.*)$", to = "/new/$1" }
pool = "rewritten"
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for path in ["/v1/users?page=2", "/v1/", "/old/a/b?x=1", "/old//c/./d"] {
        assert_eq!(http.get(path).await.status, 200, "{path}");
    }
    let targets = |backend: &Backend| -> Vec<String> {
        backend.requests().into_iter().map(|r| r.target).collect()
    };
    assert_eq!(targets(&stripped), ["/users?page=2", "/"]);
    assert_eq!(targets(&rewritten), ["/new/a/b?x=1", "/new/c/d"]);
}

#[tokio::test]
async fn header_rules_change_what_the_backend_and_the_client_see() {
    let backend = Backend::start("b").await;
    let config = pool("api", "round_robin", &[&backend])
        + r#"
[[route]]
pool = "api"
request_headers = { set = { "x-env" = "prod", "x-origin" = "{scheme}://{host}{path} {client_ip}" }, add = { "x-tag" = "a" }, remove = ["x-debug"] }
response_headers = { set = { "strict-transport-security" = "max-age=63072000", "x-id" = "{request_id}" }, remove = ["x-backend"] }
"#;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let request = Request::get("/cart?x=1")
        .header("host", "shop.example:8080")
        .header("x-debug", "1")
        .header("x-env", "forged")
        .header("x-tag", "client")
        .header("x-request-id", "req-7")
        .body(empty())
        .unwrap();
    let reply = http.send(request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["strict-transport-security"],
        "max-age=63072000"
    );
    assert_eq!(reply.headers["x-id"], "req-7");
    assert!(
        !reply.headers.contains_key("x-backend"),
        "removed from the response"
    );
    let received = backend.requests().pop().unwrap().headers;
    assert!(!received.contains_key("x-debug"));
    assert_eq!(received["x-env"], "prod");
    assert_eq!(
        received["x-origin"],
        "http://shop.example:8080/cart 127.0.0.1"
    );
    let tags: Vec<_> = received.get_all("x-tag").iter().collect();
    assert_eq!(tags, ["client", "a"]);
}
