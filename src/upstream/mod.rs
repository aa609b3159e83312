//! Upstreams: the backends a pool forwards to and the HTTP client that reaches them.
//!
//! - `backend.rs`: one backend's identity (address, weight) and live counters, with the RAII
//!   guard that counts a request in flight.
//! - `health.rs`: one backend's health state and the precedence of its inputs.
//! - `pool.rs`: primaries and backups, their balancer, ejection and fail-open; answers "which
//!   backend now".
//! - `checker.rs`: active health checks, one task per backend.
//! - `budget.rs`: the retry budget that keeps retries a bounded share of traffic.
//! - `client.rs`: the pooled keep-alive HTTP/1.1 client and how its failures are classified.
//!
//! This module does not route, rewrite headers or build responses: that is `proxy.rs`.

mod backend;
mod budget;
pub mod checker;
mod client;
mod connector;
pub mod health;
mod pool;

pub use backend::{Backend, InFlight};
pub use budget::RetryBudget;
pub use client::{Client, Failure, classify};
pub use pool::{Policy, Pool, Role};
