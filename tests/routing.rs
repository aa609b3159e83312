//! Routing by host (exact and wildcard) and path prefix, first match wins; 404 when nothing matches.

mod support;

use support::{Backend, Http, TestProxy, pool};

struct Setup {
    _backends: [Backend; 4],
    proxy: TestProxy,
}

/// Four pools, one backend each, named after the pool, behind these routes in this order.
async fn setup() -> Setup {
    let api = Backend::start("api").await;
    let wild = Backend::start("wild").await;
    let static_ = Backend::start("static").await;
    let web = Backend::start("web").await;
    let config = format!(
        "{}{}{}{}
[[route]]
host = \"api.example.com\"
path_prefix = \"/v1/\"
pool = \"api\"

[[route]]
host = \"*.example.com\"
pool = \"wild\"

[[route]]
path_prefix = \"/static/\"
pool = \"static\"

[[route]]
host = \"www.example.org\"
pool = \"web\"
",
        pool("api", "round_robin", &[&api]),
        pool("wild", "round_robin", &[&wild]),
        pool("static", "round_robin", &[&static_]),
        pool("web", "round_robin", &[&web]),
    );
    let proxy = TestProxy::start(&config).await;
    Setup {
        _backends: [api, wild, static_, web],
        proxy,
    }
}

#[tokio::test]
async fn exact_host_with_prefix_wins_first() {
    let setup = setup().await;
    let http = Http::to(setup.proxy.addr);
    assert_eq!(
        http.get_host("api.example.com", "/v1/users")
            .await
            .backend(),
        "api"
    );
    assert_eq!(
        http.get_host("API.Example.COM:8080", "/v1/x")
            .await
            .backend(),
        "api",
        "host match ignores case and port"
    );
    assert_eq!(
        http.get_host("api.example.com", "/v2/users")
            .await
            .backend(),
        "wild",
        "a prefix miss falls through to the next route"
    );
}

#[tokio::test]
async fn wildcard_host_matches_subdomains_only() {
    let setup = setup().await;
    let http = Http::to(setup.proxy.addr);
    assert_eq!(
        http.get_host("shop.example.com", "/").await.backend(),
        "wild"
    );
    assert_eq!(
        http.get_host("a.b.example.com", "/").await.backend(),
        "wild"
    );
    assert_eq!(http.get_host("example.com", "/").await.status, 404);
}

#[tokio::test]
async fn prefix_route_matches_any_host() {
    let setup = setup().await;
    let http = Http::to(setup.proxy.addr);
    assert_eq!(
        http.get_host("anything.test", "/static/app.js")
            .await
            .backend(),
        "static"
    );
    assert_eq!(
        http.get_host("www.example.org", "/static/x")
            .await
            .backend(),
        "static"
    );
    assert_eq!(http.get_host("www.example.org", "/").await.backend(), "web");
}

#[tokio::test]
async fn no_matching_route_is_404_with_a_reason() {
    let setup = setup().await;
    let http = Http::to(setup.proxy.addr);
    let reply = http.get_host("unknown.test", "/").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "no route for this host and path");
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn http2_authority_is_routed_like_host() {
    let setup = setup().await;
    let request = http::Request::get("http://api.example.com/v1/users")
        .body(support::empty())
        .unwrap();
    let reply = support::h2c(setup.proxy.addr, request).await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.backend(), "api");
}

#[tokio::test]
async fn lone_pool_without_routes_takes_everything() {
    let backend = Backend::start("only").await;
    let proxy = TestProxy::start(&pool("only", "round_robin", &[&backend])).await;
    let reply = Http::to(proxy.addr).get_host("whatever.test", "/x").await;
    assert_eq!(reply.backend(), "only");
}

/// Prefixes match the path as nginx matches locations: escapes decoded, dot segments resolved,
/// slashes merged. Raw, `/static/../private` took the `/static/` route and a backend that
/// normalizes served `/private` from the wrong pool. The path is forwarded as received.
#[tokio::test]
async fn prefixes_match_the_normalized_path_and_the_raw_one_is_forwarded() {
    let public = Backend::start("public").await;
    let private = Backend::start("private").await;
    let config = format!(
        "{}{}[[route]]\npath_prefix = \"/static/\"\npool = \"public\"\n\n[[route]]\npool = \"private\"\n",
        pool("public", "round_robin", &[&public]),
        pool("private", "round_robin", &[&private]),
    );
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for path in [
        "/static/../private",
        "/static/%2e%2e/private",
        "/static/./../private",
    ] {
        assert_eq!(http.get(path).await.backend(), "private", "{path}");
    }
    // Paths backends read in different ways (slashes merged before dot segments or after; an
    // escaped slash decoded before them, as nginx does; `;parameters` stripped, as Tomcat does)
    // are refused rather than routed one way.
    for path in [
        "/static//../private",
        "/static/..%2Fprivate",
        "/static/..;/private",
    ] {
        let reply = http.get(path).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert!(reply.body.contains("ambiguous path"), "{}", reply.body);
    }
    for path in ["/x/../static/app.js", "//static/app.js", "/static/./app.js"] {
        assert_eq!(http.get(path).await.backend(), "public", "{path}");
    }
    let forwarded: Vec<String> = public.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        forwarded,
        ["/x/../static/app.js", "//static/app.js", "/static/./app.js"],
        "forwarded as received"
    );
}
