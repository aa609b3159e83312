//! Every connection Fulcrum's own HTTP/1.1 server holds, for what no single connection can do
//! for itself while it has no task: close it when its deadline passes (a sweep), and close the
//! idle ones at once when the server drains.
//!
//! One sweep checks every parked connection's deadline, so no connection holds a timer: a timer
//! is a hundred bytes and a timer-wheel entry per connection, and the deadlines, seconds long,
//! need no finer grain than a fraction of themselves. The same sweep sinks connections found
//! parked twice running (`sink.rs`), and ends the wait of tasks found lingering twice running
//! (`home.rs`). Joining and leaving take a lock once per connection, not
//! per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use mio::Registry;
use parking_lot::{Mutex, MutexGuard};
use slab::Slab;
use tokio::sync::Notify;
use tracing::warn;

use super::super::Shared;
use super::home::Home;
use super::sink;

/// The shortest and longest pause between sweeps. At most a tenth of a second: a connection
/// idle that long is sunk (`sink.rs`) before many more have piled up with tokio, and one look at
/// a parked connection is a lock tried and a field read, so even ten thousand of them cost a
/// fraction of a millisecond per sweep.
const SWEEP_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(100));

/// Fulcrum's HTTP/1 connections: parked or being served, not yet closed or handed over.
pub(in crate::downstream) struct Roster {
    homes: Mutex<Slab<Arc<Home>>>,
    draining: AtomicBool,
    /// Notified when the last connection leaves during a drain.
    emptied: Notify,
    /// Adds idle connections to the server's epoll set (`sink.rs`); unset if it could not be
    /// made, and idle connections then stay with tokio.
    sink: OnceLock<Registry>,
}

impl Roster {
    /// An empty roster.
    pub(in crate::downstream) fn new() -> Roster {
        Roster {
            homes: Mutex::default(),
            draining: AtomicBool::new(false),
            emptied: Notify::new(),
            sink: OnceLock::new(),
        }
    }

    /// Opens the epoll set idle connections sink to, watched for `shared`'s server until it is
    /// gone. Must be called within the runtime.
    pub(in crate::downstream) fn open_sink(&self, shared: Weak<Shared>) {
        match sink::open(shared) {
            Ok(registry) => {
                self.sink.set(registry).ok();
            }
            Err(error) => warn!(%error, "idle connections will stay registered with the runtime"),
        }
    }

    /// Adds the connection `make` builds from its slot.
    pub(super) fn join(&self, make: impl FnOnce(usize) -> Home) -> Arc<Home> {
        let mut homes = self.lock();
        let entry = homes.vacant_entry();
        let home = Arc::new(make(entry.key()));
        entry.insert(Arc::clone(&home));
        home
    }

    /// Removes the connection in `slot`: it is closed, or handed over.
    pub(super) fn leave(&self, slot: usize) {
        let mut homes = self.lock();
        homes.try_remove(slot);
        if homes.is_empty() && self.draining() {
            self.emptied.notify_waiters();
        }
    }

    /// Whether the server is draining: connections close after their current response.
    pub(super) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// How many connections are open.
    pub(in crate::downstream) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Closes the parked connections whose deadline is before `now_ms`, and sinks those parked
    /// since the last sweep.
    pub(super) fn sweep(&self, now_ms: u64) {
        let sinking = self.sink.get().is_some();
        let chosen: Vec<Arc<Home>> = self
            .lock()
            .iter()
            .filter(|(_, home)| home.needs_sweep(now_ms, sinking))
            .map(|(_, home)| Arc::clone(home))
            .collect();
        for home in chosen {
            home.sweep(now_ms, self.sink.get());
        }
    }

    /// The sunk connection in `slot` became readable.
    pub(super) fn surface(&self, slot: usize) {
        let home = self.lock().get(slot).map(Arc::clone);
        if let (Some(home), Some(registry)) = (home, self.sink.get()) {
            home.surface(registry);
        }
    }

    /// How long to wait before the next sweep, for deadlines this long.
    pub(super) fn pause(shortest_timeout: Duration) -> Duration {
        (shortest_timeout / 8).clamp(SWEEP_BOUNDS.0, SWEEP_BOUNDS.1)
    }

    /// Starts the drain: idle connections are closed at once, busy ones after their response.
    /// Ends when every connection has.
    pub(in crate::downstream) async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for home in self.select() {
            home.close_parked();
        }
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check, so a leave in between is not missed.
            emptied.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Every connection, copied out so each is looked at without the roster's lock held.
    fn select(&self) -> Vec<Arc<Home>> {
        self.lock()
            .iter()
            .map(|(_, home)| Arc::clone(home))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Arc<Home>>> {
        self.homes.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_come_at_an_eighth_of_the_shortest_deadline_within_bounds() {
        assert_eq!(Roster::pause(Duration::from_millis(20)), SWEEP_BOUNDS.0);
        assert_eq!(Roster::pause(Duration::from_secs(60)), SWEEP_BOUNDS.1);
        assert_eq!(
            Roster::pause(Duration::from_millis(400)),
            Duration::from_millis(50)
        );
    }
}
