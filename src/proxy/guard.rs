//! A client connection's socket, watched: the timeouts hyper does not give separately, and the
//! raw request head that screening sometimes needs.
//!
//! hyper's one `header_read_timeout` runs from the moment it waits for a request head, so it
//! would also cut idle keep-alive connections; it is turned off and this does both:
//! - `client_idle`: a connection with no request in progress and no byte of a new one for this
//!   long is closed (end of stream, as if the client had closed: hyper closes quietly). The
//!   deadline is checked when the timer fires, so the close comes between one and two
//!   `client_idle` after the last response. An HTTP/2 connection is first told to say GOAWAY
//!   and close itself (`downstream/drain.rs`), and closed under it only after another
//!   `client_idle`.
//! - `request_header`: once the first byte of a request head arrives, the whole head must arrive
//!   within this (slowloris): the client gets 408 and the connection is closed.
//! - A request line longer than any target `max_uri_bytes` allows gets 414 as soon as it is
//!   seen, as nginx answers one past its buffers: hyper would answer 431 once the whole head
//!   overflowed its buffer, naming the wrong limit.
//! - A client that reads nothing of what is written to it for `client_idle` has its connection
//!   closed, as nginx's `send_timeout` does ([`WriteWait`], which `downstream/h1/` uses too).
//! - An HTTP/2 client can stop a response without the socket filling: it grants no more
//!   flow-control window. hyper then stops polling the response body, so the connection is
//!   closed when a response has data waiting to go (its body yielded data and was not polled
//!   since) and nothing has been written for `client_idle`: within twice `client_idle`, like
//!   Envoy's stream idle timeout. A response waiting on its backend is not waiting on the client.
//!
//! It also follows the HTTP/1 request heads read (`heads.rs`), for the request-header timeout
//! and for what screening asks of a chunked request's raw head.
//!
//! Cost on the request path: a copy of each head (a few hundred bytes) and a search for its end;
//! the timer is reset only when a deadline comes earlier than the one armed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use tracing::debug;

use super::heads::{Heads, StartLine};
use crate::clock;
use crate::pause::WriteWait;

/// The answer to a client whose head took too long; written straight to the socket.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 41\r\n\r\nrequest header not received within time\n";

/// The answer to a request line longer than any allowed target; written straight to the socket.
const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\nrequest target too long";

/// Room in a request line beside its target: a method and ` HTTP/1.1\r\n`.
const REQUEST_LINE_SLACK: usize = 64;

/// How an HTTP/2 prior-knowledge connection starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// What the connection and the requests on it share.
#[derive(Debug)]
pub struct Watch {
    /// Requests whose response has not ended.
    active: AtomicUsize,
    /// When the connection last became idle (`clock::now_ms`).
    idle_since_ms: AtomicU64,
    /// The HTTP/1 stream, followed.
    head: Mutex<Head>,
    /// Requests started on the connection so far.
    requests: AtomicU64,
    /// An HTTP/2 connection idle past `client_idle`: its server says GOAWAY
    /// (`downstream/drain.rs`).
    idle_goaway: Notify,
    /// The connection speaks HTTP/2: only then are responses waiting on the client counted.
    http2: AtomicBool,
    /// Responses whose body yielded data and has not been polled since: waiting on the client.
    blocked: AtomicUsize,
    /// When `blocked` last rose from zero (`clock::now_ms`).
    blocked_since_ms: AtomicU64,
    /// When bytes were last written to the client (HTTP/2 only).
    written_ms: AtomicU64,
    /// The status the guard answered a head with itself (408, 414), or 0.
    refused: AtomicU16,
}

#[derive(Debug)]
struct Head {
    heads: Heads,
    /// Any byte has arrived on the connection.
    seen_any: bool,
}

impl Watch {
    fn new(max_head: usize) -> Watch {
        Watch {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(clock::now_ms()),
            head: Mutex::new(Head {
                heads: Heads::new(max_head),
                seen_any: false,
            }),
            requests: AtomicU64::new(0),
            idle_goaway: Notify::new(),
            http2: AtomicBool::new(false),
            blocked: AtomicUsize::new(0),
            blocked_since_ms: AtomicU64::new(0),
            written_ms: AtomicU64::new(0),
            refused: AtomicU16::new(0),
        }
    }

    /// The status the client was answered with by the guard itself, if it was: 408 for a head
    /// that did not arrive in time, 414 for a request line too long.
    pub fn refused(&self) -> Option<u16> {
        match self.refused.load(Ordering::Relaxed) {
            0 => None,
            status => Some(status),
        }
    }

    /// Resolves once the connection, speaking HTTP/2, has been idle for `client_idle`.
    pub async fn idled_out(&self) {
        self.idle_goaway.notified().await;
    }

