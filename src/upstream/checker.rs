//! Active health checks: one task per backend, probing `GET path` on the pool's interval.
//!
//! A probe opens a fresh connection each time and closes it, so a dead listener is noticed even
//! when the proxy's request traffic still rides on older keep-alive connections. `Host` is the
//! backend's own address. A result feeds `Health::record_probe`, which flips the state only after
//! the consecutive thresholds; each flip is reported once (`transitions.rs`), and so is a new
//! backend's first check.
//!
//! A task holds only `Weak` references to its pool and backend, and ends at its next tick once
//! the pool is gone or retired (a reload replaced the snapshot; the new one has its own checkers,
//! and a backend kept across the reload keeps its health state).

use std::sync::{Arc, Weak};

use tracing::{info, warn};

use super::health::Flip;
use super::{Backend, Pool, exchange, transitions};
use crate::config::HealthCheck;

/// Starts a checker for every member of `pool`, when the pool has health checks configured.
pub fn spawn(pool: &Arc<Pool>) {
    let Some(check) = pool.policy().health.clone() else {
        return;
    };
    for (backend, _) in pool.members() {
        tokio::spawn(run(
            Arc::downgrade(pool),
            Arc::downgrade(backend),
            check.clone(),
        ));
    }
}

async fn run(pool: Weak<Pool>, backend: Weak<Backend>, check: HealthCheck) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (Some(pool), Some(backend)) = (pool.upgrade(), backend.upgrade()) else {
            return;
        };
        if pool.is_retired() {
            return;
        }
        let verdict = probe(&backend, &check).await;
        match verdict {
            Ok(()) => backend.stats().checks_passed.inc(),
            Err(_) => backend.stats().checks_failed.inc(),
        }
        if backend.stats().first_check() {
            match &verdict {
                Ok(()) => {
                    info!(pool = %pool.name(), backend = %backend, "first health check passed")
                }
                Err(reason) => {
                    warn!(pool = %pool.name(), backend = %backend, %reason, "first health check failed")
                }
            }
        }
        let flip = backend.health().record_probe(
            verdict.is_ok(),
            check.healthy_after,
            check.unhealthy_after,
        );
        let Some(flip) = flip else { continue };
        let why = match (flip, &verdict) {
            (Flip::Up, _) => format!("passed {} health checks in a row", check.healthy_after),
            (Flip::Down, Err(reason)) => format!(
                "failed {} health checks in a row, the last: {reason}",
                check.unhealthy_after
            ),
            (Flip::Down, Ok(())) => "failed health checks".to_owned(),
        };
        transitions::report(pool.name(), &backend, &why);
        if flip == Flip::Up {
            pool.backend_recovered();
        }
    }
}

/// One probe on a fresh connection: `Ok` when the backend answered with an expected status
/// within the timeout.
async fn probe(backend: &Backend, check: &HealthCheck) -> Result<(), String> {
    let status = exchange::probe(backend, &check.path, check.timeout).await?;
    if check.expect.matches(status) {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}
