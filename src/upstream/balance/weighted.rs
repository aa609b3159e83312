//! `weighted`: smooth weighted round robin, as nginx does it.
//!
//! nginx's algorithm: every turn, each member's `current` grows by its weight; the member with the
//! largest `current` (the first one on a tie) is picked and its `current` drops by the total weight.
//! Over a cycle of `total` turns each member is picked exactly `weight` times, and heavy members
//! are interleaved with light ones (weights 5:1:1 give `a a b a c a a`, never five `a` in a row).
//!
//! The algorithm needs mutable state per turn, which would mean a lock per request. The sequence
//! is periodic, so instead the whole cycle is computed once, when the snapshot is built, and a pick
//! is one atomic increment and one table read. Weights are divided by their greatest common
//! divisor first (2:6 is the same cycle as 1:3). Computing nginx's cycle costs
//! `total × members` steps; beyond [`SMOOTH_BUDGET`] the cycle is laid out instead by
//! earliest-deadline order (member i's k-th pick at time (k + ½) / weight), which has the same
//! exact proportions and is nearly as smooth, in `total × log(members)` steps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::AtomicUsize;

use super::{Candidates, take_turns};

/// Largest `total × members` for which nginx's exact cycle is computed.
const SMOOTH_BUDGET: u64 = 1 << 24;

/// One precomputed cycle of picks and the position of the next request in it.
#[derive(Debug)]
pub struct Weighted {
    cycle: Box<[u32]>,
    next: AtomicUsize,
    weights: Box<[u32]>,
}

