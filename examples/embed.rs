//! Fulcrum embedded in a server of one's own: the proxy is a `tower::Service` taking any request
//! body, so any hyper or axum server can call it. Here hyper's HTTP/1 server on 127.0.0.1:8081
//! answers with it, by the config given (`[server] listen` is not bound). Run it with
//! `cargo run --example embed -- proxy.toml`.

use fulcrum::{App, Config, Options, Peer};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_service::Service;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "proxy.toml".into());
    let config = Config::load(path.as_ref())?;
    let options = Options {
        embedded: true,
        ..Options::default()
    };
    let app = App::start(config, options).await?;
    let listener = TcpListener::bind("127.0.0.1:8081").await?;
    loop {
        let (stream, addr) = listener.accept().await?;
        let proxy = app.proxy();
        let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
            // Who the client is travels with the request: X-Forwarded-For, hashing, the log.
            request.extensions_mut().insert(Peer { addr, tls: false });
            proxy.clone().call(request)
        });
        tokio::spawn(async move {
            let serving = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = serving.await {
                eprintln!("{addr}: {error}");
            }
        });
    }
}
