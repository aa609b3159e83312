//! An HTTP/2 client connection's socket, watched for the timers hyper's server does not keep:
//! - `request_header`: a connection that has sent nothing since it opened is closed after this,
//!   as nginx's `client_header_timeout` and HAProxy's `timeout http-request` run from accept.
//! - `client_idle`: a connection with no request in progress for this long is told to say
//!   GOAWAY and close itself (`downstream/drain.rs`), so its client is told rather than cut
//!   (RFC 9113 section 9.1), and closed under it only after another `client_idle`. The deadline
//!   is checked when the timer fires, so the close comes between one and two `client_idle` after
//!   the last response.
//! - A client that reads nothing of what is written to it for `client_idle` has its connection
//!   closed, as nginx's `send_timeout` does ([`WriteWait`]).
//! - An HTTP/2 client can stop a response without the socket filling: it grants no more
//!   flow-control window. hyper then stops polling the response body, so the connection is
//!   closed when a response has data waiting to go (its body yielded data and was not polled
//!   since) and nothing has been written for `client_idle`: within twice `client_idle`, like
//!   Envoy's stream idle timeout. A response waiting on its backend is not waiting on the client.
//!
//! Each request is counted on the connection's [`Watch`] ([`Active`], which the response body
//! holds until it ends). The timer is reset only when a deadline comes earlier than the one
//! armed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::clock;
use crate::pause::WriteWait;

/// What the connection and the requests on it share.
#[derive(Debug)]
pub struct Watch {
    /// Requests whose response has not ended.
    active: AtomicUsize,
    /// When the connection last became idle (`clock::now_ms`).
    idle_since_ms: AtomicU64,
    /// Any byte has arrived on the connection.
    seen_any: AtomicBool,
    /// The connection has been idle past `client_idle`: its server says GOAWAY.
    idle_goaway: Arc<Notify>,
    /// Responses whose body yielded data and has not been polled since: waiting on the client.
    blocked: AtomicUsize,
    /// When `blocked` last rose from zero (`clock::now_ms`).
    blocked_since_ms: AtomicU64,
    /// When bytes were last written to the client.
    written_ms: AtomicU64,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(clock::now_ms()),
            seen_any: AtomicBool::new(false),
            idle_goaway: Arc::default(),
            blocked: AtomicUsize::new(0),
            blocked_since_ms: AtomicU64::new(0),
            written_ms: AtomicU64::new(0),
        }
    }

    /// Resolves once the connection has been idle for `client_idle`. Owned: it is awaited
    /// beside the connection it watches, in a future of its own.
    pub fn idled_out(&self) -> OwnedNotified {
        Arc::clone(&self.idle_goaway).notified_owned()
    }

    /// Counts a request as in progress until the returned guard drops (with its response).
    pub fn start(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(self), false)
    }
}

/// A request in progress on a connection, and whether its response is waiting on the client;
/// dropped when its response ends.
#[derive(Debug)]
pub struct Active(Arc<Watch>, bool);

impl Active {
    /// The response body has been polled, and `yielded` data or not: after data, until it is
    /// polled again, the response waits on the client.
    pub fn polled(&mut self, yielded: bool) {
        if yielded == self.1 {
            return;
        }
        self.1 = yielded;
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
}

/// A client's stream (TCP, or TLS over TCP) with its watch.
#[derive(Debug)]
pub struct Watched<S> {
    stream: S,
    watch: Arc<Watch>,
    timeouts: Timeouts,
    alarm: Alarm,
    writes: WriteWait,
    /// The connection has been told it idled out, and has `client_idle` more to say GOAWAY and
    /// close before the socket is closed under it.
    told_idle: bool,
}

impl<S> Watched<S> {
    pub fn new(stream: S, timeouts: Timeouts) -> Watched<S> {
        Watched {
            stream,
            watch: Arc::new(Watch::new()),
            timeouts,
            alarm: Alarm::default(),
            writes: WriteWait::new(timeouts.client_idle),
            told_idle: false,
        }
    }

    pub fn watch(&self) -> &Arc<Watch> {
        &self.watch
    }

    /// The deadline that applies now, and what passing it means.
    fn deadline(&self) -> Option<(u64, Expiry)> {
        if self.watch.active.load(Ordering::Relaxed) > 0 {
            return self.stall_deadline();
        }
        let since = self.watch.idle_since_ms.load(Ordering::Relaxed);
        if !self.watch.seen_any.load(Ordering::Relaxed) {
            let header = self.timeouts.request_header.as_millis() as u64;
            return Some((since + header, Expiry::Silent));
        }
        let idle = self.timeouts.client_idle.as_millis() as u64;
        Some((since + idle, Expiry::Idle))
    }

    /// With requests in progress: when a response waiting on the client gives up.
    fn stall_deadline(&self) -> Option<(u64, Expiry)> {
        if self.watch.blocked.load(Ordering::Relaxed) == 0 {
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

    /// Notes progress in writing to the client (see `stall_deadline`).
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.watch
                .written_ms
                .store(clock::now_ms(), Ordering::Relaxed);
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
    /// Nothing came since the connection opened.
    Silent,
    /// No request for `client_idle`.
    Idle,
    /// A response has waited on the client (no window granted) for `client_idle`.
    Stalled,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.seen_any.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.expired(cx) {
                Some(Expiry::Idle) if !this.told_idle => {
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
                Some(Expiry::Idle | Expiry::Silent) => Poll::Ready(Ok(())),
                Some(Expiry::Stalled) => {
                    debug!("HTTP/2 client granted no window for client_idle: closing");
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            },
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
