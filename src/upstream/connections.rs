//! Keep-alive connections to one backend: an idle stack, and how a new connection is made.
//!
//! Connections are hyper's low-level HTTP/1.1 client (`client::conn::http1`), one request at a
//! time each. After a response body has been relayed to its end, its connection goes back on its
//! backend's idle stack; the next request to that backend takes the most recently used one (warm
//! in every cache). Closed connections and ones idle past [`IDLE_TIMEOUT`] are dropped as they
//! are met. The stack lives in the `Backend`, so a reload that keeps the backend keeps them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::plain::Plain;
use super::{Backend, Failure};
use crate::clock;

pub use super::sender::Sender;

/// How long an idle upstream connection is kept for reuse; below common backend keep-alive
/// timeouts (nginx 75s) so the backend rarely closes a connection we are about to reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response head accepted from a backend (a larger one is a 502).
/// nginx's `proxy_buffer_size` is 4 or 8 KiB; this leaves room for big cookies.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most fields accepted in a response head (more is a 502). nginx counts none, only bytes (a
/// 4 KiB buffer holds about 300 short fields); hyper's 100, HAProxy's 101 and Envoy's 100 turned
/// a page setting a hundred cookies into a 502 that counted against its backend.
pub(super) const MAX_RESPONSE_HEADERS: usize = 256;

/// How often an HTTP/2 backend connection is pinged, and how long the pong may take.
const H2_PING_EVERY: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Most idle connections kept per backend.
const MAX_IDLE: usize = 1024;

/// A backend's idle connections, most recently used last: hyper's, and the plain ones that
/// requests drive themselves (`plain.rs`).
#[derive(Debug, Default)]
pub struct Connections {
    idle: Mutex<Vec<Idle<Sender>>>,
    plain: Mutex<Vec<Idle<Box<Plain>>>>,
    /// Counts [`Connections::clear`]s: a connection busy at a clear was made under settings
    /// since changed, and is not taken back.
    epoch: AtomicU64,
    /// The backend is not plain HTTP/1.1 now (TLS or HTTP/2): a plain connection busy when it
    /// changed is closed at its end, not kept where nothing would take it or time it out.
    plain_off: AtomicBool,
}

/// An idle connection and when it became idle.
#[derive(Debug)]
struct Idle<C> {
    connection: C,
    since: Instant,
}

/// Pushes `connection` on an idle stack, keeping at most [`MAX_IDLE`] and dropping the oldest
/// if it has expired, so a quiet backend's stack does not only grow.
fn push_idle<C>(idle: &mut Vec<Idle<C>>, connection: C) {
    if idle.len() >= MAX_IDLE {
        idle.remove(0);
    }
    let now = clock::now();
    if idle
        .first()
        .is_some_and(|e| now.duration_since(e.since) >= IDLE_TIMEOUT)
    {
        idle.remove(0);
    }
    idle.push(Idle {
        connection,
        since: now,
    });
}

