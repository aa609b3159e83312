//! Lock-free series for the request path: counters by status code and latency histograms.
//!
//! Recording is a few relaxed atomic adds: no lock, no allocation (after a status class is first
//! seen) and no label lookup, because each backend owns its series (resolved when the backend is
//! made, carried across reloads with it). Reading happens at scrape time only, and may see a
//! request half-recorded (its bucket but not yet its sum): Prometheus tolerates that, and the
//! next scrape is whole.
//!
//! prometheus-client's own `Histogram` takes a lock on every observation, hence these.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: from half a millisecond (a proxy hop on a
/// LAN) to a minute (a slow upload).
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The same bounds in nanoseconds, for the comparison on the request path.
const BOUNDS_NS: [u64; 16] = {
    let mut bounds = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        bounds[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    bounds
};

/// A latency histogram with fixed buckets ([`BUCKETS`] and `+Inf`).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram as read at one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, count in that bucket alone)`, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Its buckets, count and sum now; the count is the buckets' total, so the two always agree.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, count)| count).sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

/// Responses counted by status code. Codes are 100 to 999 (hyper accepts no others); a table of
/// 100 counters is made for a hundred (2xx, 4xx...) the first time one of its codes is seen.
#[derive(Debug, Default)]
pub struct StatusCounts {
    hundreds: [OnceLock<Box<[AtomicU64; 100]>>; 9],
}

impl StatusCounts {
    pub fn add(&self, code: u16) {
        let code = code.clamp(100, 999);
        let hundred = usize::from(code / 100 - 1);
        let table = self.hundreds[hundred]
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        table[usize::from(code % 100)].fetch_add(1, Ordering::Relaxed);
    }

    /// Every code seen, with its count, in ascending order.
    pub fn seen(&self) -> Vec<(u16, u64)> {
        let mut seen = Vec::new();
        for (hundred, table) in self.hundreds.iter().enumerate() {
            let Some(table) = table.get() else { continue };
            for (unit, count) in table.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    seen.push(((hundred as u16 + 1) * 100 + unit as u16, count));
                }
            }
        }
        seen
    }
}

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound_inclusive() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_micros(501));
        histogram.observe(Duration::from_secs(120));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(
            snapshot.buckets[0],
            (0.0005, 1),
            "500us is within le=0.0005"
        );
        assert_eq!(snapshot.buckets[1], (0.001, 1));
        assert_eq!(snapshot.buckets[16], (f64::INFINITY, 1));
        assert!((snapshot.sum_seconds - 120.001001).abs() < 1e-9);
    }

    #[test]
    fn status_counts_are_exact_per_code() {
        let counts = StatusCounts::default();
        for _ in 0..50 {
            counts.add(200);
        }
        counts.add(503);
        counts.add(503);
        counts.add(999);
        assert_eq!(counts.seen(), [(200, 50), (503, 2), (999, 1)]);
    }
}
