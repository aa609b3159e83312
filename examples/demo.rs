//! Demo: starts a small HTTP backend on every loopback backend address that a config names, then
//! runs Fulcrum on that config, so `cargo run --release --example demo` shows balancing at once.
//!
//! Usage: `cargo run --release --example demo [-- CONFIG]` (default `proxy.toml`). Each backend
//! answers `hello from 127.0.0.1:PORT` with an `x-backend` header; stop everything with Ctrl-C.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "proxy.toml".into()),
    );
    let config = fulcrum::Config::load(&path)?;

    for pool in &config.pools {
        for backend in pool.backends.iter().chain(&pool.backups) {
            let address: SocketAddr = match backend.address.as_str().parse() {
                Ok(address) => address,
                Err(_) => continue,
            };
            if address.ip().is_loopback() {
                let listener = TcpListener::bind(address).await?;
                tokio::spawn(serve_backend(listener, address));
                println!("demo backend for pool {:?} on {address}", pool.name);
            }
        }
    }

    let options = fulcrum::Options {
        watch_config: true,
        ..fulcrum::Options::default()
    };
    let app = fulcrum::App::start(config, options).await?;
    for address in app.local_addrs().await {
        println!("fulcrum listening on http://{address}/ (Ctrl-C to stop)");
    }
    if let Some(admin) = app.admin_addr() {
        println!("admin API on http://{admin}/status");
    }
    app.run(async {
        tokio::signal::ctrl_c().await.ok();
    })
    .await;
    Ok(())
}

async fn serve_backend(listener: TcpListener, address: SocketAddr) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<hyper::body::Incoming>| async move {
                let response = Response::builder()
                    .header("x-backend", address.to_string())
                    .body(Full::new(Bytes::from(format!("hello from {address}\n"))))
                    .expect("a static response is valid");
                Ok::<_, Infallible>(response)
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .ok();
        });
    }
}
