//! The access log: one line per completed request, written by a thread of its own.
//!
//! - `entry.rs`: what a line says, and its two formats (JSON, NCSA common).
//! - `writer.rs`: the writer thread, its bounded queue, and reopening for log rotation.
//!
//! The response body that finishes a request's entry when it ends is the proxy's
//! (`proxy/logged.rs`).
//!
//! The request path formats its line (a few hundred bytes) and hands it to the queue without
//! waiting: a slow disk never holds a request, and when the queue is full the line is dropped
//! and counted (`fulcrum_access_log_dropped_total`) rather than blocking. Operational logs
//! (tracing, on stderr) are separate.

mod entry;
mod writer;

pub use entry::Entry;
pub use writer::{AccessLog, Sinks};
