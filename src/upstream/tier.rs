//! `Tier`: the backends of one role (primaries, backups) and the balancer that chooses among
//! them; and how the balancer sees them (`Candidates`). Which tier serves is `pool.rs`'s business.

use std::sync::Arc;

use super::Backend;
use crate::config::Strategy;
use crate::telemetry::metrics::BackendState;
use crate::upstream::balance::{Balancer, Candidates, Member};

/// Backends of one role and their balancer.
#[derive(Debug)]
pub(super) struct Tier {
    pub(super) backends: Vec<Arc<Backend>>,
    pub(super) balancer: Balancer,
}

impl Tier {
    pub(super) fn new(
        strategy: Strategy,
        backends: Vec<Arc<Backend>>,
        balance_factor: Option<f64>,
    ) -> Tier {
        let members: Vec<Member<'_>> = backends
            .iter()
            .map(|b| Member {
                identity: b.address().as_str(),
                weight: b.weight(),
            })
            .collect();
        let balancer = Balancer::with_members(strategy, &members, balance_factor);
        Tier { balancer, backends }
    }

    pub(super) fn pick(
        &self,
        eligible: impl Fn(&Backend) -> bool,
        key: Option<u64>,
    ) -> Option<&Arc<Backend>> {
        let members = Members {
            backends: &self.backends,
            eligible,
        };
        self.balancer
            .pick(&members, key)
            .map(|index| &self.backends[index])
    }

    pub(super) fn any_available(&self) -> bool {
        self.backends.iter().any(|b| b.health().is_available())
    }

    /// Whether one more ejection keeps the ejected share within `max_percent`.
    pub(super) fn may_eject(&self, max_percent: u32) -> bool {
        let ejected = self
            .backends
            .iter()
            .filter(|b| b.health().state() == BackendState::Ejected)
            .count();
        (ejected + 1) * 100 <= max_percent as usize * self.backends.len()
    }
}

/// A tier's backends as the balancer sees them.
struct Members<'a, F> {
    backends: &'a [Arc<Backend>],
    eligible: F,
}

impl<F: Fn(&Backend) -> bool> Candidates for Members<'_, F> {
    fn len(&self) -> usize {
        self.backends.len()
    }

    fn is_eligible(&self, index: usize) -> bool {
        (self.eligible)(&self.backends[index])
    }

    fn in_flight(&self, index: usize) -> usize {
        self.backends[index].in_flight()
    }
}
