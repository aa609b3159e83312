//! Client-side framing: requests whose end two parties could disagree about are refused with 400
//! and a closed connection, before anything reaches the backend.

mod support;

use std::time::Duration;

use support::{Backend, TestProxy, pool, raw_exchange};

const WAIT: Duration = Duration::from_secs(3);

/// Sends `request` raw and asserts: status `status`, connection closed, backend saw nothing.
async fn refused(request: &str, status: u16) {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
    assert_eq!(
        reply.status(),
        Some(status),
        "{request:?} got {:?}",
        reply.text
    );
    assert!(reply.closed, "{request:?}: the connection must be closed");
    assert_eq!(
        backend.served(),
        0,
        "{request:?} must not reach the backend"
    );
}

/// Writes `parts` on one connection, the later ones after a pause so they arrive in reads of
/// their own; returns what came back once the proxy closed or `WAIT` passed.
async fn exchange_in_parts(proxy: &TestProxy, parts: &[&[u8]]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The proxy may close before reading everything; a failed write is part of the answer.
        stream.write_all(part).await.ok();
    }
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400).await;
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400).await;
}

#[tokio::test]
async fn bad_content_lengths_are_refused() {
    for value in ["5, 6", "+5", "-1", "0x10", "", "5 5", "1e3"] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\nhello");
        refused(&request, 400).await;
    }
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    )
    .await;
}

#[tokio::test]
async fn transfer_encodings_other_than_chunked_are_refused() {
    // A coding before a final chunked: the framing is clear, the coding not implemented (RFC
    // 9112 section 6.1), as nginx and Envoy answer.
    refused(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        501,
    )
    .await;
    for value in [
        "chunked, gzip",
        "chunked, chunked",
        "xchunked",
        "chunked ,",
        "\u{b}chunked",
        "identity",
        "gzip",
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {value}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        refused(&request, 400).await;
    }
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400).await;
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", 400).await;
    refused(
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    for request in [
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX\0A: 1\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    ] {
        refused(request, 400).await;
    }
}

#[tokio::test]
async fn bad_chunks_never_reach_the_backend_whole() {
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "3\r\nhello\r\n0\r\n\r\n",
        "5;a=b\rc\r\nhello\r\n0\r\n\r\n",
    ] {
        let backend = Backend::start("a").await;
        let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
        let request =
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
        assert!(reply.closed, "{body:?}: connection closed");
        assert!(
            reply.status().is_none_or(|s| s == 400),
            "{body:?}: 400 or nothing, got {:?}",
            reply.text
        );
        assert!(
            !reply.text.contains("ok=true"),
            "{body:?}: the backend must not receive a complete body: {:?}",
            reply.text
        );
        if reply.status() == Some(400) {
            assert!(
                reply.text.to_ascii_lowercase().contains("chunk"),
                "{body:?}: the answer names what was wrong: {:?}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn runaway_chunk_extensions_are_cut() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
    request.extend(std::iter::repeat_n(b'x', 1 << 20));
    let reply = raw_exchange(proxy.addr, &request, WAIT).await;
    assert!(
        reply.closed,
        "a megabyte of chunk extension closes the connection"
    );
    assert!(!reply.text.contains("ok=true"));
}

#[tokio::test]
async fn garbage_after_a_valid_request_gets_400_and_close() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nthis is not http\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{:?}", reply.text);
    assert_eq!(reply.responses(), 2, "{:?}", reply.text);
    assert!(reply.text.contains("HTTP/1.1 400"), "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(backend.served(), 1, "exactly the one legitimate request");
}

#[tokio::test]
async fn a_smuggling_request_pipelined_behind_a_valid_one_never_reaches_the_backend() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{:?}", reply.text);
    assert!(reply.text.contains("HTTP/1.1 400"), "{:?}", reply.text);
    assert!(reply.closed);
    assert_eq!(backend.served(), 1, "only the GET");

    // The same, the second head arriving while the first request is still being answered.
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let text = exchange_in_parts(
        &proxy,
        &[
            b"GET /sleep/300 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n",
        ],
    )
    .await;
    assert!(text.contains("HTTP/1.1 400"), "{text:?}");
    assert_eq!(backend.served(), 1, "only the GET: {text:?}");
}

/// `len` pattern bytes as one chunk, for `/upload`.
fn chunked_upload(len: u8, last: &str) -> String {
    let body: String = (0..len).map(char::from).collect();
    format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n{last}\r\n{len:x}\r\n{body}\r\n0\r\n\r\n"
    )
}

/// Pipelined chunked requests are served, in one write and behind a request still being
/// answered, as nginx and HAProxy serve them: heads are followed through every body's framing.
#[tokio::test]
async fn pipelined_chunked_requests_are_served_in_order() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let stream = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n{}POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n\x00\x01\x02{}{}",
        chunked_upload(5, ""),
        chunked_upload(7, ""),
        chunked_upload(9, "Connection: close\r\n"),
    );
    let reply = raw_exchange(proxy.addr, stream.as_bytes(), WAIT).await;
    assert_eq!(reply.responses(), 5, "{:?}", reply.text);
    assert!(!reply.text.contains("HTTP/1.1 400"), "{:?}", reply.text);
    let bodies: Vec<_> = reply.text.matches("len=").collect();
    assert_eq!(bodies.len(), 4, "{:?}", reply.text);
    for expected in [
        "len=5 ok=true",
        "len=3 ok=true",
        "len=7 ok=true",
        "len=9 ok=true",
    ] {
        assert!(
            reply.text.contains(expected),
            "{expected}: {:?}",
            reply.text
        );
    }
    let order: Vec<_> = ["len=5", "len=3", "len=7", "len=9"]
        .iter()
        .map(|body| reply.text.find(body).unwrap())
        .collect();
    assert!(order.is_sorted(), "answered in order: {:?}", reply.text);
    assert_eq!(backend.served(), 5);

    // The chunked request arriving while the one before it is still being answered.
    let upload = chunked_upload(4, "Connection: close\r\n");
    let text = exchange_in_parts(
        &proxy,
        &[
            b"GET /sleep/300 HTTP/1.1\r\nHost: a\r\n\r\n",
            upload.as_bytes(),
        ],
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text:?}");
    assert!(text.contains("len=4 ok=true"), "{text:?}");
}