impl Connections {
    /// The most recently used idle connection that is still open, if any. An HTTP/2 connection
    /// is shared: a handle on it is returned and it stays.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some(entry) = idle.last() {
            if entry.connection.is_closed() {
                idle.pop();
                continue;
            }
            if let Some(shared) = entry.connection.share() {
                return Some(shared);
            }
            let entry = idle.pop().expect("checked just above");
            if entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.connection);
            }
        }
        None
    }

    /// The current epoch, for [`Connections::put`]: read when a connection starts an exchange.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Returns a connection taken or made at `epoch` whose exchange is complete; one from
    /// before a [`Connections::clear`] is dropped. A handle on a shared (HTTP/2) connection is
    /// simply dropped: the connection stays in the pool.
    pub fn put(&self, sender: Sender, epoch: u64) {
        if sender.is_closed() || sender.is_shared() {
            return;
        }
        let mut idle = self.lock();
        // Under the lock `clear` bumps the epoch with: no stale connection slips in between.
        if epoch == self.epoch() {
            push_idle(&mut idle, sender);
        }
    }

    /// Keeps a handle on a new shared (HTTP/2) connection, made at `epoch`, for every request
    /// to come, unless one is already kept (requests that raced to connect first use theirs
    /// once, then it closes) or a clear came since.
    pub fn share(&self, sender: Sender, epoch: u64) {
        let mut idle = self.lock();
        if epoch != self.epoch()
            || idle
                .iter()
                .any(|e| e.connection.is_shared() && !e.connection.is_closed())
        {
            return;
        }
        idle.push(Idle {
            connection: sender,
            since: Instant::now(),
        });
    }

    /// Drops the shared (HTTP/2) connection kept, if any: the next request opens a new one.
    pub fn forget_shared(&self) {
        self.lock().retain(|e| !e.connection.is_shared());
    }

    /// Drops every idle connection, and every busy one when its exchange ends.
    pub fn clear(&self) {
        let mut idle = self.lock();
        self.epoch.fetch_add(1, Ordering::Relaxed);
        idle.clear();
        drop(idle);
        self.lock_plain().clear();
    }

    /// The most recently used idle plain connection that can carry another exchange, if any.
    pub fn take_plain(&self) -> Option<Box<Plain>> {
        let mut idle = self.lock_plain();
        while let Some(entry) = idle.pop() {
            if entry.connection.is_reusable() && clock::now() - entry.since < IDLE_TIMEOUT {
                return Some(entry.connection);
            }
        }
        None
    }

    /// Returns a plain connection whose response was read to its end.
    pub fn put_plain(&self, connection: Box<Plain>) {
        if !self.plain_off.load(Ordering::Relaxed) {
            push_idle(&mut self.lock_plain(), connection);
        }
    }

    /// Says whether the backend is spoken to on plain connections now.
    pub fn set_plain(&self, plain: bool) {
        self.plain_off.store(!plain, Ordering::Relaxed);
    }

    fn lock_plain(&self) -> std::sync::MutexGuard<'_, Vec<Idle<Box<Plain>>>> {
        self.plain
            .lock()
            .expect("the idle-connections lock is never held across a panic")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle<Sender>>> {
        self.idle
            .lock()
            .expect("the idle-connections lock is never held across a panic")
    }
}

/// Opens a new connection to `backend` (TLS for an `https://` one), within `timeout` for the
/// TCP connect and the same again for the TLS handshake.
pub async fn connect(backend: &Backend, timeout: Duration) -> Result<Sender, Failure> {
    let address = backend.address();
    let stream = open(backend, timeout).await?;
    let http2 = backend.http2();
    let Some(tls) = backend.tls() else {
        return handshake(address, TokioIo::new(stream), http2).await;
    };
    match tokio::time::timeout(timeout, tls.connect(stream)).await {
        Ok(Ok(stream)) => handshake(address, TokioIo::new(stream), http2).await,
        Ok(Err(error)) => Err(Failure::Tls(format!("with {:?}: {error}", tls.name()))),
        // The TCP connect succeeded: a backend that does not speak TLS is the usual cause.
        Err(_) => Err(Failure::Tls(format!(
            "with {:?}: no answer within {timeout:?} (does the backend speak TLS?)",
            tls.name()
        ))),
    }
}

/// Opens a TCP connection to `backend` within `timeout`, with `TCP_NODELAY` set.
pub async fn open(backend: &Backend, timeout: Duration) -> Result<TcpStream, Failure> {
    let address = backend.address();
    let connecting = async {
        match backend.socket_addr() {
            Some(socket) => TcpStream::connect(socket).await,
            None => TcpStream::connect(address.as_str()).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(Failure::Connect(super::client::describe_io(&error))),
        Err(_) => return Err(Failure::ConnectTimeout),
    };
    if let Err(error) = stream.set_nodelay(true) {
        debug!(backend = %address, %error, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}

/// HTTP/1.1 (or HTTP/2 when `http2`) over `io`, its connection driven by a task of its own.
async fn handshake<I>(address: &Authority, io: I, http2: bool) -> Result<Sender, Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if http2 {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // A backend that stops answering is noticed even with no request waiting.
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(io)
            .await
            .map_err(|error| Failure::Connect(error.to_string()))?;
        let backend = address.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%backend, %error, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(Sender::Http2(sender));
    }
    let (sender, connection) = http1::Builder::new()
        .max_header_size(MAX_RESPONSE_HEAD)
        .max_headers(MAX_RESPONSE_HEADERS)
        .handshake(io)
        .await
        .map_err(|error| Failure::Connect(error.to_string()))?;
    let backend = address.clone();
    tokio::spawn(async move {
        // With upgrades: a 101 hands the connection over to a tunnel instead of closing it.
        if let Err(error) = connection.with_upgrades().await {
            debug!(%backend, %error, "upstream connection ended with an error");
        }
    });
    Ok(Sender::Http1(sender))
}
