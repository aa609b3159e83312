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
use tokio::net::{TcpListener, TcpStream};

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
