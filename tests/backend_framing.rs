//! Backend-side framing: a response that could be read two ways, or that hyper cannot parse,
//! becomes a 502 and its connection is discarded; a body cut short aborts the client connection.

mod support;

use std::time::Duration;

use support::{TestProxy, raw_exchange, scripted_backend};

const WAIT: Duration = Duration::from_secs(5);

/// The proxy in front of a backend that answers every request with `reply`; no retries and no
/// ejection, so each outcome is the reply's.
async fn proxy_before(reply: &'static [u8]) -> TestProxy {
    let backend = scripted_backend(reply).await;
    let config = format!(
        "[pool.web]\nretries = 0\nbackends = [{{ address = \"{backend}\" }}]\n\
         [pool.web.outlier]\nconsecutive_failures = 0\n"
    );
    TestProxy::start(&config).await
}

async fn through(reply: &'static [u8]) -> support::RawReply {
    let proxy = proxy_before(reply).await;
    raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await
}

#[tokio::test]
async fn malformed_responses_become_502() {
    let big: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
            "b".repeat(100_000)
        )
        .into_boxed_str(),
    );
    let cases: [(&str, &'static [u8]); 7] = [
        ("conflicting lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("invalid length", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"),
        ("length and chunked", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("gzip coding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok"),
        ("unsolicited 101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
        ("oversized head", big.as_bytes()),
    ];
    for (name, reply) in cases {
        let answer = through(reply).await;
        assert_eq!(
            answer.status(),
            Some(502),
            "{name}: {:?}",
            &answer.text[..answer.text.len().min(200)]
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_aborts_the_client_connection() {
    let answer = through(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this").await;
    assert_eq!(
        answer.status(),
        Some(200),
        "the head was relayed: {:?}",
        answer.text
    );
    assert!(answer.closed, "the connection is closed");
    let body = answer.text.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        body.len() < 100,
        "the client never gets a complete-looking body: {body:?}"
    );
}

/// An HTTP/1.0 client's body has no length: only the close ends it, so a body cut short (the
/// backend's chunked body ends mid-chunk) reaches it as a reset, never as a clean close it would
/// take for the end of a whole body.
#[tokio::test]
async fn a_body_cut_short_resets_a_client_whose_body_only_the_close_ends() {
    let proxy =
        proxy_before(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nhellowor").await;
    let answer = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", WAIT).await;
    assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
    assert!(answer.reset, "the cut is a reset: {answer:?}");
}

/// A 204 has no body and no `Content-Length` (RFC 9110 section 8.6), whatever a backend sent
/// with it: the field is dropped for HTTP/1.1 and HTTP/2 clients alike, as nginx drops it.
#[tokio::test]
async fn a_no_content_answer_loses_its_length_on_every_protocol() {
    let proxy =
        proxy_before(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: yes\r\n\r\n").await;
    let h1 = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(h1.status(), Some(204), "{:?}", h1.text);
    let head = h1.text.to_ascii_lowercase();
    assert!(head.contains("x-kept: yes"), "{head:?}");
    assert!(!head.contains("content-length"), "{head:?}");
    let request = http::Request::get("http://a/")
        .body(support::empty())
        .unwrap();
    let h2 = support::h2c(proxy.addr, request).await;
    assert_eq!(h2.status, 204);
    assert_eq!(h2.headers["x-kept"], "yes");
    assert!(
        !h2.headers.contains_key("content-length"),
        "{:?}",
        h2.headers
    );
}

/// A response cut short after its head (a body shorter than its Content-Length) reaches the
/// client as a cut connection, and the operator's log says so: its status went out as 200, so
/// the access log alone cannot show it (nginx logs "upstream prematurely closed connection").
/// The line names the request's id and the body bytes the client got, as its access log line
/// does.
#[tokio::test]
async fn a_response_cut_short_is_logged() {
    let backend =
        scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-some").await;
    let proxy = support::BinaryProxy::start(&format!(
        "[pool.web]\nbackends = [{{ address = \"{backend}\" }}]\n[log]\naccess = \"json\"\n"
    ));
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: cut-7f3a\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{}", reply.text);
    assert!(reply.closed, "the client sees the cut: {}", reply.text);
    support::wait_until(
        "the cut is logged with its backend, the request's id and what the client got",
        Duration::from_secs(10),
        || {
            proxy.logged("response body from the backend cut short")
                && proxy.logged(&backend.to_string())
                && proxy.logged("request_id=\"cut-7f3a\"")
                && proxy.logged("sent=9")
        },
    )
    .await;
}

/// A response with many fields (a page setting 150 cookies) is relayed whole, over the plain
/// exchange (GET) and hyper's (a POST with a body), as nginx relays it: hyper's limit of 100
/// fields made it a 502 that counted against the backend. Past 256 fields it is a 502.
#[tokio::test]
async fn a_response_with_many_fields_is_relayed() {
    let head = |fields: usize| -> &'static [u8] {
        let cookies: String = (0..fields)
            .map(|i| format!("Set-Cookie: c{i}=v\r\n"))
            .collect();
        let reply = format!("HTTP/1.1 200 OK\r\n{cookies}Content-Length: 2\r\n\r\nok");
        Box::leak(reply.into_bytes().into_boxed_slice())
    };
    let many = scripted_backend(head(150)).await;
    let proxy = TestProxy::start(&format!(
        "[pool.web]\nbackends = [{{ address = \"{many}\" }}]\n"
    ))
    .await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"[..],
    ] {
        let reply = raw_exchange(proxy.addr, request, Duration::from_secs(3)).await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text);
        assert_eq!(reply.text.matches("set-cookie: c").count(), 150);
    }
    let too_many = scripted_backend(head(300)).await;
    let proxy = TestProxy::start(&format!(
        "[pool.web]\nbackends = [{{ address = \"{too_many}\" }}]\n"
    ))
    .await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text);
}

/// A response without a `Date` gets the proxy's, of when it is sent (RFC 9110 section 6.6.1),
/// not of when its request came: a backend that takes 1.2 s makes the two a second apart at
/// least.
#[tokio::test]
async fn a_date_the_proxy_adds_is_of_when_the_response_is_sent() {
    let backend = support::delayed_scripted_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_millis(1200),
    )
    .await;
    let proxy = TestProxy::start(&format!(
        "[pool.web]\nbackends = [{{ address = \"{backend}\" }}]\n"
    ))
    .await;
    let sent = std::time::SystemTime::now();
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{}", reply.text);
    let date = reply
        .text
        .lines()
        .find_map(|line| line.strip_prefix("date: "))
        .unwrap_or_else(|| panic!("a Date: {}", reply.text));
    let date = httpdate::parse_http_date(date).expect("an HTTP date");
    // The date has whole seconds: the answer's second, at or after the backend's.
    let answered = sent + Duration::from_millis(1200);
    let answered_second = answered
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dated_second = date
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        dated_second >= answered_second,
        "Date {dated_second} is before the backend answered ({answered_second})"
    );
}

/// A body cut in the same read as its head still reaches an HTTP/2 client as its head and the
/// bytes that came, then a reset, as an HTTP/1 client gets them then a cut: never a bare reset
/// (the status the access log records went out). The proxy runs on two worker threads, where
/// the stream's task and the connection's writer race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_the_head_and_bytes_of_a_body_cut_at_once() {
    use http_body_util::BodyExt;
    let proxy = proxy_before(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    for attempt in 0..20 {
        // A new connection each time, as curl makes: its first stream is the one that lost
        // its head.
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get("http://a/")
            .body(support::empty())
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .expect("an answer")
            .unwrap_or_else(|error| panic!("attempt {attempt}: no head, only {error}"));
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut got = Vec::new();
        let ended = loop {
            match tokio::time::timeout(WAIT, body.frame())
                .await
                .expect("a frame")
            {
                Some(Ok(frame)) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                Some(Err(_)) => break "reset",
                None => break "end",
            }
        };
        assert_eq!(
            (got.as_slice(), ended),
            (&b"0123456789"[..], "reset"),
            "attempt {attempt}"
        );
    }
}
