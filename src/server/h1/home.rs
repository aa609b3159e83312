//! A connection of Fulcrum's own HTTP/1.1 server, as it lives between requests: parked, with no
//! task.
//!
//! A connection with nothing to read gives up its task. Its socket stays registered with tokio,
//! whose readiness now wakes the connection's [`Home`] instead of a task, and that wake spawns a
//! task to serve what arrived. An idle keep-alive connection so costs its `Home` and tokio's
//! registration, a few hundred bytes, and no timer: the roster's sweep (`roster.rs`) closes it
//! when its deadline passes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use tokio::net::TcpStream;

use super::super::Shared;
use super::super::connection::Open;

/// One connection, known to the roster from accept until it closes or becomes hyper's.
pub(super) struct Home {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    /// Its place in the roster.
    slot: usize,
    /// The connection while it waits for bytes; `None` while a task serves it.
    parked: Mutex<Option<Parked>>,
}

/// What a connection is made of, moved between its task and its home.
pub(super) struct Parked {
    pub(super) stream: TcpStream,
    /// Held until the connection ends: it counts as open.
    pub(super) open: Open,
    /// When it closes if no request comes (`clock::now_ms`).
    pub(super) deadline_ms: u64,
}

impl Home {
    pub(super) fn new(shared: Arc<Shared>, peer: SocketAddr, slot: usize) -> Home {
        Home {
            shared,
            peer,
            slot,
            parked: Mutex::new(None),
        }
    }

    /// Waits for the connection's next bytes without a task; if some have come already, serves
    /// them at once. A draining server closes it instead.
    pub(super) fn park(self: &Arc<Self>, connection: Parked) {
        // Checked under the lock, so a drain that starts now finds it parked.
        let mut parked = self.lock();
        if self.shared.roster.draining() {
            drop(parked);
            return self.close(connection);
        }
        let waker = Waker::from(Arc::clone(self));
        match connection
            .stream
            .poll_read_ready(&mut Context::from_waker(&waker))
        {
            Poll::Pending => *parked = Some(connection),
            // Bytes (or the end) arrived since the last read.
            Poll::Ready(_) => {
                drop(parked);
                self.run(connection);
            }
        }
    }

    /// Whether it is parked with its deadline before `now_ms`; a busy lock means it is not.
    pub(super) fn expired(&self, now_ms: u64) -> bool {
        self.parked.try_lock().is_ok_and(|parked| {
            parked
                .as_ref()
                .is_some_and(|parked| parked.deadline_ms <= now_ms)
        })
    }

    /// Closes the connection if it is parked and `when` says so.
    pub(super) fn close_parked(&self, when: impl Fn(&Parked) -> bool) {
        let taken = self.lock().take_if(|parked| when(parked));
        if let Some(connection) = taken {
            self.close(connection);
        }
    }

    /// Closes the connection: it has nothing unread, so dropping it sends a FIN.
    fn close(&self, connection: Parked) {
        drop(connection);
        self.leave();
    }

    /// Takes it off the roster: it is closed, or hyper's.
    pub(super) fn leave(&self) {
        self.shared.roster.leave(self.slot);
    }

    /// Serves the connection on a task of its own.
    fn run(self: &Arc<Self>, connection: Parked) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(super::run(Arc::clone(self), connection))),
            // No runtime: it is being shut down.
            Err(_) => self.close(connection),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Parked>> {
        self.parked
            .lock()
            .expect("a home's lock is never held across a panic")
    }
}

/// Readiness of a parked connection's socket: a task takes it over.
impl Wake for Home {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let taken = self.lock().take();
        if let Some(connection) = taken {
            self.run(connection);
        }
    }
}