impl Weighted {
    /// Builds the cycle for these weights (each at least 1).
    pub fn new(weights: &[u32]) -> Weighted {
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w / divisor)).collect();
        let total: u64 = reduced.iter().sum();
        let cycle = if total.saturating_mul(reduced.len() as u64) <= SMOOTH_BUDGET {
            smooth_cycle(&reduced, total)
        } else {
            deadline_cycle(&reduced, total)
        };
        Weighted {
            cycle: cycle.into_boxed_slice(),
            next: AtomicUsize::new(0),
            weights: weights.into(),
        }
    }

    /// The next eligible member of the cycle; an ineligible member's turns are skipped, so the
    /// others keep their exact proportions.
    pub fn pick(&self, candidates: &impl Candidates) -> Option<usize> {
        if self.cycle.is_empty() || candidates.is_empty() {
            return None;
        }
        take_turns(
            &self.next,
            self.cycle.len(),
            self.cycle.len(),
            |turn| self.cycle[turn] as usize,
            |member| self.weights.get(member).copied().unwrap_or(1),
            candidates,
        )
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// nginx's smooth weighted round robin, run for one full cycle.
fn smooth_cycle(weights: &[u64], total: u64) -> Vec<u32> {
    let total = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (index, &weight) in weights.iter().enumerate() {
            current[index] += weight as i64;
            if current[index] > current[best] {
                best = index;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

/// Earliest-deadline order: member i's k-th pick is due at (2k + 1) / (2 × weight_i).
fn deadline_cycle(weights: &[u64], total: u64) -> Vec<u32> {
    // Deadlines are compared as fractions scaled by the product-free form
    // (2k + 1) × total / weight, exact in u128 for any realistic pool.
    let due = |picks: u64, weight: u64| ((2 * picks + 1) as u128 * total as u128) / weight as u128;
    let mut heap: BinaryHeap<Reverse<(u128, usize, u64)>> = weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| Reverse((due(0, weight), index, 0)))
        .collect();
    let mut cycle = Vec::with_capacity(total as usize);
    while let Some(Reverse((_, index, picks))) = heap.pop() {
        cycle.push(index as u32);
        if picks + 1 < weights[index] {
            heap.push(Reverse((due(picks + 1, weights[index]), index, picks + 1)));
        }
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::testing::{Members, tally};

    fn picks(weights: &[u32], count: usize) -> Vec<usize> {
        let balancer = Weighted::new(weights);
        let members = Members::all_up(weights.len());
        (0..count)
            .map(|_| balancer.pick(&members).unwrap())
            .collect()
    }

    #[test]
    fn matches_nginx_sequence() {
        // The sequence nginx documents for weights 5, 1, 1.
        assert_eq!(picks(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(picks(&[1, 3], 8), [1, 0, 1, 1, 1, 0, 1, 1]);
        assert_eq!(
            picks(&[2, 6], 4),
            [1, 0, 1, 1],
            "weights are reduced by their gcd"
        );
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(picks(&[4, 4, 4], 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn heavy_member_never_runs_four_in_a_row_at_one_to_three() {
        let sequence = picks(&[1, 3], 400);
        let longest = sequence
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert!(
            longest <= 3,
            "1:3 must interleave, longest run was {longest}"
        );
    }

    #[test]
    fn proportions_are_exact_per_cycle() {
        let weights = [3, 1, 2, 7];
        let balancer = Weighted::new(&weights);
        let members = Members::all_up(4);
        let counts = tally(13 * 10, &members, || balancer.pick(&members).unwrap());
        assert_eq!(counts, [30, 10, 20, 70]);
    }

    #[test]
    fn deadline_cycle_keeps_exact_proportions() {
        let weights = [3u64, 1, 2, 7];
        let cycle = deadline_cycle(&weights, 13);
        let mut counts = [0; 4];
        for &member in &cycle {
            counts[member as usize] += 1;
        }
        assert_eq!(counts, [3, 1, 2, 7]);
        assert_eq!(deadline_cycle(&[1, 3], 4), [1, 0, 1, 1]);
    }

    #[test]
    fn large_pool_uses_the_deadline_cycle_and_stays_proportional() {
        let weights: Vec<u32> = (0..2000).map(|i| 1 + (i % 997)).collect();
        let total: u32 = weights.iter().sum();
        let balancer = Weighted::new(&weights);
        assert_eq!(balancer.cycle.len(), total as usize);
        let mut counts = vec![0u32; weights.len()];
        for &member in balancer.cycle.iter() {
            counts[member as usize] += 1;
        }
        assert_eq!(counts, weights);
    }

    #[test]
    fn survivors_keep_their_proportions() {
        let balancer = Weighted::new(&[1, 3, 2]);
        let members = Members {
            down: vec![1],
            load: vec![0; 3],
        };
        let counts = tally(60, &members, || balancer.pick(&members).unwrap());
        assert_eq!(counts, [20, 0, 40], "1:2 between the two left");
    }

    #[test]
    fn equal_survivors_split_evenly_when_the_heavy_member_is_down() {
        for (weights, down, expected) in [
            (vec![5, 1, 1], 0, [0, 600, 600]),
            (vec![1, 1, 8], 2, [600, 600, 0]),
        ] {
            let balancer = Weighted::new(&weights);
            let members = Members {
                down: vec![down],
                load: vec![0; 3],
            };
            let counts = tally(1200, &members, || balancer.pick(&members).unwrap());
            assert_eq!(
                counts, expected,
                "weights {weights:?} with member {down} down"
            );
        }
    }

    #[test]
    fn long_runs_of_a_down_member_fall_back_to_proportional_draws() {
        let balancer = Weighted::new(&[1000, 1, 1]);
        let members = Members {
            down: vec![0],
            load: vec![0; 3],
        };
        let counts = tally(4000, &members, || balancer.pick(&members).unwrap());
        assert_eq!(counts[0], 0);
        assert!(
            (1700..=2300).contains(&counts[1]),
            "survivors split about evenly: {counts:?}"
        );
    }

    #[test]
    fn ineligible_member_passes_its_turn() {
        let balancer = Weighted::new(&[1, 3]);
        let members = Members {
            down: vec![1],
            load: vec![0; 2],
        };
        assert!((0..8).all(|_| balancer.pick(&members) == Some(0)));
    }
}
