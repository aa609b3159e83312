//! Upstreams: the backends a pool forwards to, how one is chosen, and the HTTP client that reaches
//! them.
//!
//! - `balance/`: the selection strategies, pure and synchronous, one file each.
//! - `affinity.rs`: a request's consistent-hash key, and the sticky-session cookie read and set.
//! - `backend.rs`: one backend's identity (address, weight) and live counters, with the RAII
//!   guard that counts a request in flight.
//! - `health.rs`: one backend's health state and the precedence of its inputs.
//! - `pool.rs`: primaries and backups, their balancer, ejection and fail-open; answers "which
//!   backend now".
//! - `checker.rs`: active health checks, one task per backend.
//! - `tier.rs`: one role's backends and their balancer.
//! - `transitions.rs`: each backend state change reported once, as an event and a count.
//! - `budget.rs`: the retry budget that keeps retries a bounded share of traffic.
//! - `connections.rs`: a backend's idle keep-alive connections, and making new ones.
//! - `tls.rs`: TLS to `https://` backends, verified against web PKI roots plus the pool's `ca`.
//! - `plain.rs`: bodyless requests to plain-HTTP/1.1 backends, exchanged by the request's own
//!   task instead of a hyper connection task.
//! - `client.rs`: getting a ready connection (pooled or new), and what failures mean.
//! - `relayed.rs`: a backend's response body, relayed, recycling its connection when read whole.
//!
//! This module does not route, rewrite headers or build responses: that is `proxy/`.

pub mod affinity;
mod backend;
pub mod balance;
mod budget;
pub mod checker;
mod client;
pub mod connections;
pub mod health;
mod plain;
mod pool;
mod relayed;
mod sender;
mod tier;
pub mod tls;
pub mod transitions;

pub use backend::{Backend, InFlight};
pub use budget::RetryBudget;
pub use client::{Client, Failure, classify, describe_io, innermost};
pub use connections::Sender;
pub use plain::{PlainBody, PlainError};
pub use pool::{Policy, Pool, Role};
pub use relayed::{Relayed, UpstreamBody};
pub use sender::for_http2;
