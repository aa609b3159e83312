use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::connection::{Connection, ExchangeError, Exchanged};
use crate::upstream::stream::Stream;

/// A backend that reads until `until` has arrived, records it, and answers `reply`.
async fn backend(
    until: &'static [u8],
    reply: &'static [u8],
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(until.len()).any(|w| w == until) {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        socket.write_all(reply).await.unwrap();
        // Hold the connection open a moment, as a keep-alive backend does.
        tokio::time::sleep(Duration::from_millis(200)).await;
        got
    });
    (addr, task)
}

async fn connect(addr: std::net::SocketAddr) -> Box<Connection> {
    Connection::new(Stream::Plain(TcpStream::connect(addr).await.unwrap()), 0)
}

async fn body_text(exchanged: Exchanged) -> (StatusCode, String, super::ResponseBody) {
    let Exchanged::Response(parts, mut body) = exchanged else {
        panic!("a response")
    };
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.unwrap().into_data() {
            data.extend_from_slice(&chunk);
        }
    }
    (parts.status, String::from_utf8(data).unwrap(), body)
}

#[tokio::test]
async fn a_get_is_answered_and_its_connection_reusable() {
    let (addr, task) = backend(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    let mut request = Request::get("/x?y")
        .header("host", "a")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, text, mut body) = body_text(exchanged).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "hello"));
    assert!(body.reusable().is_some_and(|c| c.is_reusable()));
    assert_eq!(task.await.unwrap(), b"GET /x?y HTTP/1.1\r\nhost: a\r\n\r\n");
}

#[tokio::test]
async fn a_small_post_leaves_with_its_head() {
    let (addr, task) = backend(
        b"hello",
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let mut request = Request::post("/p")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, text, _) = body_text(exchanged).await;
    assert_eq!((status, text.as_str()), (StatusCode::CREATED, ""));
    assert_eq!(
        task.await.unwrap(),
        b"POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
    );
}

#[tokio::test]
async fn a_body_of_unknown_length_is_sent_chunked_with_trailers() {
    let (addr, task) = backend(
        b"0\r\nx-sum: 9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body = Channel(rx);
    let mut request = Request::put("/u").body(body).unwrap();
    let sender = tokio::spawn(async move {
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"defgh"))))
            .await
            .unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", "9".parse().unwrap());
        tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
    });
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let (_, text, _) = body_text(exchanged).await;
    assert_eq!(text, "ok");
    sender.await.unwrap();
    assert_eq!(
        String::from_utf8(task.await.unwrap()).unwrap(),
        "PUT /u HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\nx-sum: 9\r\n\r\n"
    );
}

/// A body fed by a channel.
struct Channel(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

/// An ended body, as `std::mem::take` leaves.
impl Default for Channel {
    fn default() -> Channel {
        Channel(tokio::sync::mpsc::channel(1).1)
    }
}

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.get_mut().0.poll_recv(cx)
    }
}

#[tokio::test]
async fn an_early_answer_stops_the_body_and_the_connection_is_not_reused() {
    let (addr, _task) = backend(
        b"\r\n\r\n",
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
        .await
        .unwrap();
    let mut request = Request::post("/u").body(Channel(rx)).unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, _, mut body) = body_text(exchanged).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.reusable().is_none(), "the body was not sent whole");
    drop(tx);
}

#[tokio::test]
async fn interim_responses_are_skipped_and_chunked_bodies_read_leniently() {
    let (addr, _task) = backend(
        b"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5 \r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    ).await;
    let mut request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let Exchanged::Response(parts, body) = exchanged else {
        panic!()
    };
    assert_eq!(parts.status, StatusCode::OK);
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-t"], "1");
    assert_eq!(collected.to_bytes(), "hello");
}

#[tokio::test]
async fn stray_bytes_after_a_bodiless_response_are_not_read_as_the_next() {
    let (addr, _task) = backend(
        b"\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    let mut request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, text, mut body) = body_text(exchanged).await;
    assert_eq!((status, text.as_str()), (StatusCode::NO_CONTENT, ""));
    // The stray bytes may not have arrived with the head; give them the time to.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reusable = body.reusable().is_some_and(|c| c.is_reusable());
    assert!(!reusable, "a connection with stray bytes is never reused");
}

#[tokio::test]
async fn no_answer_times_out_and_an_early_close_is_told_apart() {
    let (addr, _task) = backend(b"never", b"").await;
    let mut request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let error = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(error, ExchangeError::TimedOut), "{error:?}");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        drop(socket);
    });
    let mut request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let error = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, ExchangeError::ClosedEarly), "{error:?}");
}

#[tokio::test]
async fn a_switch_hands_over_the_connection_with_what_followed() {
    let (addr, _task) = backend(
        b"\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\nframe",
    )
    .await;
    let mut request = Request::get("/ws")
        .header("upgrade", "ws")
        .header("connection", "upgrade")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, true, Duration::from_secs(5))
        .await
        .unwrap();
    let Exchanged::Switched(parts, mut connection) = exchanged else {
        panic!("switched")
    };
    assert_eq!(parts.headers["upgrade"], "ws");
    let mut got = [0u8; 5];
    connection.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"frame");
}

#[tokio::test]
async fn an_unsolicited_switch_is_an_error() {
    let (addr, _task) = backend(b"\r\n\r\n", b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await;
    let mut request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let error = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExchangeError::Response(ref r) if r.contains("101")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_success_before_the_whole_body_gets_the_rest_as_it_is_read() {
    // A streaming endpoint: it answers at once, then reads the body and says what it got.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut body = got.len() - head;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nstarted\r\n")
            .await
            .unwrap();
        while body < 6 {
            let n = socket.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "the body stopped at {body} bytes");
            body += n;
        }
        socket.write_all(b"4\r\ndone\r\n0\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
        .await
        .unwrap();
    let mut request = Request::post("/stream")
        .header("content-length", "6")
        .body(Channel(rx))
        .unwrap();
    let exchanged = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_secs(5))
        .await
        .unwrap();
    let Exchanged::Response(parts, mut body) = exchanged else {
        panic!("a response")
    };
    assert_eq!(parts.status, StatusCode::OK);
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "started");
    // The rest of the request comes after the response began.
    tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
        .await
        .unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "done");
    backend.await.unwrap();
}

#[tokio::test]
async fn a_backend_that_takes_none_of_the_body_times_out() {
    // It reads the head and nothing more: the body fills the socket's buffers and stops.
    let (addr, _task) = backend(b"\r\n\r\n", b"").await;
    let body = Full::new(Bytes::from(vec![b'x'; 64 << 20]));
    let mut request = Request::put("/u").body(body).unwrap();
    let error = connect(addr)
        .await
        .exchange(&mut request, false, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, ExchangeError::TimedOut), "{error:?}");
}
