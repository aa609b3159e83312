//! Slow and idle clients: a head dribbled byte by byte is cut at `request_header` (408), an idle
//! keep-alive connection at `client_idle`, a stalled body at `request_body_idle` (408), a slow
//! request at `timeouts.request` (504); thousands of idle connections do not slow a new request.

mod support;

use std::time::Duration;

use support::{Backend, Http, TestProxy, pool, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_with(timeouts: &str) -> (Backend, TestProxy) {
    let backend = Backend::start("a").await;
    let config = pool("web", "round_robin", &[&backend]) + "[timeouts]\n" + timeouts;
    let proxy = TestProxy::start(&config).await;
    (backend, proxy)
}

/// Reads until the proxy closes the connection, for at most `wait`; `None` if it stays open.
async fn until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_dribbled_head_is_cut_at_request_header_with_408() {
    let (backend, proxy) = proxy_with("request_header = \"300ms\"\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let dribble = async {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream
                .write_all(format!("X-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    dribble.await;
    let text = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection is closed");
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert_eq!(backend.served(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_client_idle_but_a_slow_answer_is_not() {
    let (_backend, proxy) = proxy_with("client_idle = \"300ms\"\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // A request whose answer takes longer than client_idle: not idle, so not cut.
    stream
        .write_all(b"GET /sleep/700 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Then idle: closed, without a response.
    let text = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle connection is closed");
    assert!(text.is_empty(), "{text:?}");
}

#[tokio::test]
async fn a_stalled_body_is_cut_at_request_body_idle_with_408() {
    let (backend, proxy) = proxy_with("request_body_idle = \"300ms\"\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    let text = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection is closed");
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        !text.contains("len="),
        "the backend never got a complete body: {text:?}"
    );
    assert!(backend.served() <= 1);
}

#[tokio::test]
async fn a_request_over_the_total_deadline_gets_504() {
    let (_backend, proxy) = proxy_with("request = \"300ms\"\n").await;
    let reply = Http::to(proxy.addr).get("/sleep/3000").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(reply.body.contains("request timeout"), "{}", reply.body);
}

#[tokio::test]
async fn five_thousand_idle_connections_do_not_delay_a_new_request() {
    let (_backend, proxy) = proxy_with("client_idle = \"60s\"\n").await;
    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        raw_exchange(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("answered while 5,000 connections sit idle");
    assert_eq!(reply.status(), Some(200), "{:?}", reply.text);
    drop(idle);
}

#[tokio::test]
async fn a_silent_new_connection_gets_request_header_not_client_idle() {
    let (_backend, proxy) = proxy_with("request_header = \"300ms\"\nclient_idle = \"60s\"\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let text = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("a connection that never sends a byte is closed at request_header");
    assert!(text.is_empty(), "{text:?}");
}

#[tokio::test]
async fn an_http2_preface_split_into_pieces_is_still_http2() {
    let (backend, proxy) = proxy_with("request_header = \"300ms\"\n").await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    // A client whose first write is a single byte of the preface.
    stream.writable().await.unwrap();
    stream.try_write(b"P").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    struct Rest(TcpStream, bool);
    impl tokio::io::AsyncRead for Rest {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
        }
    }
    impl tokio::io::AsyncWrite for Rest {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            if !this.1 {
                // The client library writes the preface again; the "P" is already sent.
                assert_eq!(buf[0], b'P');
                this.1 = true;
                return match std::pin::Pin::new(&mut this.0).poll_write(cx, &buf[1..]) {
                    std::task::Poll::Ready(Ok(n)) => std::task::Poll::Ready(Ok(n + 1)),
                    other => other,
                };
            }
            std::pin::Pin::new(&mut this.0).poll_write(cx, buf)
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(Rest(stream, false)),
    )
    .await
    .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request = http::Request::get("http://a/split")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("served over HTTP/2");
    assert_eq!(response.status(), 200);
    assert_eq!(backend.served(), 1);
}

/// An HTTP/2 connection idle for `client_idle` is told so with a GOAWAY before it is closed (RFC
/// 9113 section 9.1: a client can then tell which of its streams were seen), as nginx and Envoy
/// tell it; it is closed whether or not the client answers.
#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_before_the_close() {
    let (_backend, proxy) = proxy_with("client_idle = \"300ms\"\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The preface, empty SETTINGS, and the ACK of the server's SETTINGS (sent at once).
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    hello.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
    stream.write_all(&hello).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("the idle connection is closed")
        .expect("and closed cleanly");
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + length;
    }
    assert!(
        types.contains(&7),
        "a GOAWAY (type 7) among the frames: {types:?}"
    );
}

/// An HTTP/2 client that stops granting flow-control window leaves a response with data to send
/// and a socket that never fills: the connection is closed after `client_idle` without progress,
/// as nginx's `send_timeout` and Envoy's stream idle timeout close it. A response waiting on its
/// backend for longer than `client_idle` is not waiting on the client, and is served.
#[tokio::test]
async fn an_http2_client_granting_no_window_is_cut_but_a_slow_answer_is_not() {
    let (backend, proxy) = proxy_with("client_idle = \"300ms\"\n").await;
    let handshake = || async {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(4096)
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("an HTTP/2 connection");
        (sender, tokio::spawn(connection))
    };
    let get = |path: &str| {
        http::Request::get(format!("http://a{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    let (mut sender, connection) = handshake().await;
    let slow = sender
        .send_request(get("/sleep/1000"))
        .await
        .expect("served");
    assert_eq!(slow.status(), 200, "a slow backend is not a stalled client");

    // The body is never read, so its window is never given back.
    let stalled = sender.send_request(get("/bytes/10000000")).await.unwrap();
    assert_eq!(stalled.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the stalled connection is closed")
        .unwrap()
        .ok();
    drop(stalled);
    assert_eq!(backend.served(), 2);
}

/// A client that stops reading its response is cut once it has read none of it for
/// `client_idle`, and the log says so (nginx: "client timed out"): its access log line alone,
/// a 200, would not.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_client_idle_and_logged() {
    let backend = Backend::start("a").await;
    let proxy = support::BinaryProxy::start(
        &(pool("web", "round_robin", &[&backend]) + "[timeouts]\nclient_idle = \"300ms\"\n"),
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    let size: u64 = 64 << 20;
    stream
        .write_all(format!("GET /bytes/{size} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    support::wait_until(
        "the abandoned response is logged",
        Duration::from_secs(10),
        || proxy.logged("response abandoned: the client stopped reading it"),
    )
    .await;
    // What the buffers held comes, then the end: far less than the body.
    let mut got = 0u64;
    let mut buffer = vec![0; 1 << 16];
    let read_all = async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the connection ends");
    assert!(got < size, "cut short: {got} of {size} bytes");
}
