//! Active health checks: one task per backend, probing `GET path` on the pool's interval.
//!
//! A probe opens a fresh connection each time (no pooling), so a dead listener is noticed even
//! when the proxy's request traffic still rides on older keep-alive connections. `Host` is the
//! backend's own address. A result feeds `Health::record_probe`, which flips the state only after
//! the consecutive thresholds; each flip is logged once.
//!
//! A task holds only `Weak` references to its pool and backend, and ends at its next tick once
//! the pool is gone or retired (a reload replaced the snapshot; the new one has its own checkers,
//! and a backend kept across the reload keeps its health state).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::{info, warn};

use super::health::Flip;
use super::{Backend, Pool};
use crate::config::HealthCheck;

type ProbeClient = legacy::Client<HttpConnector, Empty<Bytes>>;

/// Starts a checker for every member of `pool`, when the pool has health checks configured.
pub fn spawn(pool: &Arc<Pool>) {
    let Some(check) = pool.policy().health.clone() else {
        return;
    };
    let client = probe_client(&check);
    for (backend, _) in pool.members() {
        tokio::spawn(run(
            Arc::downgrade(pool),
            Arc::downgrade(backend),
            check.clone(),
            client.clone(),
        ));
    }
}

fn probe_client(check: &HealthCheck) -> ProbeClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(check.timeout));
    legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

async fn run(pool: Weak<Pool>, backend: Weak<Backend>, check: HealthCheck, client: ProbeClient) {
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
        let verdict = probe(&client, &backend, &check).await;
        let flip = backend.health().record_probe(
            verdict.is_ok(),
            check.healthy_after,
            check.unhealthy_after,
        );
        match (flip, verdict) {
            (Some(Flip::Up), _) => {
                info!(pool = %pool.name(), backend = %backend, passes = check.healthy_after, "backend is healthy")
            }
            (Some(Flip::Down), Err(reason)) => {
                warn!(pool = %pool.name(), backend = %backend, %reason, failures = check.unhealthy_after, "backend is unhealthy")
            }
            _ => {}
        }
    }
}

/// One probe: `Ok` when the backend answered with an expected status within the timeout.
async fn probe(client: &ProbeClient, backend: &Backend, check: &HealthCheck) -> Result<(), String> {
    let uri = format!("http://{}{}", backend.address(), check.path);
    let request = Request::get(uri)
        .header(header::HOST, backend.address().as_str())
        .header(header::USER_AGENT, "fulcrum-health-check")
        .body(Empty::new())
        .map_err(|err| format!("cannot build the probe: {err}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|err| super::classify(&err).to_string())?;
        let status = response.status();
        // Read the body so the exchange completes; its content does not matter.
        response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("body: {err}"))?;
        Ok::<_, String>(status)
    };
    let status = tokio::time::timeout(check.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout))??;
    if check.expect.matches(status) {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}
