//! `[limits]`: heads, targets, bodies and connections, each refused with its status and the
//! connection closed, the backend receiving nothing (or nothing complete).

mod support;

use std::time::Duration;

use support::{Backend, Http, TestProxy, pool, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(3);

async fn proxy_with(limits: &str) -> (Backend, TestProxy) {
    let backend = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&backend]) + "[limits]\n" + limits;
    let proxy = TestProxy::start(&config).await;
    (backend, proxy)
}

#[tokio::test]
async fn a_head_over_max_header_bytes_gets_431() {
    let (backend, proxy) = proxy_with("max_header_bytes = \"16KiB\"\n").await;
    let big = "x".repeat(20 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), Some(431), "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(backend.served(), 0);
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "x".repeat(8 * 1024)
    );
    assert_eq!(
        raw_exchange(proxy.addr, fits.as_bytes(), WAIT)
            .await
            .status(),
        Some(200)
    );
}

#[tokio::test]
async fn more_headers_than_max_headers_gets_431() {
    let (backend, proxy) = proxy_with("max_headers = 20\n").await;
    let headers: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
    let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), Some(431), "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(backend.served(), 0);
}

/// HTTP/2's framing bounds a head's bytes, not its fields: the count is Fulcrum's to check.
#[tokio::test]
async fn more_headers_than_max_headers_over_http2_gets_431() {
    let (backend, proxy) = proxy_with("max_headers = 20\n").await;
    let request = |fields: usize| {
        let mut builder = http::Request::get("http://a.test/");
        for i in 0..fields {
            builder = builder.header(format!("x-h{i}"), "v");
        }
        builder.body(support::empty()).unwrap()
    };
    assert_eq!(support::h2c(proxy.addr, request(30)).await.status, 431);
    assert_eq!(backend.served(), 0);
    assert_eq!(support::h2c(proxy.addr, request(10)).await.status, 200);
    // Browsers send each cookie as a field of its own: together they are one `Cookie`.
    let mut crumbs = http::Request::get("http://a.test/");
    for i in 0..30 {
        crumbs = crumbs.header("cookie", format!("c{i}=v"));
    }
    let crumbs = crumbs.body(support::empty()).unwrap();
    assert_eq!(support::h2c(proxy.addr, crumbs).await.status, 200);
}

#[tokio::test]
async fn a_target_over_max_uri_bytes_gets_414() {
    let (backend, proxy) = proxy_with("max_uri_bytes = \"1KiB\"\n").await;
    let request = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), Some(414), "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(backend.served(), 0);
}

/// A target longer than the whole head may be is still 414, as nginx answers it, not the 431 of
/// a head past `max_header_bytes`: the request line is refused as soon as it is too long.
#[tokio::test]
async fn a_target_longer_than_a_head_may_be_gets_414() {
    let (backend, proxy) = proxy_with("").await;
    for keep_alive in [false, true] {
        let mut request = String::new();
        if keep_alive {
            request.push_str("GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
        }
        request.push_str(&format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(200 * 1024)
        ));
        let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
        let last = reply.text.rfind("HTTP/1.1 ").unwrap_or(0);
        assert!(
            reply.text[last..].starts_with("HTTP/1.1 414"),
            "{:?}",
            &reply.text[last..]
        );
        assert!(reply.closed);
    }
    assert_eq!(backend.served(), 1, "only the first, short request");
}

#[tokio::test]
async fn a_declared_body_over_max_body_gets_413_unread() {
    let (backend, proxy) = proxy_with("max_body = \"1KiB\"\n").await;
    let request = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n";
    let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), Some(413), "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(backend.served(), 0);
}

/// A chunk whose size alone passes `max_body` is refused when its size is read, as nginx does,
/// not after its bytes came (they may never come).
#[tokio::test]
async fn a_chunk_declared_over_max_body_gets_413_at_once() {
    let (_backend, proxy) = proxy_with("max_body = \"1KiB\"\n").await;
    for body in [
        "401\r\nhello",
        "ffffffffffff\r\n",
        "200\r\n",
        "1\r\nz\r\n401\r\n",
    ] {
        let request =
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        // Far within the request body idle timeout (30 s by default).
        let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(1)).await;
        match body {
            // 512 bytes, within the limit: no answer yet, the rest is awaited.
            "200\r\n" => assert_eq!(reply.status(), None, "{body:?}: {:?}", reply.text),
            _ => {
                assert_eq!(reply.status(), Some(413), "{body:?}: {:?}", reply.text);
                assert!(reply.closed);
            }
        }
    }
}

#[tokio::test]
async fn a_streamed_body_over_max_body_is_cut_with_413() {
    let (_backend, proxy) = proxy_with("max_body = \"1KiB\"\n").await;
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend(std::iter::repeat_n(b'z', 512));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(proxy.addr, &request, WAIT).await;
    assert_eq!(reply.status(), Some(413), "{:?}", reply.text);
    assert!(reply.closed);
    assert!(
        !reply.text.contains("len=2048"),
        "the backend never gets the whole body: {:?}",
        reply.text
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let (_backend, proxy) = proxy_with("max_connections = 2\n").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .ok();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, third.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the third connection is closed, not left waiting"
    );
    assert!(
        buf.is_empty(),
        "and answered nothing: {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(held.pop());
    // Its place is free once the proxy has seen the close.
    let start = tokio::time::Instant::now();
    loop {
        let reply = raw_exchange(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        if reply.status() == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the place never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_closed() {
    let (_backend, proxy) = proxy_with("max_connections_per_ip = 1\n").await;
    let http = Http::to(proxy.addr);
    assert_eq!(
        http.get("/").await.status,
        200,
        "the first connection is served"
    );
    let reply = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", WAIT).await;
    assert!(reply.closed && reply.text.is_empty(), "{reply:?}");
}
