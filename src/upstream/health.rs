//! One backend's health: the single state that active checks, passive ejection and operator
//! actions all feed, and the precedence that decides what it is now.
//!
//! ```text
//! disabled > draining > ejected > unhealthy > healthy
//! ```
//! - `disabled` / `draining` are operator actions (admin API); a draining backend finishes what it
//!   has in flight but gets nothing new.
//! - `ejected` is passive: it failed `consecutive_failures` real requests in a row; it ends by
//!   itself when its ejection period runs out.
//! - `unhealthy` is active: it failed `unhealthy_after` health checks in a row; it ends after
//!   `healthy_after` passes.
//! - `healthy` is everything else. Only a healthy backend is *available*, i.e. may be picked.
//!
//! Each input is kept apart (so ending an ejection does not forget a failing health check), and
//! the state is computed from all of them when asked. Everything is an atomic: the request path
//! reads three words and takes no lock.
//!
//! The states are named by [`BackendState`], telemetry's: the metrics count changes by it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock;
use crate::telemetry::metrics::BackendState;

/// An operator's setting for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    Enabled = 0,
    Draining = 1,
    Disabled = 2,
}

/// A flip of the active-check state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Up,
    Down,
}

/// The inputs to a backend's state.
#[derive(Debug)]
pub struct Health {
    admin: AtomicU8,
    /// Active checks' verdict.
    checked_up: AtomicBool,
    /// Consecutive probe results in the direction that would flip the verdict.
    probe_streak: AtomicU32,
    /// Consecutive failed real requests.
    failures: AtomicU32,
    /// End of the current ejection (`clock::now_ms` scale); 0 when not ejected.
    ejected_until: AtomicU64,
    /// Ejections since the backend last served a request successfully.
    ejections: AtomicU32,
}

impl Health {
    /// A backend's health when it first appears: checked up, unless active checks must pass first.
    pub fn new(start_healthy: bool) -> Health {
        Health {
            admin: AtomicU8::new(AdminState::Enabled as u8),
            checked_up: AtomicBool::new(start_healthy),
            probe_streak: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// The state now, by precedence.
    pub fn state(&self) -> BackendState {
        match self.admin.load(Ordering::Relaxed) {
            a if a == AdminState::Disabled as u8 => BackendState::Disabled,
            a if a == AdminState::Draining as u8 => BackendState::Draining,
            _ if self.is_ejected() => BackendState::Ejected,
            _ if !self.checked_up.load(Ordering::Relaxed) => BackendState::Unhealthy,
            _ => BackendState::Healthy,
        }
    }

    /// Whether the backend may be picked now.
    pub fn is_available(&self) -> bool {
        self.state() == BackendState::Healthy
    }

    /// Whether fail-open may still use it: anything but an operator's decision.
    pub fn is_enabled(&self) -> bool {
        self.admin.load(Ordering::Relaxed) == AdminState::Enabled as u8
    }

    /// An operator's setting: enabled, draining or disabled.
    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }

    pub fn set_admin(&self, state: AdminState) {
        self.admin.store(state as u8, Ordering::Relaxed);
    }

    /// End of the current ejection, if one is running.
    pub fn ejected_until_ms(&self) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0 && until > clock::now_ms()).then_some(until)
    }

    fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        // Only read the clock for a backend that has been ejected at some point.
        until != 0 && until > clock::now_ms()
    }

    /// Feeds one active-check result; returns the flip it caused, if any.
    pub fn record_probe(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<Flip> {
        let up = self.checked_up.load(Ordering::Relaxed);
        if passed == up {
            self.probe_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if up { unhealthy_after } else { healthy_after };
        if streak < needed {
            return None;
        }
        self.probe_streak.store(0, Ordering::Relaxed);
        self.checked_up.store(passed, Ordering::Relaxed);
        Some(if passed { Flip::Up } else { Flip::Down })
    }

    /// Forgets the active checks' verdict: for a backend whose pool no longer has checks.
    pub fn clear_probe_verdict(&self) {
        self.checked_up.store(true, Ordering::Relaxed);
        self.probe_streak.store(0, Ordering::Relaxed);
    }

    /// A real request succeeded: the failure streak and the ejection multiplier reset.
    pub fn record_success(&self) {
        // Plain loads first: on the hot path these are nearly always already zero.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A real request failed; returns the failure streak.
    pub fn record_failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects for `base × 2^(repeats)`, capped at `max`; returns the period, or `None` when
    /// another request ejected it first.
    pub fn eject(&self, base: Duration, max: Duration) -> Option<Duration> {
        let current = self.ejected_until.load(Ordering::Relaxed);
        if current != 0 && current > clock::now_ms() {
            return None;
        }
        let repeats = self.ejections.load(Ordering::Relaxed).min(16);
        let period = base.saturating_mul(1 << repeats).min(max);
        let until = clock::after_ms(period);
        self.ejected_until
            .compare_exchange(current, until, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        Some(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_disabled_draining_ejected_unhealthy_healthy() {
        let health = Health::new(false);
        assert_eq!(health.state(), BackendState::Unhealthy);
        health
            .eject(Duration::from_secs(60), Duration::from_secs(60))
            .unwrap();
        assert_eq!(health.state(), BackendState::Ejected);
        health.set_admin(AdminState::Draining);
        assert_eq!(health.state(), BackendState::Draining);
        health.set_admin(AdminState::Disabled);
        assert_eq!(health.state(), BackendState::Disabled);
        assert!(!health.is_available());
    }

    #[test]
    fn flips_only_after_consecutive_results() {
        let health = Health::new(true);
        assert_eq!(health.record_probe(false, 2, 3), None);
        assert_eq!(health.record_probe(false, 2, 3), None);
        assert_eq!(
            health.record_probe(true, 2, 3),
            None,
            "a pass breaks the failure streak"
        );
        assert_eq!(health.record_probe(false, 2, 3), None);
        assert_eq!(health.record_probe(false, 2, 3), None);
        assert_eq!(health.record_probe(false, 2, 3), Some(Flip::Down));
        assert_eq!(health.state(), BackendState::Unhealthy);
        assert_eq!(health.record_probe(true, 2, 3), None);
        assert_eq!(health.record_probe(true, 2, 3), Some(Flip::Up));
        assert!(health.is_available());
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_doubles_on_repeat_and_ends_by_itself() {
        let health = Health::new(true);
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(25);
        assert_eq!(health.eject(base, max), Some(base));
        assert_eq!(health.eject(base, max), None, "already ejected");
        tokio::time::advance(Duration::from_millis(10_001)).await;
        assert!(health.is_available(), "ejection ends after its period");
        assert_eq!(
            health.eject(base, max),
            Some(Duration::from_secs(20)),
            "doubled"
        );
        tokio::time::advance(Duration::from_millis(20_001)).await;
        assert_eq!(health.eject(base, max), Some(max), "capped");
        tokio::time::advance(Duration::from_millis(25_001)).await;
        health.record_success();
        assert_eq!(
            health.eject(base, max),
            Some(base),
            "a success resets the multiplier"
        );
    }

    #[test]
    fn failure_streak_counts_and_resets() {
        let health = Health::new(true);
        assert_eq!(health.record_failure(), 1);
        assert_eq!(health.record_failure(), 2);
        health.record_success();
        assert_eq!(health.record_failure(), 1);
    }
}
