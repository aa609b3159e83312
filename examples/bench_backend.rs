//! The benchmarks' fallback backend, for a machine without nginx: a minimal hyper HTTP/1.1
//! server answering every request with a fixed small response (`ok\n`, as
//! `benches/peers/backend-nginx.conf` does), keep-alive, on one thread.
//!
//! Usage: `cargo run --release --example bench_backend -- 127.0.0.1:18000`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"ok\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: bench_backend ADDRESS (127.0.0.1:PORT)")?
        .parse()?;
    if !address.ip().is_loopback() {
        return Err("the benchmark backend listens on loopback only".into());
    }
    // One thread, as the nginx backend has one worker.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(address))
}

async fn serve(address: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_request: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .ok();
        });
    }
}
