//! Metrics: what is counted, and how it is counted without a lock.
//!
//! - `series.rs`: lock-free counters by status code and latency histograms.
//! - `stats.rs`: the counts each owner keeps (backend, pool, the unrouted), and the label values
//!   they are counted by (a backend's state, a retry's reason).
//!
//! Nothing is registered ahead: a scrape (`GET /metrics`, the admin API's `exposition.rs`) walks
//! the current snapshot, so a backend removed by a reload disappears from the output with it,
//! and one added appears with zero counts.

mod series;
mod stats;

pub use series::{Counter, Histogram, HistogramSnapshot};
pub use stats::{BackendState, BackendStats, Outcomes, PoolStats, RetryReason};
