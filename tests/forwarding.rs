//! What the backend receives (RFC 9110 section 7.6): method, target and Host as sent, hop-by-hop
//! headers gone, forwarding headers added; and upstream connections kept alive and reused.

mod support;

use support::{Backend, Http, TestProxy, empty, h2c, pool, raw, scripted_backend};

async fn one_backend() -> (Backend, TestProxy) {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    (backend, proxy)
}

#[tokio::test]
async fn method_target_and_host_are_forwarded_byte_for_byte() {
    let (backend, proxy) = one_backend().await;
    let request = b"DELETE /a%2Fb/./c/../d;p?x=1&y=%20&x=2#frag HTTP/1.1\r\nHost: Shop.Example.com:8080\r\nConnection: close\r\n\r\n";
    let response = raw(proxy.addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = &backend.requests()[0];
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.target, "/a%2Fb/./c/../d;p?x=1&y=%20&x=2");
    assert_eq!(
        seen.headers["host"], "Shop.Example.com:8080",
        "Host is the client's, not the backend's"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_from_the_request() {
    let (backend, proxy) = one_backend().await;
    let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nUpgrade: h2c\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Keep-Me: 2\r\n\r\n";
    let response = raw(proxy.addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let headers = &backend.requests()[0].headers;
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the backend: {headers:?}"
        );
    }
    assert_eq!(headers["te"], "trailers", "TE keeps only trailers");
    assert_eq!(headers["x-keep-me"], "2");
    assert_ne!(
        headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("close, X-Drop-Me")
    );
}

/// As nginx by default: a header named with an underscore is dropped, or a CGI-style backend
/// would read `X_Forwarded_Proto` as the `X-Forwarded-Proto` the proxy sets.
/// `underscores_in_headers = true` forwards them.
#[tokio::test]
async fn header_names_with_underscores_are_dropped_unless_allowed() {
    let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_Proto: https\r\nX_Forwarded_For: 6.6.6.6\r\nX-Keep-Me: 1\r\nConnection: close\r\n\r\n";
    let (backend, proxy) = one_backend().await;
    let response = raw(proxy.addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let headers = &backend.requests()[0].headers;
    assert!(
        !headers.keys().any(|name| name.as_str().contains('_')),
        "{headers:?}"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-keep-me"], "1");

    let backend = Backend::start("b").await;
    let config = "[server]\nunderscores_in_headers = true\n".to_owned()
        + &pool("web", "round_robin", &[&backend]);
    let proxy = TestProxy::start(&config).await;
    let response = raw(proxy.addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let headers = &backend.requests()[0].headers;
    assert_eq!(headers["x_forwarded_proto"], "https");
}

#[tokio::test]
async fn forwarding_headers_extend_the_chain() {
    let (backend, proxy) = one_backend().await;
    let request = http::Request::get("/")
        .header("host", "www.example.com")
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .header("x-forwarded-proto", "https")
        .header("via", "1.1 edge")
        .body(empty())
        .unwrap();
    Http::to(proxy.addr).send(request).await;
    let headers = &backend.requests()[0].headers;
    assert_eq!(
        headers["x-forwarded-for"],
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "www.example.com");
    let via: Vec<_> = headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(via, ["1.1 edge", "1.1 fulcrum"]);
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed_and_via_added() {
    let backend = scripted_backend(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = TestProxy::start(&format!(
        "[pool.web]\nbackends = [{{ address = \"{backend}\" }}]\n"
    ))
    .await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok");
    assert_eq!(reply.headers["via"], "1.1 fulcrum");
    assert_eq!(reply.headers["x-kept"], "yes");
    for gone in ["x-secret", "keep-alive", "proxy-authenticate"] {
        assert!(
            !reply.headers.contains_key(gone),
            "{gone} reached the client"
        );
    }
}

#[tokio::test]
async fn http2_client_reaches_http1_backend_with_host_set() {
    let (backend, proxy) = one_backend().await;
    let request = http::Request::post("http://app.example.com/form?q=1")
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::from_static(b"hello"),
        )))
        .unwrap();
    let reply = h2c(proxy.addr, request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, http::Version::HTTP_2);
    let seen = &backend.requests()[0];
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "backends are spoken to in HTTP/1.1"
    );
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/form?q=1");
    assert_eq!(seen.headers["host"], "app.example.com");
    assert_eq!(seen.headers["via"], "2 fulcrum");
}

/// An HTTP/1.0 request may come without `Host`; the backend gets HTTP/1.1, which needs one:
/// the pool's name, as nginx sends its upstream's.
#[tokio::test]
async fn http10_client_is_answered() {
    let (backend, proxy) = one_backend().await;
    let response = raw(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.contains(" 200 "), "{response}");
    assert!(response.ends_with("\r\n\r\nb"), "{response}");
    let seen = &backend.requests()[0];
    assert_eq!(seen.headers["via"], "1.0 fulcrum");
    assert_eq!(seen.headers["host"], "web");
    assert!(!seen.headers.contains_key("x-forwarded-host"));
}

/// `Connection` may name any field, but not the request id the proxy keeps for both sides.
#[tokio::test]
async fn connection_cannot_take_away_the_request_id() {
    let (backend, proxy) = one_backend().await;
    let response = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Request-Id\r\nX-Request-Id: abc123\r\n\r\n",
    )
    .await;
    assert!(response.contains("x-request-id: abc123\r\n"), "{response}");
    assert_eq!(backend.requests()[0].headers["x-request-id"], "abc123");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let (backend, proxy) = one_backend().await;
    let http = Http::to(proxy.addr);
    for _ in 0..50 {
        assert_eq!(http.get("/").await.status, 200);
    }
    assert_eq!(backend.requests().len(), 50);
    assert!(
        backend.connections() <= 2,
        "50 sequential requests opened {} upstream connections",
        backend.connections()
    );
}

#[tokio::test]
async fn separate_clients_share_pooled_upstream_connections() {
    let (backend, proxy) = one_backend().await;
    for _ in 0..20 {
        // A new client connection each time: upstream connections still come from the pool.
        let response = raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"));
    }
    assert!(
        backend.connections() <= 2,
        "opened {} upstream connections",
        backend.connections()
    );
}

#[tokio::test]
async fn request_id_is_made_forwarded_and_returned() {
    let (backend, proxy) = one_backend().await;
    let http = Http::to(proxy.addr);
    let first = http.get("/").await;
    let id = first.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "a generated id: {id}");
    assert_eq!(
        backend.requests()[0].headers["x-request-id"],
        id.as_str(),
        "the backend gets the same id"
    );
    let second = http.get("/").await;
    assert_ne!(
        second.headers["x-request-id"],
        id.as_str(),
        "each request gets its own"
    );
}