    /// Counts a request as in progress until the returned guard drops (with its response).
    pub fn start(self: &Arc<Self>) -> Active {
        let number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(self), number, false)
    }

    /// Keeps the connection busy (a tunnel) until the returned guard drops, as a request does;
    /// its bytes are the tunnel's from now, not request heads.
    pub fn hold(self: &Arc<Self>) -> Active {
        self.lock().heads.stop();
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(self), 0, false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Head> {
        self.head
            .lock()
            .expect("the head lock is never held across a panic")
    }
}

/// A request in progress on a connection, its number on it, and whether its response is waiting
/// on the client; dropped when its response ends.
#[derive(Debug)]
pub struct Active(Arc<Watch>, u64, bool);

impl Active {
    /// Whether this chunked request's raw head had a `Content-Length` field; `None` when its
    /// head is not known (`heads.rs` says when), so its framing cannot be checked. The head's
    /// first line must be `start`'s.
    pub fn head_had_content_length(&self, start: StartLine<'_>) -> Option<bool> {
        self.0.lock().heads.had_content_length(self.1, start)
    }

    /// The response body has been polled, and `yielded` data or not: after data, until it is
    /// polled again, the response waits on the client.
    /// Counted on HTTP/2 only, where hyper stops polling a body the client grants no window.
    pub fn polled(&mut self, yielded: bool) {
        if yielded == self.2 || (yielded && !self.0.http2.load(Ordering::Relaxed)) {
            return;
        }
        self.2 = yielded;
        if !yielded {
            self.0.blocked.fetch_sub(1, Ordering::Relaxed);
        } else if self.0.blocked.fetch_add(1, Ordering::Relaxed) == 0 {
            self.0
                .blocked_since_ms
                .store(clock::now_ms(), Ordering::Relaxed);
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.polled(false);
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0
                .idle_since_ms
                .store(clock::now_ms(), Ordering::Relaxed);
        }
    }
}

/// The timeouts a watched connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub client_idle: Duration,
    pub request_header: Duration,
    /// Most bytes of a head followed: at least what hyper's read buffer lets a head have.
    pub max_head: usize,
    /// Longest request target (`max_uri_bytes`).
    pub max_uri_bytes: usize,
}

/// What the connection speaks, as told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Unknown,
    Http1,
    Http2,
}

/// A client's stream (TCP, or TLS over TCP) with its watch.
#[derive(Debug)]
pub struct Watched<S> {
    stream: S,
    watch: Arc<Watch>,
    timeouts: Timeouts,
    speaks: Speaks,
    /// Bytes of the HTTP/2 preface seen so far, while `speaks` is unknown.
    preface: usize,
    alarm: Alarm,
    writes: WriteWait,
    /// HTTP/2 only: the connection has been told it idled out, and has `client_idle` more to
    /// say GOAWAY and close before the socket is closed under it.
    told_idle: bool,
}

/// A stream the 408 can be written to without waiting (plain TCP only: on TLS the connection is
/// just closed).
pub trait WriteNow {
    fn write_now(&self, bytes: &[u8]);

    /// Whether [`WriteNow::write_now`] writes at all: an answer the guard cannot write is left
    /// to hyper and screening.
    fn can_write_now(&self) -> bool;
}

impl WriteNow for TcpStream {
    fn write_now(&self, bytes: &[u8]) {
        // Best effort: the client may not even be reading.
        self.try_write(bytes).ok();
    }

    fn can_write_now(&self) -> bool {
        true
    }
}

impl WriteNow for tokio_rustls::server::TlsStream<TcpStream> {
    fn write_now(&self, _: &[u8]) {}

    fn can_write_now(&self) -> bool {
        false
    }
}

impl<S> Watched<S> {
    pub fn new(stream: S, timeouts: Timeouts) -> Watched<S> {
        Watched {
            stream,
            watch: Arc::new(Watch::new(timeouts.max_head)),
            timeouts,
            speaks: Speaks::Unknown,
            preface: 0,
            alarm: Alarm::default(),
            writes: WriteWait::new(timeouts.client_idle),
            told_idle: false,
        }
    }

    pub fn watch(&self) -> &Arc<Watch> {
        &self.watch
    }

    /// Follows the request heads in bytes just read; true when the head being read has a
    /// request line too long for any target allowed and nothing else is in progress: no request
    /// (its response is not cut into), and no head ended in these bytes (hyper has yet to serve
    /// it; the line is judged on a later read).
    fn on_bytes(&mut self, bytes: &[u8]) -> bool {
        if self.speaks == Speaks::Unknown {
            // Decided on whole bytes: the HTTP/2 preface may arrive a few bytes at a time.
            let more = bytes.len().min(H2_PREFACE.len() - self.preface);
            if bytes[..more] != H2_PREFACE[self.preface..self.preface + more] {
                self.speaks = Speaks::Http1;
            } else {
                self.preface += more;
                if self.preface == H2_PREFACE.len() {
                    self.speaks = Speaks::Http2;
                    self.watch.http2.store(true, Ordering::Relaxed);
                }
            }
        }
        if self.speaks == Speaks::Http2 {
            return false;
        }
        let mut head = self.watch.lock();
        head.seen_any = true;
        if head.heads.lost() {
            return false;
        }
        let ended = head.heads.heads_ended();
        head.heads.read(bytes, clock::now_ms());
        head.heads.heads_ended() == ended
            && self.watch.active.load(Ordering::Relaxed) == 0
            && head
                .heads
                .line_longer_than(self.timeouts.max_uri_bytes + REQUEST_LINE_SLACK)
    }

