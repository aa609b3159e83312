//! `protocol = "http2"` pools: requests reach the backend over HTTP/2 (h2c prior knowledge),
//! several on one connection, and a gRPC-style exchange keeps its trailers end to end.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A body of one data frame, then trailers.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// A backend on 127.0.0.1:0 that runs `serve` on each connection it accepts, and counts them.
async fn serve_counting<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, connections)
}

/// An h2c backend that echoes a gRPC-style request body with `grpc-status: 0` trailers, and
/// counts its connections and the HTTP versions it saw.
async fn grpc_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    serve_counting(|stream| async move {
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            assert_eq!(
                request.version(),
                Version::HTTP_2,
                "the backend is spoken to in h2"
            );
            // As nginx: `Host` beside `:authority` is a duplicate host, 400.
            if request.headers().contains_key("host") {
                let refused = Response::builder().status(400).body(WithTrailers {
                    data: Some(Bytes::from("client sent duplicate host header")),
                    trailers: None,
                });
                return Ok::<_, Infallible>(refused.unwrap());
            }
            let authority = request.uri().authority().map(|a| a.to_string());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("ok"));
            let response = Response::builder()
                .header("content-type", "application/grpc")
                .header("x-authority", authority.unwrap_or_default())
                .body(WithTrailers {
                    data: Some(body),
                    trailers: Some(trailers),
                })
                .unwrap();
            Ok::<_, Infallible>(response)
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await
            .ok();
    })
    .await
}

/// The proxy with one `protocol = "http2"` pool of `backend`.
async fn http2_pool(backend: SocketAddr) -> TestProxy {
    let config =
        format!("[pool.p]\nprotocol = \"http2\"\nbackends = [{{ address = \"{backend}\" }}]\n");
    TestProxy::start(&config).await
}

#[tokio::test]
async fn a_grpc_call_keeps_its_trailers_through_an_http2_pool() {
    let (backend, connections) = grpc_backend().await;
    let proxy = http2_pool(backend).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for call in 0..5 {
        let payload = Bytes::from(format!("\0\0\0\0\x05call{call}"));
        let request = Request::post("http://grpc.test/echo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(payload.clone()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-authority"], "grpc.test");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
        assert_eq!(collected.to_bytes(), payload);
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the calls share one HTTP/2 connection to the backend"
    );
}

/// An HTTP/1.1 client's `Host` becomes the backend's `:authority`, and is not sent beside it.
#[tokio::test]
async fn an_http1_request_reaches_an_http2_backend_with_its_host_as_authority() {
    let (backend, _) = grpc_backend().await;
    let proxy = http2_pool(backend).await;
    let reply = support::Http::to(proxy.addr)
        .get_host("api.test", "/x")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["x-authority"], "api.test");
}

#[test]
fn protocol_must_be_http1_or_http2() {
    let err = fulcrum::Config::parse(
        "[pool.p]\nprotocol = \"spdy\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
        std::path::Path::new("proxy.toml"),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("pool.p.protocol = \"spdy\": expected \"http1\" or \"http2\""),
        "{err}"
    );
}

/// An h2c backend that answers the first stream of each connection and refuses every later one
/// with `REFUSED_STREAM`, as a server that is shutting the connection down does; counts its
/// connections.
async fn one_stream_per_connection_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    serve_counting(|stream| async move {
        let Ok(mut connection) = h2::server::handshake(stream).await else {
            return;
        };
        let mut answered = false;
        while let Some(Ok((_, mut respond))) = connection.accept().await {
            if answered {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            }
            answered = true;
            let response = Response::builder().status(200).body(()).unwrap();
            let mut body = respond.send_response(response, false).unwrap();
            body.send_data(Bytes::from_static(b"ok"), true).unwrap();
        }
    })
    .await
}

/// A stream the backend refuses unprocessed goes again on a fresh connection to the same
/// backend (RFC 9113 section 8.7), as Envoy and Go do: the client never sees the refusal.
#[tokio::test]
async fn a_refused_stream_goes_again_on_a_fresh_connection() {
    let (backend, connections) = one_stream_per_connection_backend().await;
    let proxy = http2_pool(backend).await;
    let http = support::Http::to(proxy.addr);
    for i in 0..4 {
        let reply = http.get("/").await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        assert_eq!(reply.body, "ok");
    }
    assert!(connections.load(Ordering::SeqCst) >= 4);
}

/// A raw h2c backend. On its first connection it answers the second stream with a head whose
/// field name is upper case (malformed: RFC 9113 section 8.2.1) and never the first, which it
/// announces through `held`; every later connection answers each stream `200 ok`. Counts its
/// connections.
async fn malformed_second_answer_backend(held: Arc<Notify>) -> (SocketAddr, Arc<AtomicUsize>) {
    let first = Arc::new(AtomicUsize::new(0));
    serve_counting(move |mut stream| {
        let held = Arc::clone(&held);
        let first = first.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let mut preface = [0u8; 24];
            if stream.read_exact(&mut preface).await.is_err() {
                return;
            }
            stream.write_all(&frame(4, 0, 0, &[])).await.ok();
            let mut streams = 0;
            loop {
                let mut head = [0u8; 9];
                if stream.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len =
                    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                let (kind, flags) = (head[3], head[4]);
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let mut payload = vec![0u8; len];
                if stream.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let reply = match kind {
                    // SETTINGS, not an acknowledgement: acknowledged.
                    4 if flags & 1 == 0 => frame(4, 1, 0, &[]),
                    // PING: answered.
                    6 if flags & 1 == 0 => frame(6, 1, 0, &payload),
                    // HEADERS: a request.
                    1 => {
                        streams += 1;
                        match (first, streams) {
                            (true, 1) => {
                                held.notify_one();
                                continue;
                            }
                            // `:status: 200` (static index 8), then `X-Bad: 1` as a literal.
                            (true, _) => frame(1, 0x5, id, b"\x88\x00\x05X-Bad\x011"),
                            (false, _) => {
                                [frame(1, 0x4, id, b"\x88"), frame(0, 0x1, id, b"ok")].concat()
                            }
                        }
                    }
                    _ => continue,
                };
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// An HTTP/2 frame: type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().to_be_bytes();
    let mut frame = vec![len[5], len[6], len[7], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// h2 ends a whole connection when one stream's answer is malformed: the other requests in
/// flight on it were lost with their connection, not refused, and a GET among them goes again on
/// a fresh connection, as it would had the connection broken (HAProxy fails only the stream).
#[tokio::test]
async fn a_request_lost_to_another_streams_malformed_answer_goes_again() {
    let held = Arc::new(Notify::new());
    let (backend, connections) = malformed_second_answer_backend(Arc::clone(&held)).await;
    let proxy = http2_pool(backend).await;
    let http = support::Http::to(proxy.addr);
    let other = support::Http::to(proxy.addr);
    let waiting = tokio::spawn(async move { other.get("/held").await });
    tokio::time::timeout(std::time::Duration::from_secs(10), held.notified())
        .await
        .expect("the first request reaches the backend");
    let malformed = http.get("/malformed").await;
    let waiting = waiting.await.unwrap();
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    assert_eq!(waiting.body, "ok");
    assert!(connections.load(Ordering::SeqCst) >= 2);
    // Sent again too, it found a backend connection that answers well.
    assert_eq!(malformed.status, 200, "{}", malformed.body);
}
