//! `least_connections`: the member with the fewest requests in flight relative to its weight.
//!
//! Loads are compared as `in_flight / weight` by cross-multiplying, so no division and no float.
//! The scan starts at a rotating offset and keeps the first strict minimum, so members that tie
//! (an idle pool, most commonly) take turns instead of the first one taking everything.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Candidates;

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

    /// The eligible member with the lowest `in_flight / weight`; ties rotate.
    pub fn pick(&self, candidates: &impl Candidates) -> Option<usize> {
        let len = candidates.len().min(self.weights.len());
        if len == 0 {
            return None;
        }
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
    use crate::balance::testing::Members;

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
    fn skips_ineligible_even_when_idle() {
        let lc = LeastConnections::new(&[1, 1]);
        let members = Members {
            down: vec![0],
            load: vec![0, 9],
        };
        assert_eq!(lc.pick(&members), Some(1));
    }
}
