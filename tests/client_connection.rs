//! The client connection on a plain listener, as a client sees it: pipelined requests answered
//! in order, `Connection: close` honoured, requests of every shape served on one connection
//! (Fulcrum's own connection serves the common ones and hands the rest to hyper mid-connection),
//! response framing relayed faithfully (chunked, trailers, no-body statuses, HTTP/1.0 bodies
//! that end at close), and a drain that closes idle connections and lets busy ones finish.

mod support;

use std::time::Duration;

use support::{Backend, TestProxy, pattern_byte, pool, raw_exchange, scripted_backend, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

async fn one_backend() -> (Backend, TestProxy) {
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    (backend, proxy)
}

/// The proxy in front of a backend that answers every request with `reply` and closes.
async fn scripted(reply: &'static [u8]) -> TestProxy {
    let backend = scripted_backend(reply).await;
    let config = format!(
        "[pool.web]\nretries = 0\nbackends = [{{ address = \"{backend}\" }}]\n\
         [pool.web.outlier]\nconsecutive_failures = 0\n"
    );
    TestProxy::start(&config).await
}

/// The status lines and `content-length` values of the responses in `text`, in order.
fn statuses_and_lengths(text: &str) -> (Vec<&str>, Vec<&str>) {
    let statuses = text
        .match_indices("HTTP/1.")
        .map(|(at, _)| first_line(&text[at..]))
        .collect();
    let lengths = text
        .split("\r\ncontent-length: ")
        .skip(1)
        .map(first_line)
        .collect();
    (statuses, lengths)
}

fn first_line(text: &str) -> &str {
    text.split("\r\n").next().unwrap_or("")
}

fn pattern(len: u64) -> String {
    (0..len).map(|i| pattern_byte(i) as char).collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_close_ends_the_connection() {
    let (backend, proxy) = one_backend().await;
    let requests = "GET /bytes/1 HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /bytes/22 HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /bytes/100 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(proxy.addr, requests.as_bytes(), WAIT).await;
    assert!(reply.closed, "Connection: close closes: {:?}", reply.text);
    let (statuses, lengths) = statuses_and_lengths(&reply.text);
    assert_eq!(statuses, ["HTTP/1.1 200 OK"; 3], "{:?}", reply.text);
    assert_eq!(lengths, ["1", "22", "100"], "in the order asked");
    assert!(reply.text.ends_with(&pattern(100)), "{:?}", reply.text);
    let last = reply.text.rsplit("HTTP/1.1 200 OK").next().unwrap();
    assert!(last.contains("\r\nconnection: close\r\n"), "{last:?}");
    assert_eq!(reply.text.matches("\r\ndate: ").count(), 3);
    assert_eq!(backend.served(), 3);
}

#[tokio::test]
async fn requests_of_every_shape_are_served_in_order_on_one_connection() {
    let (backend, proxy) = one_backend().await;
    let mut requests = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
                         POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
        .to_vec();
    requests.extend(pattern(5).bytes());
    requests.extend_from_slice(
        b"HEAD /bytes/7 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /bytes/4 HTTP/1.1\r\nHost: a\r\n\r\n\
          DELETE /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let reply = raw_exchange(proxy.addr, &requests, WAIT).await;
    assert!(reply.closed, "{:?}", reply.text);
    let (statuses, lengths) = statuses_and_lengths(&reply.text);
    assert_eq!(statuses.len(), 5, "{:?}", reply.text);
    assert!(statuses.iter().all(|s| s.starts_with("HTTP/1.1 200")));
    // The HEAD response declares the length of the GET it stands for, with no body after it.
    assert_eq!(lengths, ["1", "13", "7", "4", "1"], "{:?}", reply.text);
    assert!(
        reply.text.contains("\r\n\r\nlen=5 ok=true"),
        "{:?}",
        reply.text
    );
    let methods: Vec<String> = backend.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "POST", "HEAD", "GET", "DELETE"]);
}

#[tokio::test]
async fn a_head_arriving_in_pieces_or_larger_than_one_read_is_served() {
    let (backend, proxy) = one_backend().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(b"GET /pieces HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // A pause so the pieces are likely read apart; the answer must be the same either way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"st: a\r\n\r\n").await.unwrap();
    let big = "b".repeat(20_000);
    let second =
        format!("GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text))
        .await
        .expect("closed after the second response")
        .unwrap();
    let (statuses, _) = statuses_and_lengths(&text);
    assert_eq!(statuses, ["HTTP/1.1 200 OK"; 2], "{text:?}");
    let requests = backend.requests();
    assert_eq!(requests[0].target, "/pieces");
    assert_eq!(requests[1].headers["x-big"], big.as_str());
}

#[tokio::test]
async fn a_chunked_response_keeps_its_trailers_for_a_client_that_accepts_them() {
    let proxy = scripted(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await;
    let accepting = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let text = &accepting.text;
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text:?}"
    );
    assert!(text.contains("\r\ntrailer: x-sum\r\n"), "{text:?}");
    let body = text
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    let chunks: String = body.split("\r\n").collect();
    assert!(
        chunks.contains("hello") && chunks.contains(" world"),
        "{text:?}"
    );
    assert!(text.ends_with("0\r\nx-sum: 42\r\n\r\n"), "{text:?}");

    let refusing = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        refusing.text.ends_with("\r\n0\r\n\r\n"),
        "{:?}",
        refusing.text
    );
    assert!(!refusing.text.contains("x-sum: 42"), "{:?}", refusing.text);
}

#[tokio::test]
async fn bodiless_answers_keep_the_connection_framed() {
    for reply in [
        &b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"[..],
        &b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let proxy = scripted(reply).await;
        let reply = raw_exchange(
            proxy.addr,
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        let (statuses, lengths) = statuses_and_lengths(&reply.text);
        assert_eq!(statuses.len(), 2, "both answered: {:?}", reply.text);
        assert!(lengths.iter().all(|l| *l == "0"), "{:?}", reply.text);
        assert!(
            !reply.text.contains("transfer-encoding"),
            "{:?}",
            reply.text
        );
        assert!(
            reply.text.ends_with("\r\n\r\n"),
            "no body bytes: {:?}",
            reply.text
        );
    }
}

/// An HTTP/1.0 backend's body that ends at close reaches an HTTP/1.1 client whole, in Fulcrum's
/// own version (RFC 9110 section 2.5: an intermediary sends its own), framed in chunks, so the
/// client connection can stay open.
#[tokio::test]
async fn an_http10_backend_body_without_length_is_relayed_whole_as_http11() {
    let proxy = scripted(b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nall of this until close").await;
    // The connection stays open: read for a second, not until the usual wait.
    let open = Duration::from_secs(1);
    let reply = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", open).await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{:?}", reply.text);
    assert!(
        reply.text.contains("\r\nx-old: yes\r\n"),
        "{:?}",
        reply.text
    );
    assert!(
        reply.text.contains("\r\nvia: 1.0 fulcrum\r\n"),
        "Via names the backend's version: {:?}",
        reply.text
    );
    assert!(
        reply.text.contains("all of this until close\r\n0\r\n\r\n"),
        "{:?}",
        reply.text
    );
    let reply = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", WAIT).await;
    assert!(reply.closed, "to an HTTP/1.0 client it ends at close");
    assert!(
        reply.text.ends_with("\r\n\r\nall of this until close"),
        "{:?}",
        reply.text
    );
    // A 1.0 client asking for keep-alive is not promised it: the body ends at close, so the
    // answer says close (as nginx's does), and a request sent behind it is not silently lost.
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(reply.closed);
    let head = reply.text.to_ascii_lowercase();
    assert!(!head.contains("connection: keep-alive"), "{:?}", reply.text);
    assert!(head.contains("connection: close"), "{:?}", reply.text);
}

#[tokio::test]
async fn a_drain_closes_idle_connections_and_busy_ones_after_their_answer() {
    let (backend, proxy) = one_backend().await;
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut busy = TcpStream::connect(proxy.addr).await.unwrap();
    busy.write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    wait_until("the held request reached the backend", WAIT, || {
        backend.requests().iter().any(|r| r.target == "/hold")
    })
    .await;

    let stopping = tokio::spawn(proxy.stop());
    let mut rest = Vec::new();
    let idle_closed = tokio::time::timeout(WAIT, idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(idle_closed, Ok(Ok(0))),
        "the idle connection is closed at once"
    );
    assert!(
        !stopping.is_finished(),
        "the drain waits for the busy connection"
    );

    backend.release(1);
    let mut text = String::new();
    tokio::time::timeout(WAIT, busy.read_to_string(&mut text))
        .await
        .expect("the busy connection closes after its answer")
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text:?}");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the drain ends")
        .unwrap();
}

