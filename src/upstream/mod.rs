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
//! - `overload/`: per-backend limits, the pool's priority queue and shedding.
//! - `checker.rs`: active health checks, one task per backend.
//! - `tier.rs`: one role's backends and their balancer.
//! - `transitions.rs`: each backend state change reported once, as an event and a count.
//! - `budget.rs`: the retry budget that keeps retries a bounded share of traffic.
//! - `exchange.rs`: one exchange with one backend, whatever protocol it speaks: the interface
//!   attempts go through, and health probes.
//! - `h1/`: HTTP/1.1 to backends, Fulcrum's own client on the codec (`http1/`).
//! - `h2.rs`: HTTP/2 to backends, hyper's client.
//! - `connections.rs`: a backend's idle HTTP/1.1 connections (and each pool's sweeper of them)
//!   and shared HTTP/2 one, and opening new ones (TCP, then TLS).
//! - `stream.rs`: a backend connection's bytes, plain or TLS.
//! - `tls.rs`: TLS to `https://` backends, verified against web PKI roots plus the pool's `ca`.
//! - `head.rs`: a request's head kept for a retry, and which methods may be sent twice.
//! - `client.rs`: the connect timeout, and what failures mean.
//! - `relayed.rs`: a backend's response body, relayed, recycling its connection when read whole.
//!
//! This module does not route, rewrite headers or build responses: that is `proxy/`.

pub mod affinity;
mod backend;
pub mod balance;
mod budget;
pub mod checker;
mod client;
mod connections;
pub mod exchange;
pub(crate) mod h1;
mod h2;
pub mod head;
pub mod health;
pub mod overload;
mod pool;
mod relayed;
mod stream;
mod tier;
pub mod tls;
pub mod transitions;

pub use backend::{Backend, InFlight};
pub use budget::RetryBudget;
pub use client::{Client, Failure, classify, describe_io, innermost};
pub(crate) use connections::sweep as sweep_idle;
pub use pool::{Policy, Pool, Role};
pub(crate) use relayed::{Relayed, UpstreamBody};
