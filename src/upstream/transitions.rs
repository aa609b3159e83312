//! Backend state changes as events. A backend's state is computed from several inputs
//! (`health.rs`), some of which change by themselves (an ejection runs out), so changes are
//! noticed by comparing the state now with the one last reported: each change is reported once,
//! whoever notices it first, as one log event with the reason and one count in
//! `fulcrum_backend_state_changes_total{state}`.
//!
//! Where a change is made (a health check flips, an ejection, an operator's drain), it is
//! reported there with its reason; a watcher per pool catches the rest (ejections running out).
//! A new ejection reports the end of the one before if the watcher has not yet.

use std::sync::Weak;
use std::time::Duration;

use tracing::{info, warn};

use super::health::BackendState;
use super::{Backend, Pool};

/// How often a pool's watcher looks for changes nobody made explicitly.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Reports `backend`'s state in `pool` if it changed since last reported; `why` says what
/// changed it.
pub fn report(pool: &str, backend: &Backend, why: &str) {
    report_as(pool, backend, backend.health().state(), why);
}

/// Reports `now` as `backend`'s state if it is not the one last reported.
fn report_as(pool: &str, backend: &Backend, now: BackendState, why: &str) {
    let Some(before) = backend.stats().state_changed(now) else {
        return;
    };
    let (from, to) = (before.name(), now.name());
    match now {
        BackendState::Unhealthy | BackendState::Ejected => {
            warn!(pool, backend = %backend, from, to, reason = why, "backend state changed")
        }
        _ => info!(pool, backend = %backend, from, to, reason = why, "backend state changed"),
    }
}

/// Reports a new ejection of `backend`. Live traffic can eject a backend again before the
/// watcher has seen the last ejection run out: that end is reported first, so every ejection is
/// one event and one count, and so is every end of one.
pub fn report_ejection(pool: &str, backend: &Backend, why: &str) {
    if backend.stats().last_state() == BackendState::Ejected {
        let beneath = backend.health().state_beneath_ejection();
        report_as(pool, backend, beneath, "ejection period over");
    }
    report(pool, backend, why);
}

/// Starts `pool`'s watcher; it ends once the pool is retired or gone.
pub fn watch(pool: Weak<Pool>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(WATCH_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_retired() {
                return;
            }
            for (backend, _) in pool.members() {
                let why = match backend.stats().last_state() {
                    BackendState::Ejected => "ejection period over",
                    _ => "state changed",
                };
                report(pool.name(), backend, why);
            }
        }
    });
}