#[tokio::test]
async fn client_request_id_and_traceparent_are_kept() {
    let (backend, proxy) = one_backend().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = http::Request::get("/")
        .header("x-request-id", "client-chosen-7")
        .header("traceparent", traceparent)
        .body(empty())
        .unwrap();
    let reply = Http::to(proxy.addr).send(request).await;
    assert_eq!(reply.headers["x-request-id"], "client-chosen-7");
    let seen = &backend.requests()[0].headers;
    assert_eq!(seen["x-request-id"], "client-chosen-7");
    assert_eq!(
        seen["traceparent"], traceparent,
        "traceparent passes untouched"
    );
}

#[tokio::test]
async fn proxy_answers_carry_the_request_id_too() {
    let proxy = TestProxy::start("[pool.web]\nbackends = []\n").await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["x-request-id"].len(), 32);
}

/// HTTP/2 without `:authority` carries the host in `Host` (RFC 9113 section 8.3.1): none, or
/// two, would reach an HTTP/1.1 backend as a request it must refuse, so the proxy refuses it.
#[tokio::test]
async fn http2_without_authority_needs_exactly_one_host() {
    let (backend, proxy) = one_backend().await;
    let request = |hosts: &[&str]| {
        let mut builder = http::Request::get("/path");
        for host in hosts {
            builder = builder.header("host", *host);
        }
        builder.body(support::empty()).unwrap()
    };
    assert_eq!(h2c(proxy.addr, request(&[])).await.status, 400);
    assert_eq!(
        h2c(proxy.addr, request(&["a.test", "b.test"])).await.status,
        400
    );
    assert!(backend.requests().is_empty(), "refused before any backend");
    let reply = h2c(proxy.addr, request(&["a.test"])).await;
    assert_eq!(reply.status, 200);
    let hosts = &backend.requests()[0].headers;
    assert_eq!(hosts.get_all("host").iter().count(), 1);
    assert_eq!(hosts["host"], "a.test");
}

/// `Expect` is the proxy's to answer (`100 Continue`, or nothing once the body has come), as
/// nginx and Envoy do: the backend gets the body without being asked anything.
#[tokio::test]
async fn expect_is_answered_by_the_proxy_not_forwarded() {
    let (backend, proxy) = one_backend().await;
    for expect in ["100-continue", "something-else"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: a.test\r\nExpect: {expect}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let response = raw(proxy.addr, request.as_bytes()).await;
        assert!(response.contains(" 200 "), "{expect}: {response}");
    }
    let requests = backend.requests();
    assert_eq!(requests.len(), 2);
    for seen in requests {
        assert!(!seen.headers.contains_key("expect"), "{:?}", seen.headers);
    }
}
