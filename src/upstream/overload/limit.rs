//! A backend's limit on requests at once: none, fixed (`max_in_flight`), or adaptive (moved by
//! `gradient.rs` from its latency). Read without a lock on every pick; the adaptive controller
//! sits behind a lock taken only for the moment a response is recorded.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::gradient::{Gradient, PROBE_INTERVAL};
use crate::clock;
use crate::config::Overload;

/// How many requests a backend takes at once.
#[derive(Debug, Default)]
pub struct Limit {
    /// The limit now; 0: none.
    current: AtomicU32,
    /// Set while `gradient` holds a controller, so that a fixed limit's responses skip the lock.
    adaptive: AtomicBool,
    gradient: Mutex<Option<Gradient>>,
}

impl Limit {
    /// The limit now; 0 when there is none.
    pub fn get(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    /// Whether a backend with `in_flight` requests may take one more.
    pub fn admits(&self, in_flight: usize) -> bool {
        let limit = self.get();
        limit == 0 || in_flight < limit as usize
    }

    /// Applies a pool's settings (at start and on each reload): an adaptive limit keeps what it
    /// learned and takes the new bounds.
    pub fn configure(&self, overload: &Overload) {
        let mut gradient = self.gradient.lock();
        if !overload.limited() || !overload.adaptive {
            *gradient = None;
            self.adaptive.store(false, Ordering::Relaxed);
            self.current
                .store(overload.max_in_flight, Ordering::Relaxed);
            return;
        }
        let (floor, ceiling) = (overload.min_in_flight, overload.max_in_flight);
        let controller = gradient.get_or_insert_with(|| {
            // Backends configured together should not measure their baselines together.
            let every = PROBE_INTERVAL.mul_f64(0.85 + 0.3 * fastrand::f64());
            Gradient::new(floor, ceiling).probing_every(every)
        });
        controller.set_bounds(floor, ceiling);
        self.current.store(controller.limit(), Ordering::Relaxed);
        self.adaptive.store(true, Ordering::Relaxed);
    }

    /// A response head came `latency` after its request was sent, `in_flight` requests being at
    /// the backend then. Returns whether the limit rose (queued requests may now go).
    pub fn record(&self, latency: Duration, in_flight: usize) -> bool {
        if !self.adaptive.load(Ordering::Relaxed) {
            return false;
        }
        let mut gradient = self.gradient.lock();
        let Some(controller) = gradient.as_mut() else {
            return false;
        };
        let now = Duration::from_millis(clock::now_ms());
        let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
        let limit = controller.record(now, latency, in_flight);
        self.current.swap(limit, Ordering::Relaxed) < limit
    }

    /// Whether it is adaptive.
    pub fn is_adaptive(&self) -> bool {
        self.adaptive.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_none_and_adaptive() {
        let limit = Limit::default();
        assert!(limit.admits(1_000_000), "no limit by default");
        limit.configure(&Overload {
            max_in_flight: 2,
            ..Overload::default()
        });
        assert!(limit.admits(1) && !limit.admits(2));
        assert!(
            !limit.record(Duration::from_millis(1), 1),
            "fixed: never moves"
        );
        let adaptive = Overload {
            max_in_flight: 50,
            adaptive: true,
            min_in_flight: 3,
            ..Overload::default()
        };
        limit.configure(&adaptive);
        assert_eq!(limit.get(), 3, "adaptive starts at the floor, measuring");
        assert!(limit.is_adaptive());
        limit.configure(&Overload::default());
        assert_eq!(limit.get(), 0);
        assert!(!limit.is_adaptive());
    }
}
