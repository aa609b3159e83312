//! A backend's connections: the idle HTTP/1.1 ones, the shared HTTP/2 one, and making new ones
//! (TCP, then TLS for an `https://` backend).
//!
//! An HTTP/1.1 connection carries one exchange at a time. Once a response body has been read to
//! its end, its connection goes back on the backend's idle stack; the next request takes the
//! most recently used one (warm in every cache). Closed connections, ones the backend sent
//! something on while idle, and ones idle past [`IDLE_TIMEOUT`] are dropped as they are met,
//! and by each pool's sweeper every [`SWEEP_EVERY`] (so a quiet backend is not held open, as
//! nginx's `keepalive_timeout` and HAProxy close theirs, nor a closed one left in
//! `CLOSE_WAIT`). An HTTP/2 connection is shared by every request to the backend.
//!
//! The stack lives in the `Backend`, so a reload that keeps the backend keeps it. A reload that
//! changes how the backend is reached (TLS roots, protocol) clears it and bumps the epoch: a
//! connection made before, busy at the time, is not taken back when its exchange ends.

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::client::describe_io;
use super::h1;
use super::h2::Shared;
use super::stream::Stream;
use super::{Backend, Failure, Pool};
use crate::clock;

/// How long an idle upstream connection is kept for reuse; below common backend keep-alive
/// timeouts (nginx 75s) so the backend rarely closes a connection we are about to reuse.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle connections kept per backend.
const MAX_IDLE: usize = 1024;

/// How often a pool's sweeper closes its backends' expired and closed idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A backend's idle connections, most recently used last, and its shared HTTP/2 connection.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Option<Shared>>,
    /// Counts [`Connections::clear`]s.
    epoch: AtomicU64,
}

/// An idle connection and when it became idle.
#[derive(Debug)]
struct Idle {
    connection: Box<h1::Connection>,
    since: Instant,
}

impl Idle {
    /// Whether it can still be taken at `now`: not expired, and quiet.
    fn is_usable(&self, now: Instant) -> bool {
        now.duration_since(self.since) < IDLE_TIMEOUT && self.connection.is_reusable()
    }
}

impl Connections {
    /// The current epoch: a connection is made with the settings of the epoch read before.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The most recently used idle HTTP/1.1 connection that can carry another exchange.
    pub(crate) fn take(&self) -> Option<Box<h1::Connection>> {
        let now = clock::now();
        let mut idle = self.idle.lock();
        while let Some(entry) = idle.pop() {
            if entry.is_usable(now) {
                return Some(entry.connection);
            }
        }
        None
    }

    /// Closes the idle connections that expired, or that the backend closed or sent something
    /// on.
    pub(crate) fn sweep(&self) {
        let now = clock::now();
        let closed: Vec<Idle> = {
            let mut idle = self.idle.lock();
            if idle.iter().all(|entry| entry.is_usable(now)) {
                return;
            }
            let (kept, closed) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|entry| entry.is_usable(now));
            *idle = kept;
            closed
        };
        // Closed outside the lock: each close is a system call or two.
        drop(closed);
    }

    /// Takes back a connection whose exchange is complete, unless it was made before a
    /// [`Connections::clear`]. Keeps at most [`MAX_IDLE`], dropping the oldest when full or
    /// expired, so a quiet backend's stack does not only grow.
    pub(crate) fn put(&self, mut connection: Box<h1::Connection>) {
        connection.shrink();
        let now = clock::now();
        let mut idle = self.idle.lock();
        // Under the lock `clear` bumps the epoch with: no stale connection slips in between.
        if connection.epoch() != self.epoch() {
            return;
        }
        let expired = idle
            .first()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT);
        if idle.len() >= MAX_IDLE || expired {
            idle.remove(0);
        }
        idle.push(Idle {
            connection,
            since: now,
        });
    }

    /// The shared HTTP/2 connection, when one is up.
    pub(crate) fn shared(&self) -> Option<Shared> {
        let mut shared = self.shared.lock();
        if shared.as_ref().is_some_and(Shared::is_closed) {
            *shared = None;
        }
        shared.clone()
    }

    /// Keeps a new HTTP/2 connection, made at `epoch`, for every request to come, unless one is
    /// kept already (requests that raced to connect use theirs once, then it closes) or a clear
    /// came since.
    pub(crate) fn share(&self, connection: &Shared, epoch: u64) {
        let mut shared = self.shared.lock();
        if epoch == self.epoch() && shared.as_ref().is_none_or(Shared::is_closed) {
            *shared = Some(connection.clone());
        }
    }

    /// Drops the shared HTTP/2 connection if it is `connection`: the next request opens a new
    /// one. A connection that timed out or failed may be stuck while the backend holds it open.
    pub(crate) fn forget(&self, connection: &Shared) {
        let mut shared = self.shared.lock();
        if shared.as_ref().is_some_and(|kept| kept.same(connection)) {
            *shared = None;
        }
    }

    /// Drops every idle connection and the shared one; a busy one is dropped when its exchange
    /// ends.
    pub(crate) fn clear(&self) {
        let mut idle = self.idle.lock();
        self.epoch.fetch_add(1, Ordering::Relaxed);
        idle.clear();
        drop(idle);
        *self.shared.lock() = None;
    }
}

/// Starts `pool`'s sweeper of idle connections; it ends once the pool is retired or gone (the
/// next snapshot's pool sweeps the backends it kept).
pub(crate) fn sweep(pool: Weak<Pool>) {
    super::pool::every(pool, SWEEP_EVERY, |pool| {
        for (backend, _) in pool.members() {
            backend.connections().sweep();
        }
    });
}

/// Opens a byte stream to `backend`: TCP within `timeout`, then TLS for an `https://` backend
/// within the same again.
pub(crate) async fn open(backend: &Backend, timeout: Duration) -> Result<Stream, Failure> {
    let tcp = connect_tcp(backend, timeout).await?;
    let Some(tls) = backend.tls() else {
        return Ok(Stream::Plain(tcp));
    };
    match tokio::time::timeout(timeout, tls.connect(tcp)).await {
        Ok(Ok(stream)) => Ok(Stream::Tls(Box::new(stream))),
        Ok(Err(error)) => Err(Failure::Tls(format!("with {:?}: {error}", tls.name()))),
        // The TCP connect succeeded: a backend that does not speak TLS is the usual cause.
        Err(_) => Err(Failure::Tls(format!(
            "with {:?}: no answer within {timeout:?} (does the backend speak TLS?)",
            tls.name()
        ))),
    }
}

/// Opens a TCP connection to `backend` within `timeout`, with `TCP_NODELAY` set.
async fn connect_tcp(backend: &Backend, timeout: Duration) -> Result<TcpStream, Failure> {
    let address = backend.address();
    let connecting = async {
        match backend.socket_addr() {
            Some(socket) => TcpStream::connect(socket).await,
            None => TcpStream::connect(address.as_str()).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(Failure::Connect(describe_io(&error))),
        Err(_) => return Err(Failure::ConnectTimeout),
    };
    if let Err(error) = stream.set_nodelay(true) {
        debug!(backend = %address, %error, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}
