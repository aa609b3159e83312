//! Metrics: what is counted, how it is counted without a lock, and the Prometheus exposition.
//!
//! - `series.rs`: lock-free counters by status code and latency histograms.
//! - `stats.rs`: the counts each owner keeps (backend, pool, the unrouted).
//! - `exposition.rs`: `GET /metrics` on the admin listener: every series read from the live
//!   objects at scrape time and encoded by prometheus-client (Prometheus text format 0.0.4).
//!
//! Nothing is registered ahead: a scrape walks the current snapshot, so a backend removed by a
//! reload disappears from the output with it, and one added appears with zero counts.

mod exposition;
mod series;
mod stats;

pub use exposition::{CONTENT_TYPE, Process, render};
pub use series::{BUCKETS, Counter, Histogram, HistogramSnapshot, StatusCounts};
pub use stats::{BackendStats, Outcomes, PoolStats, RetryReason};
