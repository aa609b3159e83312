//! Telemetry: what the proxy counts and logs about the traffic it serves, on the request path
//! without a lock and without waiting.
//!
//! - `metrics/`: lock-free counters, status-code series and latency histograms, and the counts
//!   each owner keeps (backend, pool, the unrouted).
//! - `access/`: the access log, a line per request, written by a thread of its own.
//!
//! It owns the counting and the writing, and uses only config and the leaves. It does not read
//! the counts out: `GET /metrics` (the admin API's `exposition.rs`) walks the snapshot at scrape
//! time. Nor does it wrap responses: the body that finishes a request's log entry is the
//! proxy's (`proxy/logged.rs`).

pub mod access;
pub mod metrics;
