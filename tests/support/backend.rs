//! A real HTTP/1.1 backend on 127.0.0.1:0 that records what it receives.
//!
//! Paths select behaviour:
//! - `/sleep/{ms}`: answer after `ms` milliseconds.
//! - `/hold`: answer once the test calls [`Backend::release`].
//! - `/bytes/{n}`: stream `n` pattern bytes (see [`pattern_byte`]).
//! - `/upload`: read the body, check it against the pattern, answer `len=N ok=BOOL`.
//! - `/healthz`: answer with the status set by [`Backend::set_health`] (200 at first).
//! - anything else: answer `200` with the backend's name as body and `x-backend` header.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The byte at offset `i` of every generated body: a 251-cycle, so a shifted or dropped chunk
/// shows up at once.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
}

struct Shared {
    name: String,
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    gate: Semaphore,
    health: std::sync::atomic::AtomicU16,
}

/// A running backend; stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend that names itself `name`.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Backend::serve(name, listener)
    }

    /// Starts a backend that closes keep-alive connections idle for `idle` (as many servers do).
    pub async fn with_idle_timeout(name: &str, idle: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Backend::serve_with(name, listener, Some(idle))
    }

    /// Starts a backend on an already-bound listener (to come back on a known port).
    pub fn serve(name: &str, listener: TcpListener) -> Backend {
        Backend::serve_with(name, listener, None)
    }

    fn serve_with(name: &str, listener: TcpListener, idle_timeout: Option<Duration>) -> Backend {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            requests: Mutex::default(),
            connections: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            health: std::sync::atomic::AtomicU16::new(200),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), idle_timeout));
        Backend { addr, shared, task }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request received so far, health probes included.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests received so far that were not health probes.
    pub fn served(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target != "/healthz")
            .count()
    }

    /// Health probes received so far.
    pub fn probes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target == "/healthz")
            .count()
    }

    /// The status `/healthz` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Lets `n` held (`/hold`) requests answer.
    pub fn release(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }

    /// Stops accepting and closes every connection.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, idle_timeout: Option<Duration>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |request| respond(Arc::clone(&shared), request));
            let mut builder = hyper::server::conn::http1::Builder::new();
            if let Some(idle) = idle_timeout {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle);
            }
            // A connection the peer drops mid-request is a normal event for a test backend.
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
                .ok();
        });
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn respond(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = request.uri().path().to_owned();
    shared.requests.lock().unwrap().push(Recorded {
        method: request.method().to_string(),
        target: request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        version: request.version(),
        headers: request.headers().clone(),
    });
    let text = |s: String| {
        Response::builder()
            .header("x-backend", &shared.name)
            .body(http_body_util::Full::new(Bytes::from(s)).boxed())
            .unwrap()
    };
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    } else if path == "/hold" {
        shared
            .gate
            .acquire()
            .await
            .expect("gate is never closed")
            .forget();
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let body = PatternBody::new(n.parse().unwrap_or(0), true);
        return Ok(Response::builder()
            .header("x-backend", &shared.name)
            .body(body.boxed())
            .unwrap());
    } else if path == "/healthz" {
        let status = shared.health.load(Ordering::SeqCst);
        let mut response = text("health".to_owned());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        return Ok(response);
    } else if path == "/upload" {
        let (len, ok) = check_pattern(request.into_body()).await;
        return Ok(text(format!("len={len} ok={ok}")));
    }
    Ok(text(shared.name.clone()))
}

/// Reads a body, returning its length and whether every byte followed the pattern.
pub async fn check_pattern<B>(mut body: B) -> (u64, bool)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut offset = 0u64;
    let mut ok = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (offset, false);
        };
        if let Ok(data) = frame.into_data() {
            for &byte in data.iter() {
                ok &= byte == pattern_byte(offset);
                offset += 1;
            }
        }
    }
    (offset, ok)
}

/// A body of `len` pattern bytes, sent in 64 KiB frames; with `sized` false its length is not
/// announced, so HTTP/1.1 sends it chunked.
pub struct PatternBody {
    offset: u64,
    len: u64,
    sized: bool,
}

