//! The benchmarks' fallback backend, for a machine without nginx: a minimal hyper HTTP/1.1
//! server answering as `benches/peers/backend-nginx.conf` does: 64 KiB on `/64k`, 13 bytes on
//! every other path, to any method (a request's body is read to its end first, as nginx reads
//! and drops it), keep-alive, on one thread.
//!
//! Usage: `cargo run --release --example bench_backend -- 127.0.0.1:18000`

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8] = b"Hello, World!";
const LARGE_LEN: usize = 64 * 1024;

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
    // Made once; each response shares it (a reference count, no copy).
    let large = Bytes::from(vec![b'x'; LARGE_LEN]);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let large = large.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, large.clone()));
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .ok();
        });
    }
}

/// 64 KiB for `/64k`, 13 bytes otherwise, once the request's body has been read: a body left
/// unread would cost the connection its keep-alive.
async fn answer(
    request: Request<Incoming>,
    large: Bytes,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = if request.uri().path() == "/64k" {
        large
    } else {
        Bytes::from_static(SMALL)
    };
    request.into_body().collect().await?;
    Ok(Response::new(Full::new(body)))
}
