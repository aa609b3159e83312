//! `State`: the immutable snapshot a request is served from, and the `ArcSwap` that holds it.
//!
//! A request loads the snapshot once and keeps that `Arc` to the end, so it sees one config
//! whole even if another is swapped in meanwhile. Nothing in a `State` changes after it is built
//! except the backends' own atomic counters.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, Timeouts};
use crate::route::Route;
use crate::upstream::{Backend, Client, Pool, build_client};

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
            .map(|pool| {
                let backends = pool
                    .backends
                    .iter()
                    .map(|b| Backend::new(b.address.clone(), b.weight))
                    .collect();
                Arc::new(Pool::new(&pool.name, pool.strategy, backends))
            })
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

    /// Wraps the snapshot for sharing between the server and whoever swaps it.
    pub fn into_shared(self) -> SharedState {
        Arc::new(ArcSwap::from_pointee(self))
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
