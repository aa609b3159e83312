//! Backend selection: which member of a pool gets the next request.
//!
//! Each strategy is a small synchronous type built once from the pool's weights and then shared
//! by every request through the immutable snapshot (`proxy/state.rs`); picking touches only
//! atomics, so the request path takes no lock. A balancer knows nothing about sockets or health: the caller
//! describes the members through [`Candidates`] (who may be picked now, how loaded each one is),
//! which also lets a retry exclude the backend that just failed.
//!
//! `Balancer` is a closed set, so it is an enum whose `pick` matches on the strategy: no boxing
//! and no dynamic dispatch on the hot path.

pub mod hash;
mod least_conn;
mod random;
mod round_robin;
mod weighted;

pub use hash::{HashRing, stable_hash};
pub use least_conn::LeastConnections;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use crate::config::Strategy;

/// What a balancer may ask about a pool's members, by index.
pub trait Candidates {
    /// How many members there are (eligible or not).
    fn len(&self) -> usize;
    /// Whether there are no members at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether member `index` may receive this request.
    fn is_eligible(&self, index: usize) -> bool;
    /// Requests member `index` has in flight now; only `least_connections` asks.
    fn in_flight(&self, index: usize) -> usize;
}

/// A pool's selector: one strategy's state, built from the members' weights.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    Weighted(Weighted),
    LeastConnections(LeastConnections),
    Random(Random),
    ConsistentHash(HashRing),
}

/// What a balancer is built from: each member's identity (its address) and weight.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub identity: &'a str,
    pub weight: u32,
}

impl Balancer {
    /// Builds the selector for `strategy` over these members (weights at least 1);
    /// `balance_factor` is consistent hashing's bounded load.
    pub fn with_members(
        strategy: Strategy,
        members: &[Member<'_>],
        balance_factor: Option<f64>,
    ) -> Balancer {
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        if strategy == Strategy::ConsistentHash {
            let identities: Vec<&str> = members.iter().map(|m| m.identity).collect();
            return Balancer::ConsistentHash(HashRing::new(&identities, &weights, balance_factor));
        }
        Balancer::new(strategy, &weights)
    }

    /// Builds the selector for `strategy` over members with these weights (each at least 1);
    /// consistent hashing identifies members by their position here.
    pub fn new(strategy: Strategy, weights: &[u32]) -> Balancer {
        match strategy {
            Strategy::RoundRobin => Balancer::RoundRobin(RoundRobin::new()),
            Strategy::Weighted => Balancer::Weighted(Weighted::new(weights)),
            Strategy::LeastConnections => {
                Balancer::LeastConnections(LeastConnections::new(weights))
            }
            Strategy::Random => Balancer::Random(Random::new(weights)),
            Strategy::ConsistentHash => {
                let identities: Vec<String> = (0..weights.len()).map(|i| i.to_string()).collect();
                let identities: Vec<&str> = identities.iter().map(String::as_str).collect();
                Balancer::ConsistentHash(HashRing::new(&identities, weights, None))
            }
        }
    }

    /// The index of the member to use, or `None` when no member is eligible. `key` is the
    /// request's hash key; only consistent hashing uses it.
    pub fn pick(&self, candidates: &impl Candidates, key: Option<u64>) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(candidates),
            Balancer::Weighted(b) => b.pick(candidates),
            Balancer::LeastConnections(b) => b.pick(candidates),
            Balancer::Random(b) => b.pick(candidates),
            Balancer::ConsistentHash(b) => b.pick(key, candidates),
        }
    }

    /// The first `n` members of `key`'s preference order (consistent hashing only).
    pub fn replicas(&self, key: u64, n: usize) -> Option<Vec<usize>> {
        match self {
            Balancer::ConsistentHash(ring) => Some(ring.replicas(key, n)),
            _ => None,
        }
    }
}

/// Most turns a rotating strategy takes from its shared counter before it draws instead.
const MAX_TURNS: usize = 64;

/// Takes turns from a shared rotation `counter` until `member_at(turn)` is eligible. An ineligible
/// member's turn is consumed, not handed to its neighbour, so the eligible members keep their
/// exact proportions (one of three down: the other two alternate, not 2:1). When `turns` turns
/// (at most [`MAX_TURNS`]) all miss, as in a cycle with a long run of a down heavy member, a draw
/// proportional to `weight` among the eligible members keeps the proportions in expectation.
fn take_turns(
    counter: &std::sync::atomic::AtomicUsize,
    period: usize,
    turns: usize,
    member_at: impl Fn(usize) -> usize,
    weight: impl Fn(usize) -> u32,
    candidates: &impl Candidates,
) -> Option<usize> {
    for _ in 0..turns.clamp(1, MAX_TURNS) {
        // Relaxed: the counter only spreads requests; it orders no other memory.
        let turn = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % period;
        let member = member_at(turn);
        if candidates.is_eligible(member) {
            return Some(member);
        }
    }
    draw_eligible(candidates, weight)
}

/// An eligible member drawn with probability proportional to `weight`: two passes, no allocation.
fn draw_eligible(candidates: &impl Candidates, weight: impl Fn(usize) -> u32) -> Option<usize> {
    let len = candidates.len();
    let total: u64 = (0..len)
        .filter(|&i| candidates.is_eligible(i))
        .map(|i| u64::from(weight(i)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(..total);
    for index in (0..len).filter(|&i| candidates.is_eligible(i)) {
        let w = u64::from(weight(index));
        if point < w {
            return Some(index);
        }
        point -= w;
    }
    None
}

#[cfg(test)]
pub(crate) mod testing {
    //! A pool stand-in for the strategies' unit tests.
    use super::Candidates;

    /// `len` members; `down` are ineligible; `load[i]` is member i's in-flight count.
    pub struct Members {
        pub down: Vec<usize>,
        pub load: Vec<usize>,
    }

    impl Members {
        pub fn all_up(len: usize) -> Members {
            Members {
                down: Vec::new(),
                load: vec![0; len],
            }
        }
    }

    impl Candidates for Members {
        fn len(&self) -> usize {
            self.load.len()
        }
        fn is_eligible(&self, index: usize) -> bool {
            !self.down.contains(&index)
        }
        fn in_flight(&self, index: usize) -> usize {
            self.load[index]
        }
    }

    /// How many times each index is picked in `rounds` picks.
    pub fn tally(rounds: usize, members: &Members, mut pick: impl FnMut() -> usize) -> Vec<usize> {
        let mut counts = vec![0; members.len()];
        for _ in 0..rounds {
            counts[pick()] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_returns_none_when_nothing_is_eligible() {
        let members = testing::Members {
            down: vec![0, 1, 2],
            load: vec![0; 3],
        };
        for name in Strategy::NAMES.split(", ") {
            let strategy = Strategy::from_name(name).unwrap();
            let balancer = Balancer::new(strategy, &[1, 2, 3]);
            assert_eq!(
                balancer.pick(&members, Some(7)),
                None,
                "{name} picked a down member"
            );
            assert_eq!(
                balancer.pick(&members, None),
                None,
                "{name} picked a down member"
            );
        }
    }
}