#[tokio::test]
async fn a_connection_idle_long_enough_to_leave_the_runtime_is_still_served_and_timed() {
    // Sweeps every 50 ms (an eighth of request_header): idle past two of them, a parked
    // connection's socket moves out of tokio's registry into the server's own epoll set.
    let backend = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&backend])
        + "[timeouts]\nrequest_header = \"400ms\"\nclient_idle = \"1500ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream
            .write_all(format!("GET /round/{round} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a request after an idle spell is answered")
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"), "round {round}");
    }
    // And its idle deadline still holds: closed without a response after client_idle.
    let started = tokio::time::Instant::now();
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an idle connection is closed at client_idle")
        .unwrap();
    assert_eq!(n, 0, "closed without a response");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "not before client_idle"
    );
    assert_eq!(backend.served(), 3);
}

/// On both of the proxy's client paths: its own (a GET), and hyper's (a POST, an HTTP/1.0 GET).
#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_cut_off_after_client_idle() {
    let backend = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&backend]) + "[timeouts]\nclient_idle = \"500ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let size: u64 = 64 << 20; // far more than the sockets between can buffer
    for head in [
        format!("GET /bytes/{size} HTTP/1.1\r\nHost: a\r\n\r\n"),
        format!("POST /bytes/{size} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"),
        format!("GET /bytes/{size} HTTP/1.0\r\nHost: a\r\n\r\n"),
    ] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        // Reads nothing for longer than client_idle: the proxy's writes wait, then give up.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let mut received = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received += n as u64,
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "{head:?}: the connection is closed, not left hanging"
        );
        assert!(
            received < size,
            "{head:?}: the response was cut off: {received} of {size} bytes"
        );
    }
}
