//! `round_robin`: strict rotation over the members in order, ignoring weights.

use std::sync::atomic::AtomicUsize;

use super::{Candidates, take_turns};

/// Rotation counter shared by every request to the pool.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

impl RoundRobin {
    pub fn new() -> RoundRobin {
        RoundRobin::default()
    }

    /// The next eligible member in rotation; an ineligible member's turn is skipped.
    pub fn pick(&self, candidates: &impl Candidates) -> Option<usize> {
        let len = candidates.len();
        if len == 0 {
            return None;
        }
        take_turns(&self.0, len, len + 1, |turn| turn, |_| 1, candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::testing::Members;

    #[test]
    fn rotates_in_order() {
        let rr = RoundRobin::new();
        let members = Members::all_up(3);
        let picks: Vec<_> = (0..7).map(|_| rr.pick(&members).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn skips_ineligible_members() {
        let rr = RoundRobin::new();
        let members = Members {
            down: vec![1],
            load: vec![0; 3],
        };
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&members).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2], "the survivors keep equal shares");
    }

    #[test]
    fn empty_pool_picks_nothing() {
        assert_eq!(RoundRobin::new().pick(&Members::all_up(0)), None);
    }
}
