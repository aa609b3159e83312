//! `Pool`: a named set of backends and the balancer that chooses among them.

use std::sync::Arc;

use crate::balance::{Balancer, Candidates, Strategy};

use super::Backend;

/// A pool as the snapshot holds it; immutable once built.
#[derive(Debug)]
pub struct Pool {
    name: Arc<str>,
    strategy: Strategy,
    backends: Vec<Arc<Backend>>,
    balancer: Balancer,
}

impl Pool {
    /// A pool over `backends`, chosen among by `strategy`.
    pub fn new(name: &str, strategy: Strategy, backends: Vec<Arc<Backend>>) -> Pool {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight()).collect();
        Pool {
            name: name.into(),
            strategy,
            balancer: Balancer::new(strategy, &weights),
            backends,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backend for the next request, never `exclude` (the one that just failed, on a retry).
    pub fn pick(&self, exclude: Option<&Backend>) -> Option<&Arc<Backend>> {
        let members = Members {
            backends: &self.backends,
            exclude,
        };
        self.balancer
            .pick(&members)
            .map(|index| &self.backends[index])
    }
}

/// The pool's backends as the balancer sees them.
struct Members<'a> {
    backends: &'a [Arc<Backend>],
    exclude: Option<&'a Backend>,
}

impl Candidates for Members<'_> {
    fn len(&self) -> usize {
        self.backends.len()
    }

    fn is_eligible(&self, index: usize) -> bool {
        self.exclude
            .is_none_or(|excluded| !std::ptr::eq(excluded, Arc::as_ptr(&self.backends[index])))
    }

    fn in_flight(&self, index: usize) -> usize {
        self.backends[index].in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::uri::Authority;

    fn pool(strategy: Strategy) -> Pool {
        let backends = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .into_iter()
            .map(|a| Backend::new(Authority::from_static(a), 1))
            .collect();
        Pool::new("web", strategy, backends)
    }

    #[test]
    fn exclusion_is_honoured_by_every_strategy() {
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Weighted,
            Strategy::LeastConnections,
            Strategy::Random,
        ] {
            let pool = pool(strategy);
            let failed = Arc::clone(&pool.backends()[1]);
            for _ in 0..50 {
                let picked = pool.pick(Some(&failed)).expect("two members remain");
                assert!(
                    !Arc::ptr_eq(picked, &failed),
                    "{strategy} re-picked the excluded backend"
                );
            }
        }
    }

    #[test]
    fn least_connections_sees_live_in_flight_counts() {
        let pool = pool(Strategy::LeastConnections);
        let _busy0 = pool.backends()[0].start_request();
        let _busy2 = pool.backends()[2].start_request();
        let picked = pool.pick(None).unwrap();
        assert_eq!(picked.address().as_str(), "127.0.0.1:2");
    }
}