/// The smuggling request the tests below hide: `Content-Length` beside `Transfer-Encoding`.
const SMUGGLING: &str = "POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

/// Streams where a head follower reading bodies more loosely than hyper (a bare LF ending
/// trailers) or losing its place (after an upgrade request) would check the smuggling request
/// against a head the attacker planted: it must still never reach the backend.
#[tokio::test]
async fn smuggling_requests_hidden_in_trailers_or_behind_an_upgrade_are_refused() {
    let planted = "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let trailers = |after_last_chunk: &str| {
        format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{after_last_chunk}POST /s HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n0\n\n\r\n\r\n{SMUGGLING}"
        )
    };
    let upgrade_split = [
        "GET /u HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Le"
            .to_owned(),
        format!("ngth: {}\r\n\r\n{planted}{SMUGGLING}", planted.len()),
    ];
    let upgrade_body = [
        format!(
            "POST /early HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nContent-Length: {}\r\n\r\nA",
            planted.len() + 1
        ),
        format!("{planted}{SMUGGLING}"),
    ];
    let cases: [Vec<String>; 4] = [
        vec![trailers("X: a\n\n")],
        vec![trailers("\n")],
        upgrade_split.to_vec(),
        upgrade_body.to_vec(),
    ];
    for parts in cases {
        let backend = Backend::start("a").await;
        let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
        let parts: Vec<&[u8]> = parts.iter().map(|part| part.as_bytes()).collect();
        let text = exchange_in_parts(&proxy, &parts).await;
        let smuggled = backend
            .requests()
            .iter()
            .filter(|request| request.target == "/s")
            .count();
        assert_eq!(smuggled, 0, "{parts:?} got through: {text:?}");
    }
}

/// A chunked request whose target the parser changes (an absolute-form target is normalised,
/// `http://a` reads `http://a/`; a fragment is dropped) has its head found all the same.
#[tokio::test]
async fn chunked_requests_with_an_absolute_target_or_a_fragment_are_served() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    for target in ["http://a", "/frag#x"] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        );
        let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
        assert_eq!(reply.status(), Some(200), "{target}: {:?}", reply.text);
    }
}

/// Behind a request with the same request line, the smuggling one must not be checked against
/// the head of the request before it: either way, it never reaches the backend.
#[tokio::test]
async fn a_smuggling_request_behind_one_with_the_same_request_line_is_refused() {
    for first in [
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let backend = Backend::start("a").await;
        let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
        let smuggling = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
        let reply = raw_exchange(proxy.addr, format!("{first}{smuggling}").as_bytes(), WAIT).await;
        assert!(reply.text.starts_with("HTTP/1.1 200"), "{:?}", reply.text);
        assert!(
            reply.text.contains("HTTP/1.1 400"),
            "{first:?}: {:?}",
            reply.text
        );
        assert!(reply.closed);
        assert_eq!(backend.served(), 1, "{first:?}: only the first");
    }
}

#[tokio::test]
async fn bad_authorities_are_refused() {
    for request in [
        "GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
        "GET http://user:pass@a:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        refused(request, 400).await;
    }
}

/// A legitimate chunked POST whose head ends exactly at the proxy's first read (8 KiB): hyper
/// reads the body before the request starts, and those bytes must not be taken for a new head
/// (the request would be refused as pipelined, its framing unchecked).
#[tokio::test]
async fn a_chunked_post_with_a_head_of_the_first_read_size_is_served() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    for size in [8190usize, 8191, 8192, 8193, 8194] {
        let start = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-Pad: ";
        let head = format!("{start}{}\r\n\r\n", "p".repeat(size - start.len() - 4));
        assert_eq!(head.len(), size);
        let bytes = format!("{head}5\r\nhello\r\n0\r\n\r\n");
        let reply = raw_exchange(proxy.addr, bytes.as_bytes(), WAIT).await;
        assert_eq!(
            reply.status(),
            Some(200),
            "head of {size} bytes: {:?}",
            reply.text
        );
    }
}

#[tokio::test]
async fn a_refused_head_is_told_why() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    for (request, why) in [
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length and Transfer-Encoding together",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "transfer coding not implemented",
        ),
        (
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            "invalid request line",
        ),
    ] {
        let reply = raw_exchange(proxy.addr, request.as_bytes(), WAIT).await;
        assert!(
            reply.text.ends_with(why),
            "{request:?} got {:?}",
            reply.text
        );
    }
}

/// A later HTTP/1 minor version is read as HTTP/1.1 (RFC 9110 section 2.5), as nginx and
/// HAProxy read it; another major version is not one Fulcrum speaks on this connection: 505.
#[tokio::test]
async fn a_later_http1_minor_version_is_served_as_http11() {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET /v HTTP/1.2\r\nHost: a\r\n\r\nGET /w HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{}", reply.text);
    assert_eq!(
        reply.text.matches("HTTP/1.1 200").count(),
        2,
        "{}",
        reply.text
    );
    let seen = backend.requests();
    assert_eq!(seen[0].target, "/v");
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].headers["via"], "1.1 fulcrum");
    refused("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505).await;
}
