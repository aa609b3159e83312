//! The proxy embedded in a server of one's own, called through its `tower::Service` interface
//! with that server's request body, as `examples/embed.rs` does.

mod support;

use std::time::Duration;

use bytes::Bytes;
use fulcrum::{App, Config, Options, Peer};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Backend, TempDir, pool, with_listen};
use tokio::net::TcpListener;
use tower_service::Service;

#[tokio::test]
async fn an_embedded_proxy_serves_another_servers_requests_and_binds_nothing() {
    let backend = Backend::start("b").await;
    let dir = TempDir::new();
    let path = dir.path().join("proxy.toml");
    // The proxy's own listener is configured, and must stay unbound: the embedding server serves.
    let config = with_listen(&pool("web", "round_robin", &[&backend]));
    std::fs::write(&path, &config).unwrap();
    let options = Options {
        embedded: true,
        ..Options::default()
    };
    let app = App::start(Config::load(&path).unwrap(), options)
        .await
        .unwrap();
    assert!(app.local_addrs().await.is_empty(), "no listener of its own");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = app.proxy();
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
            request.extensions_mut().insert(Peer {
                addr: peer,
                tls: false,
            });
            proxy.clone().call(request)
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
            .ok();
    });

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{addr}/upload"))
        .body(Full::new(Bytes::from(
            (0..1000).map(support::pattern_byte).collect::<Vec<u8>>(),
        )))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "len=1000 ok=true", "the body went through, boxed");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
}
