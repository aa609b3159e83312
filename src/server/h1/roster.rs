//! Every connection Fulcrum's own HTTP/1.1 server holds, for what no single connection can do
//! for itself while it has no task: close it when its deadline passes (a sweep), and close the
//! idle ones at once when the server drains.
//!
//! One sweep checks every parked connection's deadline, so no connection holds a timer: a timer
//! is a hundred bytes and a timer-wheel entry per connection, and the deadlines, seconds long,
//! need no finer grain than a fraction of themselves. Joining and leaving take a lock once per
//! connection, not per request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slab::Slab;
use std::sync::Arc;
use tokio::sync::Notify;

use super::home::Home;

/// The shortest and longest pause between sweeps.
const SWEEP_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Fulcrum's own connections: parked or being served, not yet closed or handed to hyper.
#[derive(Default)]
pub(in crate::server) struct Roster {
    homes: Mutex<Slab<Arc<Home>>>,
    draining: AtomicBool,
    /// Notified when the last connection leaves during a drain.
    emptied: Notify,
}

impl Roster {
    /// Adds the connection `make` builds from its slot.
    pub(super) fn join(&self, make: impl FnOnce(usize) -> Home) -> Arc<Home> {
        let mut homes = self.lock();
        let entry = homes.vacant_entry();
        let home = Arc::new(make(entry.key()));
        entry.insert(Arc::clone(&home));
        home
    }

    /// Removes the connection in `slot`: it is closed, or hyper's now.
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
    pub(in crate::server) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Closes the parked connections whose deadline is before `now_ms`.
    pub(super) fn sweep(&self, now_ms: u64) {
        for home in self.select(|home| home.expired(now_ms)) {
            home.close_parked(|parked| parked.deadline_ms <= now_ms);
        }
    }

    /// How long to wait before the next sweep, for deadlines this long.
    pub(super) fn pause(shortest_timeout: Duration) -> Duration {
        (shortest_timeout / 8).clamp(SWEEP_BOUNDS.0, SWEEP_BOUNDS.1)
    }

    /// Starts the drain: idle connections are closed at once, busy ones after their response.
    /// Ends when every connection has.
    pub(in crate::server) async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for home in self.select(|_| true) {
            home.close_parked(|_| true);
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

    /// The connections `wanted` picks, copied out so they are closed without the lock held.
    fn select(&self, wanted: impl Fn(&Home) -> bool) -> Vec<Arc<Home>> {
        self.lock()
            .iter()
            .filter(|(_, home)| wanted(home))
            .map(|(_, home)| Arc::clone(home))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Arc<Home>>> {
        self.homes
            .lock()
            .expect("the roster lock is never held across a panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_come_at_an_eighth_of_the_shortest_deadline_within_bounds() {
        assert_eq!(
            Roster::pause(Duration::from_secs(2)),
            Duration::from_millis(250)
        );
        assert_eq!(Roster::pause(Duration::from_millis(20)), SWEEP_BOUNDS.0);
        assert_eq!(Roster::pause(Duration::from_secs(60)), SWEEP_BOUNDS.1);
    }
}
