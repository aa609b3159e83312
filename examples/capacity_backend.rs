//! A backend of fixed capacity, for `benches/overload.sh`: at most `--concurrency` requests are
//! processed at once, each for `--service-ms` (a thread's sleep, as precise as the kernel's
//! timers), so it serves concurrency / service time requests a second (8 / 10 ms: 800) and no
//! more. Requests beyond that wait inside it, in arrival order (a fair semaphore), as they wait in
//! a saturated server's thread pool; it accepts any number of keep-alive connections, so the queue
//! in front of it is the proxy's to keep, or not. A request whose client left while it waited is
//! still processed, as most servers do: the work a proxy forwards to a saturated backend is spent
//! whether or not anyone still wants the answer.
//!
//! HTTP/1.1 on httparse, enough for the bodyless GETs the benchmark sends: a Content-Length body
//! is read and dropped, a chunked one refused. Every request is answered `200` with `ok\n`.
//!
//! Usage: `cargo run --release --example capacity_backend -- --listen 127.0.0.1:18300
//! --concurrency 8 --service-ms 10`

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n";
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\
connection: close\r\n\r\nok\n";
/// The longest request head read; a longer one closes the connection.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A backend that serves at most CONCURRENCY requests at once, each taking SERVICE_MS.
#[derive(Parser)]
struct Args {
    /// The address to listen on: loopback only.
    #[arg(long)]
    listen: SocketAddr,
    /// Requests processed at once; the rest wait.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long each request takes, in milliseconds.
    #[arg(long, default_value_t = 10)]
    service_ms: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        return Err("the capacity backend listens on loopback only".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    // One thread for the connections, and one per request in service (blocked in its sleep): the
    // core is shared with the load generator.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(args.concurrency)
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(args.listen).await?;
    let capacity = Arc::new(Semaphore::new(args.concurrency));
    let service = Duration::from_millis(args.service_ms);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, say: the backlog waits while connections close.
            Err(error) => {
                eprintln!("capacity_backend: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let capacity = capacity.clone();
        tokio::spawn(async move {
            // A connection ends when its client closes it or sends what this backend does not
            // read; either way the client is told by the closed socket, not by this process.
            connection(stream, &capacity, service).await.ok();
        });
    }
}

/// Answers one connection's requests in turn until its client closes it or asks to.
async fn connection(
    mut stream: TcpStream,
    capacity: &Semaphore,
    service: Duration,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        let head = loop {
            if let Some(head) = parse(&buffer)? {
                break head;
            }
            if buffer.len() > MAX_HEAD {
                return Err(invalid("request head too long"));
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                return Ok(());
            }
        };
        buffer.advance(head.length);
        let mut body = head.body;
        while body > 0 {
            if buffer.is_empty() && stream.read_buf(&mut buffer).await? == 0 {
                return Ok(());
            }
            let taken = body.min(buffer.len());
            buffer.advance(taken);
            body -= taken;
        }
        {
            let _slot = capacity
                .acquire()
                .await
                .expect("the capacity semaphore is never closed");
            // On a thread of its own, as the request would be in a thread-pool server: tokio's
            // timer wakes on whole milliseconds, which would stretch 10 ms to 10.5 on average and
            // take 5% off the capacity the benchmark states.
            let done = std::time::Instant::now() + service;
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(done.saturating_duration_since(std::time::Instant::now()));
            })
            .await
            .expect("a sleep does not panic");
        }
        stream
            .write_all(if head.close { OK_CLOSE } else { OK })
            .await?;
        if head.close {
            return Ok(());
        }
    }
}

/// What the connection needs from a request head.
struct Head {
    /// Bytes of the head, blank line included.
    length: usize,
    /// Bytes of body that follow (Content-Length).
    body: usize,
    /// The client asked for the connection to end after this answer.
    close: bool,
}

/// The head at the start of `buffer`, or `None` while it is incomplete.
fn parse(buffer: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request
        .parse(buffer)
        .map_err(|error| invalid(&error.to_string()))?
    {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial => return Ok(None),
    };
    let (mut close, mut keep_alive) = (false, false);
    let mut body = 0;
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| invalid("header value"))?;
        if header.name.eq_ignore_ascii_case("content-length") {
            body = value
                .trim()
                .parse()
                .map_err(|_| invalid("content-length"))?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(
                "request bodies with transfer-encoding are not read",
            ));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    // HTTP/1.0 closes unless it asks to keep alive; HTTP/1.1 keeps alive unless it asks to close.
    let close = close || (request.version == Some(0) && !keep_alive);
    Ok(Some(Head {
        length,
        body,
        close,
    }))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
