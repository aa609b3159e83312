//! `random`: uniform, or proportional to weight when weights differ.
//!
//! Weighted draws use cumulative weights and a binary search, O(log n). An ineligible draw is
//! redrawn a few times, then one proportional draw among the eligible members (O(n)) settles it,
//! so a mostly-down pool still answers in bounded time and keeps its proportions.

use super::{Candidates, draw_eligible};

/// Draws before falling back to a scan.
const DRAWS: usize = 3;

/// Cumulative weights (empty when all weights are equal, for a plain uniform draw).
#[derive(Debug)]
pub struct Random {
    cumulative: Box<[u64]>,
}

impl Random {
    pub fn new(weights: &[u32]) -> Random {
        let uniform = weights.windows(2).all(|pair| pair[0] == pair[1]);
        let cumulative = if uniform {
            Box::default()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, &w| {
                    *sum += u64::from(w);
                    Some(*sum)
                })
                .collect()
        };
        Random { cumulative }
    }

    /// A random eligible member.
    pub fn pick(&self, candidates: &impl Candidates) -> Option<usize> {
        let len = candidates.len();
        if len == 0 {
            return None;
        }
        for _ in 0..DRAWS {
            let draw = self.draw(len);
            if candidates.is_eligible(draw) {
                return Some(draw);
            }
        }
        draw_eligible(candidates, |index| self.weight(index))
    }

    fn weight(&self, index: usize) -> u32 {
        match index {
            0 => self.cumulative.first().map_or(1, |&w| w as u32),
            _ => self
                .cumulative
                .get(index)
                .map_or(1, |&sum| (sum - self.cumulative[index - 1]) as u32),
        }
    }

    fn draw(&self, len: usize) -> usize {
        match self.cumulative.last() {
            Some(&total) if self.cumulative.len() == len => {
                let point = fastrand::u64(..total);
                self.cumulative.partition_point(|&sum| sum <= point)
            }
            _ => fastrand::usize(..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::testing::{Members, tally};

    #[test]
    fn uniform_spread_is_bounded() {
        let random = Random::new(&[1, 1, 1, 1]);
        let members = Members::all_up(4);
        let counts = tally(40_000, &members, || random.pick(&members).unwrap());
        for (index, &count) in counts.iter().enumerate() {
            assert!(
                (9_000..=11_000).contains(&count),
                "member {index} got {count} of 40000, expected about 10000"
            );
        }
    }

    #[test]
    fn weighted_spread_is_proportional() {
        let random = Random::new(&[1, 3]);
        let members = Members::all_up(2);
        let counts = tally(40_000, &members, || random.pick(&members).unwrap());
        assert!(
            (9_000..=11_000).contains(&counts[0]) && (29_000..=31_000).contains(&counts[1]),
            "1:3 weights gave {counts:?} of 40000"
        );
    }

    #[test]
    fn never_picks_an_ineligible_member() {
        let random = Random::new(&[1, 1, 1]);
        let members = Members {
            down: vec![0, 2],
            load: vec![0; 3],
        };
        assert!((0..1000).all(|_| random.pick(&members) == Some(1)));
    }
}
