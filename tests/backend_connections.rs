//! The proxy's connections to backends over their life: a request body still sent while the
//! response is read (full duplex), a backend that takes none of a body, idle connections closed
//! when they expire or the backend closes them, a TLS backend that ends a body by closing, and
//! health probes judged on their status.

mod support;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::tls::backend_acceptor;
use support::{Http, TempDir, TestProxy, raw_exchange};

const WAIT: Duration = Duration::from_secs(10);

fn pool(address: impl std::fmt::Display, extra: &str) -> String {
    format!(
        "{extra}\n[pool.web]\nretries = 0\nbackends = [{{ address = \"{address}\" }}]\n\
         [pool.web.outlier]\nconsecutive_failures = 0\n"
    )
}

/// Reads a request head from `stream`: the head, and what came after it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> (String, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = seen.split_off(end + 4);
            return (String::from_utf8_lossy(&seen).into_owned(), rest);
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "the connection closed before a request head");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Reads to the end of the stream, or until `end` has come, whatever it costs.
async fn read_until<S: AsyncRead + Unpin>(stream: &mut S, end: &[u8]) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !seen.windows(end.len()).any(|w| w == end) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A streaming endpoint: on each request it answers at once (chunked), then reads the body
/// (`Content-Length`), and ends the response with how many bytes it got.
async fn streaming_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (head, rest) = read_head(&mut stream).await;
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|value| value.trim().parse().ok())
                    .expect("a Content-Length body");
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nstarted\r\n",
                    )
                    .await
                    .unwrap();
                let mut got = rest.len();
                let mut buf = vec![0u8; 64 * 1024];
                while got < length {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                let done = format!("done {got}");
                let end = format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len());
                stream.write_all(end.as_bytes()).await.ok();
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_that_answers_first_gets_the_body_as_its_response_streams() {
    let backend = streaming_backend().await;
    let proxy = TestProxy::start(&pool(backend, "")).await;
    const LEN: usize = 1 << 20;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(
            format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    // The body goes only once the response has begun: a proxy that stopped sending at the
    // response's head would leave the backend waiting for it.
    let began = tokio::time::timeout(WAIT, read_until(&mut client, b"started"))
        .await
        .expect("the response begins before the body is sent");
    assert!(began.starts_with("HTTP/1.1 200"), "{began}");
    let (mut reading, mut writing) = client.into_split();
    let sender = tokio::spawn(async move {
        writing.write_all(&vec![b'x'; LEN]).await.unwrap();
        writing
    });
    let rest = tokio::time::timeout(WAIT, read_until(&mut reading, b"0\r\n\r\n"))
        .await
        .expect("the response ends");
    assert!(rest.contains(&format!("done {LEN}")), "{rest}");
    sender.await.unwrap();
}

#[tokio::test]
async fn a_backend_that_takes_none_of_the_body_is_504_after_the_response_timeout() {
    // It reads the head, then neither the body nor answers, and keeps the connection open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    });
    let proxy = TestProxy::start(&pool(backend, "[timeouts]\nresponse = \"300ms\"\n")).await;
    const LEN: usize = 64 << 20;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(
            format!("PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let (mut reading, mut writing) = client.into_split();
    // The body fills the socket buffers on the way and stops; the writer is dropped at the end.
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..LEN / chunk.len() {
            if writing.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let reply = tokio::time::timeout(WAIT, read_until(&mut reading, b"\r\n\r\n"))
        .await
        .expect("an answer while the body is stuck");
    assert!(reply.starts_with("HTTP/1.1 504"), "{reply}");
    sender.abort();
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_closed_too() {
    // It answers one request, then closes its side and waits to see the proxy close too.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let mut buf = [0u8; 64];
        let eof = matches!(stream.read(&mut buf).await, Ok(0));
        closed_tx.send(eof).ok();
    });
    let proxy = TestProxy::start(&pool(backend, "")).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ok"));
    // No request comes to take the connection: only a sweep of the idle ones closes it.
    let closed = tokio::time::timeout(WAIT, closed_rx)
        .await
        .expect("the proxy closes an idle connection the backend closed");
    assert_eq!(closed, Ok(true));
}

#[tokio::test]
async fn a_tls_backend_may_end_a_body_by_closing_without_close_notify() {
    let dir = TempDir::new();
    let acceptor = backend_acceptor(dir.path(), "api.internal");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut stream) = acceptor.accept(tcp).await else {
                continue;
            };
            read_head(&mut stream).await;
            // HTTP/1.0, no length: the close ends the body, and it comes without TLS's
            // `close_notify` (the TCP connection is dropped under the TLS stream).
            stream
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
                .await
                .unwrap();
            stream.flush().await.unwrap();
            let (tcp, _) = stream.into_inner();
            drop(tcp);
        }
    });
    let config = format!(
        "[pool.web]\nretries = 0\nca = \"{}/ca.pem\"\n\
         backends = [{{ address = \"https://{backend}\", server_name = \"api.internal\" }}]\n",
        dir.path().display()
    );
    let proxy = TestProxy::start(&config).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    // Chunked to the client, and ended as a whole body is: with the last chunk.
    assert!(
        reply.text.ends_with("all of it\r\n0\r\n\r\n"),
        "{:?}",
        reply.text
    );
}

#[tokio::test]
async fn a_probe_is_judged_on_its_status_whatever_its_body() {
    // Probes get a 200 whose body only a close would end, and no close; requests get "ok".
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (head, _) = read_head(&mut stream).await;
                if head.starts_with("GET /healthz") {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\n\r\nstill going")
                        .await
                        .ok();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .ok();
                }
            });
        }
    });
    let health = "[pool.web.health]\npath = \"/healthz\"\ninterval = \"100ms\"\n\
                  timeout = \"300ms\"\nhealthy_after = 1\nstart = \"unhealthy\"\n";
    let config = format!("{}{health}", pool(backend, ""));
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let mut last = (0, String::new());
    let started = std::time::Instant::now();
    while started.elapsed() < WAIT {
        let reply = http.get("/").await;
        last = (reply.status.as_u16(), reply.body);
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last,
        (200, "ok".to_owned()),
        "the probe's 200 marks it healthy"
    );
}
