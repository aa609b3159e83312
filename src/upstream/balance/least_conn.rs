//! `least_connections`: the member with the fewest requests in flight relative to its weight.
//!
//! Loads are compared as `in_flight / weight` by cross-multiplying, so no division and no float.
//!
//! Pools of up to [`EXACT_UP_TO`] members are scanned whole (as nginx does): the scan starts at a
//! rotating offset and keeps the first strict minimum, so members that tie (an idle pool, most
//! commonly) take turns instead of the first one taking everything. Larger pools use the power of
//! two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001; as in
//! tower's `p2c` and Envoy's least-request balancer): two random members, the lighter one wins.
//! That keeps a pick O(1) at any pool size, and its maximum load stays within O(log log n) of the
//! exact minimum's, without every proxy thread piling onto the same momentarily idlest backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Candidates;

/// Largest pool scanned whole; beyond it, two random choices.
pub const EXACT_UP_TO: usize = 16;

/// How many random pairs to draw before scanning for an eligible member.
const PAIRS: usize = 4;

/// Weights, and the rotating start of the scan.
#[derive(Debug)]
pub struct LeastConnections {
    weights: Box<[u32]>,
    start: AtomicUsize,
}

impl LeastConnections {
    pub fn new(weights: &[u32]) -> LeastConnections {
        LeastConnections {
            weights: weights.into(),
            start: AtomicUsize::new(0),
        }
    }

    /// The eligible member with the lowest `in_flight / weight` (ties rotate); in large pools
    /// the lighter of two random eligible members.
    pub fn pick(&self, candidates: &impl Candidates) -> Option<usize> {
        let len = candidates.len().min(self.weights.len());
        if len == 0 {
            return None;
        }
        if len > EXACT_UP_TO
            && let Some(index) = self.two_choices(len, candidates)
        {
            return Some(index);
        }
        self.scan(len, candidates)
    }

    /// The lighter of two distinct random eligible members, if a few draws find two.
    fn two_choices(&self, len: usize, candidates: &impl Candidates) -> Option<usize> {
        for _ in 0..PAIRS {
            let a = fastrand::usize(..len);
            let b = (a + 1 + fastrand::usize(..len - 1)) % len;
            match (candidates.is_eligible(a), candidates.is_eligible(b)) {
                (true, true) => {
                    let load = |i: usize| candidates.in_flight(i) as u64;
                    let weight = |i: usize| u64::from(self.weights[i]);
                    return Some(if load(b) * weight(a) < load(a) * weight(b) {
                        b
                    } else {
                        a
                    });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        None
    }

    /// Every eligible member, from a rotating start; the first strict minimum wins.
    fn scan(&self, len: usize, candidates: &impl Candidates) -> Option<usize> {
        // Relaxed: the offset only breaks ties; it orders no other memory.
        let start = self.start.fetch_add(1, Ordering::Relaxed) % len;
        let mut best: Option<(usize, u64, u64)> = None;
        for offset in 0..len {
            let index = (start + offset) % len;
            if !candidates.is_eligible(index) {
                continue;
            }
            let load = candidates.in_flight(index) as u64;
            let weight = u64::from(self.weights[index]);
            let lighter = match best {
                None => true,
                Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
            };
            if lighter {
                best = Some((index, load, weight));
            }
        }
        best.map(|(index, _, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::testing::Members;

    #[test]
    fn prefers_the_idle_member() {
        let lc = LeastConnections::new(&[1, 1, 1]);
        let members = Members {
            down: vec![],
            load: vec![4, 0, 2],
        };
        for _ in 0..5 {
            assert_eq!(lc.pick(&members), Some(1));
        }
    }

    #[test]
    fn ties_rotate() {
        let lc = LeastConnections::new(&[1, 1, 1]);
        let members = Members::all_up(3);
        let picks: Vec<_> = (0..6).map(|_| lc.pick(&members).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn load_is_relative_to_weight() {
        // 3 in flight on weight 4 (0.75) is lighter than 1 on weight 1.
        let lc = LeastConnections::new(&[1, 4]);
        let members = Members {
            down: vec![],
            load: vec![1, 3],
        };
        assert_eq!(lc.pick(&members), Some(1));
    }

    #[test]
    fn large_pools_use_two_choices_and_still_avoid_loaded_members() {
        let len = 100;
        let lc = LeastConnections::new(&[1; 100]);
        // Every member but the last ten is heavily loaded.
        let mut load = vec![50; len];
        for slot in &mut load[90..] {
            *slot = 0;
        }
        let members = Members { down: vec![], load };
        let picks = (0..2000)
            .filter(|_| lc.pick(&members).unwrap() >= 90)
            .count();
        // A pair misses every idle member with probability (90/100)^2 = 0.81.
        assert!(
            (300..=460).contains(&picks),
            "idle members won {picks} of 2000"
        );
    }

    #[test]
    fn two_choices_never_pick_an_ineligible_member() {
        let lc = LeastConnections::new(&[1; 40]);
        let members = Members {
            down: (0..39).collect(),
            load: vec![0; 40],
        };
        assert!((0..200).all(|_| lc.pick(&members) == Some(39)));
    }

    #[test]
    fn skips_ineligible_even_when_idle() {
        let lc = LeastConnections::new(&[1, 1]);
        let members = Members {
            down: vec![0],
            load: vec![0, 9],
        };
        assert_eq!(lc.pick(&members), Some(1));
    }
}
