//! Backend state changes as events. A backend's state is computed from several inputs
//! (`health.rs`), some of which change by themselves (an ejection runs out), so changes are
//! noticed by comparing the state now with the one last reported: each change is reported once,
//! whoever notices it first, as one log event with the reason and one count in
//! `fulcrum_backend_state_changes_total{state}`.
//!
//! Where a change is made (a health check flips, an ejection, an operator's drain), it is
//! reported there with its reason; a watcher per pool catches the rest (ejections running out).
//! A new ejection first reports the end of the one before, if nobody has yet.

use std::sync::Weak;
use std::time::Duration;

use tracing::{info, warn};

use super::{Backend, Pool};
use crate::telemetry::metrics::BackendState;

/// How often a pool's watcher looks for changes nobody made explicitly.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Reports `backend`'s state in `pool` if it changed since last reported; `why` says what
/// changed it.
pub fn report(pool: &str, backend: &Backend, why: &str) {
    let now = backend.health().state();
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

/// Starts `pool`'s watcher; it ends once the pool is retired or gone.
pub fn watch(pool: Weak<Pool>) {
    super::pool::every(pool, WATCH_EVERY, |pool| {
        for (backend, _) in pool.members() {
            let why = match backend.stats().last_state() {
                BackendState::Ejected => "ejection period over",
                _ => "state changed",
            };
            report(pool.name(), backend, why);
        }
        // Capacity that came without a slot's release (a backend recovered, its ejection ran
        // out, an operator enabled it) goes to waiting requests now.
        pool.gate().opened();
    });
}
