//! Upstreams: the backends a pool forwards to and the HTTP client that reaches them.
//!
//! - `backend.rs`: one backend's identity (address, weight) and live counters, with the RAII
//!   guard that counts a request in flight.
//! - `pool.rs`: a named set of backends and its balancer; answers "which backend now".
//! - `client.rs`: the pooled keep-alive HTTP/1.1 client and how its failures are classified.
//!
//! This module does not route, rewrite headers or build responses: that is `proxy.rs`.

mod backend;
mod client;
mod pool;

pub use backend::{Backend, InFlight};
pub use client::{Client, Failure, build_client, classify};
pub use pool::Pool;
