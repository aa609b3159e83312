//! Method and target rules: no tunnels, no TRACE, `Max-Forwards: 0` answered here, absolute-form
//! targets routed by the routes only, and request loops cut with 508.

mod support;

use std::time::Duration;

use support::{Backend, TestProxy, pool, raw_exchange};

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn connect_and_trace_get_405_and_reach_nothing() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    for request in [
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        "TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_millis(300)).await;
        assert_eq!(reply.status(), Some(405), "{request:?}: {:?}", reply.text);
        assert!(
            reply.text.to_ascii_lowercase().contains("\r\nallow: "),
            "{:?}",
            reply.text
        );
    }
    assert_eq!(backend.served(), 0);
}

#[tokio::test]
async fn options_with_max_forwards_zero_is_answered_here() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let reply = raw_exchange(
        proxy.addr,
        b"OPTIONS / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{:?}", reply.text);
    assert!(reply.text.to_ascii_lowercase().contains("allow: get"));
    assert_eq!(backend.served(), 0);
    let reply = raw_exchange(
        proxy.addr,
        b"OPTIONS / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), Some(200));
    assert_eq!(backend.served(), 1, "with hops left, OPTIONS is forwarded");
    assert_eq!(
        backend.requests()[0].headers["max-forwards"],
        "2",
        "one hop fewer (RFC 9110 section 7.6.2)"
    );
}

#[tokio::test]
async fn absolute_form_targets_follow_the_routes_not_the_authority() {
    let inside = Backend::start("inside").await;
    let config = pool("web", "round_robin", &[&inside])
        + "[[route]]\nhost = \"shop.example\"\npool = \"web\"\n";
    let proxy = TestProxy::start(&config).await;
    let unknown = raw_exchange(
        proxy.addr,
        b"GET http://169.254.169.254/latest HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(
        unknown.status(),
        Some(404),
        "no route for that authority: {:?}",
        unknown.text
    );
    let known = raw_exchange(
        proxy.addr,
        b"GET http://shop.example/a?b=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(known.status(), Some(200));
    let seen = inside.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/a?b=1", "the backend gets origin form");
}

#[tokio::test]
async fn a_pool_pointing_at_the_proxy_itself_ends_in_508() {
    // Bind first to know the proxy's own address, then point its pool at it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let own = listener.local_addr().unwrap();
    drop(listener);
    let config = format!(
        "[server]\nlisten = \"{own}\"\n[pool.web]\nretries = 0\nbackends = [{{ address = \"{own}\" }}]\n"
    );
    let dir = support::TempDir::new();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, format!("{config}[log]\naccess = \"off\"\n")).unwrap();
    let proxy = TestProxy::start_file(dir, &path, Default::default()).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.status(), Some(508), "{:?}", reply.text);
}

/// `host:port` is CONNECT's target form and `*` OPTIONS': with another method each is a 400,
/// not a request rewritten to `/` or passed on for a backend to puzzle over.
#[tokio::test]
async fn target_forms_other_methods_cannot_have_get_400() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    for request in [
        "GET a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
        assert_eq!(reply.status(), Some(400), "{request:?}: {:?}", reply.text);
    }
    assert_eq!(backend.served(), 0);
    let reply = raw_exchange(
        proxy.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{:?}", reply.text);
    assert_eq!(backend.requests()[0].target, "*");
}

/// A request answered here without its body (TRACE's 405) leaves the body to be read and
/// dropped: the connection carries the next request whether the body came with the head, a byte
/// at a time after the answer, or chunked, as nginx discards a body it does not need.
#[tokio::test]
async fn a_body_the_answer_did_not_need_is_dropped_and_the_connection_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let cases: [(&[u8], &[u8]); 2] = [
        (
            b"TRACE / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            b"hello",
        ),
        (
            b"TRACE / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (head, body) in cases {
        for bytewise in [false, true] {
            let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            client.set_nodelay(true).unwrap();
            client.write_all(head).await.unwrap();
            if bytewise {
                for byte in body.chunks(1) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    client.write_all(byte).await.unwrap();
                }
            } else {
                client.write_all(body).await.unwrap();
            }
            client
                .write_all(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(WAIT, client.read_to_end(&mut reply))
                .await
                .expect("the connection is closed after the second answer")
                .unwrap();
            let reply = String::from_utf8_lossy(&reply);
            let label = format!("{:?} bytewise {bytewise}", String::from_utf8_lossy(head));
            assert!(reply.starts_with("HTTP/1.1 405"), "{label}: {reply}");
            assert_eq!(
                reply.matches("HTTP/1.1 200").count(),
                1,
                "{label}: the next request is served: {reply}"
            );
        }
    }
}