    /// The deadline that applies now, and what passing it means.
    fn deadline(&self) -> Option<(u64, Expiry)> {
        if self.watch.active.load(Ordering::Relaxed) > 0 {
            return self.stall_deadline();
        }
        let header = self.timeouts.request_header.as_millis() as u64;
        let head = self.watch.lock();
        if let Some(started_ms) = head.heads.open_since_ms()
            && self.speaks != Speaks::Http2
        {
            return Some((started_ms + header, Expiry::Head));
        }
        let since = self.watch.idle_since_ms.load(Ordering::Relaxed);
        if !head.seen_any && self.speaks == Speaks::Unknown {
            // Nothing sent since the connection opened: it gets `request_header`, as nginx's
            // `client_header_timeout` and HAProxy's `timeout http-request` run from accept.
            return Some((since + header, Expiry::Idle));
        }
        let idle = self.timeouts.client_idle.as_millis() as u64;
        Some((since + idle, Expiry::Idle))
    }

    /// With requests in progress on HTTP/2: when a response waiting on the client gives up.
    fn stall_deadline(&self) -> Option<(u64, Expiry)> {
        if self.speaks != Speaks::Http2 || self.watch.blocked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self.watch.blocked_since_ms.load(Ordering::Relaxed);
        let written = self.watch.written_ms.load(Ordering::Relaxed);
        let idle = self.timeouts.client_idle.as_millis() as u64;
        Some((since.max(written) + idle, Expiry::Stalled))
    }

    /// Whether a deadline has passed; arms the timer for the next one otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<Expiry> {
        let (deadline_ms, expiry) = match self.deadline() {
            Some((deadline_ms, expiry)) => (deadline_ms, Some(expiry)),
            // Requests in progress: look again later (hyper may not read again when the last
            // response ends), so an idle connection is closed within twice `client_idle`.
            None => (clock::after_ms(self.timeouts.client_idle), None),
        };
        if self.alarm.passed(deadline_ms, cx) {
            expiry
        } else {
            None
        }
    }
}

/// A timer for a deadline that moves with every request but is seldom reached. It is only ever
/// brought forward: a deadline moved later is checked again when the timer fires, so moving it
/// costs no change to tokio's timer wheel.
#[derive(Debug, Default)]
pub struct Alarm(Option<Pin<Box<Sleep>>>);

impl Alarm {
    /// Whether `deadline_ms` (on `clock::now_ms`) has passed; if not, `cx` is woken by then.
    pub fn passed(&mut self, deadline_ms: u64, cx: &mut Context<'_>) -> bool {
        let now = clock::now_ms();
        if now >= deadline_ms {
            return true;
        }
        let at = Instant::now() + Duration::from_millis(deadline_ms - now);
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() > at || timer.is_elapsed() {
            timer.as_mut().reset(at);
        }
        // Registers the waker; if it fired already the deadline is checked again at once.
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Head,
    Idle,
    /// An HTTP/2 response has waited on the client (no window granted) for `client_idle`.
    Stalled,
}

impl<S: AsyncRead + AsyncWrite + WriteNow + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && this.on_bytes(&buf.filled()[before..])
                    && this.stream.can_write_now()
                {
                    this.stream.write_now(URI_TOO_LONG);
                    this.watch.refused.store(414, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request line too long",
                    )));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.expired(cx) {
                Some(Expiry::Head) => {
                    this.stream.write_now(REQUEST_TIMEOUT);
                    this.watch.refused.store(408, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request header timeout",
                    )))
                }
                Some(Expiry::Idle) if this.speaks == Speaks::Http2 && !this.told_idle => {
                    this.told_idle = true;
                    this.watch.idle_goaway.notify_one();
                    // From now, another `client_idle` to finish (a client that never answers
                    // the GOAWAY's ping would keep it open), then end of stream.
                    let now = clock::now_ms();
                    this.watch.idle_since_ms.store(now, Ordering::Relaxed);
                    match this.expired(cx) {
                        Some(_) => Poll::Ready(Ok(())),
                        None => Poll::Pending,
                    }
                }
                // End of stream: hyper closes the connection quietly.
                Some(Expiry::Idle) => Poll::Ready(Ok(())),
                Some(Expiry::Stalled) => {
                    debug!("HTTP/2 client granted no window for client_idle: closing");
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl<S> Watched<S> {
    /// Notes progress in writing to an HTTP/2 client (see `stall_deadline`).
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if self.speaks == Speaks::Http2 && matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.watch
                .written_ms
                .store(clock::now_ms(), Ordering::Relaxed);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&polled);
        this.writes.count(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        this.writes.count(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.writes.count(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