impl PatternBody {
    pub fn new(len: u64, sized: bool) -> PatternBody {
        PatternBody {
            offset: 0,
            len,
            sized,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let size = (self.len - self.offset).min(64 * 1024);
        let start = self.offset;
        let chunk: Vec<u8> = (start..start + size).map(pattern_byte).collect();
        self.offset += size;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// An address where nothing listens: connects are refused. Never the same twice in a test
/// process (the kernel may hand a just-released port out again).
pub async fn refusing_address() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&address) {
            given.push(address);
            return address;
        }
    }
}

/// An address that accepts no connection and answers no SYN: its accept queue is full and never
/// drained, so a connect there hangs until the connecting side times out. Keep the returned value
/// alive for as long as the address must stay silent.
pub async fn blackhole() -> (
    SocketAddr,
    Vec<tokio::net::TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(200), connect).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => return (addr, fillers, listener),
        }
    }
    panic!("the accept queue of {addr} never filled up");
}

/// Reads from `stream` until the end of a request head (or EOF, or an error).
async fn read_head(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A backend that answers one request per connection (keep-alive, as far as the response says)
/// and closes the connection when the next request arrives on it, unanswered: the race every
/// pooled connection can lose. Counts the requests it answered.
pub async fn one_request_per_connection_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(reply).await.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                read_head(&mut stream).await;
            });
        }
    });
    (addr, answered)
}

/// A backend that reads one request head on each connection, writes `reply`
/// verbatim, and closes: for responses no well-behaved server would send.
pub async fn scripted_backend(reply: &'static [u8]) -> SocketAddr {
    delayed_scripted_backend(reply, Duration::ZERO).await
}

/// A [`scripted_backend`] that waits `delay` after each request head before it answers.
pub async fn delayed_scripted_backend(reply: &'static [u8], delay: Duration) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            tokio::time::sleep(delay).await;
            // The peer may be gone already; the script is the same either way.
            stream.write_all(reply).await.ok();
        }
    });
    addr
}

/// A backend that answers each request head with interim responses (`100 Continue`, each with
/// a 1 KB field) as fast as it can write them and never a final one; it stops when the peer goes
/// or after 20 seconds.
pub async fn interim_flood_backend() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let interim = format!(
        "HTTP/1.1 100 Continue\r\nX-Pad: {}\r\n\r\n",
        "x".repeat(1000)
    );
    let burst = interim.repeat(64);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let burst = burst.clone();
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let until = tokio::time::Instant::now() + Duration::from_secs(20);
                while tokio::time::Instant::now() < until {
                    if stream.write_all(burst.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A backend that answers each request head with a 200 promising 10 bytes, sends 5, and then
/// sends nothing more, holding the connection open until the peer goes (or 20 seconds pass).
pub async fn body_stalling_backend() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let half = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
                if stream.write_all(half).await.is_err() {
                    return;
                }
                let mut rest = [0u8; 64];
                let held = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut rest));
                held.await.ok();
            });
        }
    });
    addr
}

/// A backend that accepts connections and reads requests but never answers: a hung process.
pub async fn stalled_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, received)
}

/// A backend that accepts any HTTP/1.1 upgrade (answering 101 with the same `Upgrade`) and then
/// echoes every byte back until the client closes; plain requests get 200 "plain".
pub async fn upgrade_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|mut request: Request<Incoming>| async move {
                    let Some(protocol) = request.headers().get("upgrade").cloned() else {
                        let body = http_body_util::Full::new(Bytes::from_static(b"plain"));
                        return Ok::<_, Infallible>(Response::new(body.boxed()));
                    };
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrade.await {
                            let mut io = TokioIo::new(upgraded);
                            let (mut reader, mut writer) = tokio::io::split(&mut io);
                            tokio::io::copy(&mut reader, &mut writer).await.ok();
                        }
                    });
                    let response = Response::builder()
                        .status(101)
                        .header("upgrade", protocol)
                        .header("connection", "upgrade")
                        .body(http_body_util::Empty::new().boxed())
                        .unwrap();
                    Ok(response)
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                    .ok();
            });
        }
    });
    addr
}
