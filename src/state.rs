//! `State`: the immutable snapshot a request is served from, and the `ArcSwap` that holds it.
//!
//! A request loads the snapshot once and keeps that `Arc` to the end, so it sees one config
//! whole even if another is swapped in meanwhile. Nothing in a `State` changes after it is built
//! except the backends' own atomic counters.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{BackendConfig, Config, PoolConfig, Timeouts};
use crate::route::Route;
use crate::upstream::{Backend, Client, Policy, Pool, build_client, checker};

/// A pool from its config, every backend new.
fn build_pool(config: &PoolConfig) -> Pool {
    let start_healthy = config.health.as_ref().is_none_or(|h| h.start_healthy);
    let backends = |list: &[BackendConfig]| -> Vec<Arc<Backend>> {
        list.iter()
            .map(|b| Backend::new(b.address.clone(), b.weight, start_healthy))
            .collect()
    };
    let policy = Policy {
        retries: config.retries,
        fail_open: config.fail_open,
        outlier: config.outlier,
        health: config.health.clone(),
    };
    Pool::new(
        &config.name,
        config.strategy,
        backends(&config.backends),
        backends(&config.backups),
        policy,
    )
}

/// The live snapshot, swapped whole.
pub type SharedState = Arc<ArcSwap<State>>;

/// Routes, pools and the settings that apply to a request.
#[derive(Debug)]
pub struct State {
    generation: u64,
    timeouts: Timeouts,
    pools: Vec<Arc<Pool>>,
    routes: Vec<Route>,
    client: Client,
}

impl State {
    /// Builds the snapshot for `config`, numbered `generation`.
    pub fn build(config: &Config, generation: u64) -> State {
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|pool| Arc::new(build_pool(pool)))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let pool = pools
                    .iter()
                    .find(|pool| **pool.name() == *route.pool)
                    .expect("validation guarantees every route names a defined pool");
                Route::new(
                    route.host.clone(),
                    route.path_prefix.clone(),
                    Arc::clone(pool),
                )
            })
            .collect();
        State {
            generation,
            timeouts: config.timeouts,
            pools,
            routes,
            client: build_client(config.timeouts.connect),
        }
    }

    /// Starts the snapshot's background work (active health checks) and wraps it for sharing
    /// between the server and whoever swaps it. Must run inside a tokio runtime.
    pub fn into_shared(self) -> SharedState {
        self.start_health_checks();
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// Starts a health checker for every backend of every pool that has checks configured; the
    /// checkers end by themselves once this snapshot's pools are dropped.
    pub fn start_health_checks(&self) {
        for pool in &self.pools {
            checker::spawn(pool);
        }
    }

    /// How many configs were loaded before this one, plus one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The first route that takes a request for `host` (port stripped) and `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(host, path))
    }
}
