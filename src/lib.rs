//! Fulcrum: a layer-7 load-balancing reverse proxy.
//!
//! # The life of one request
//! Eight files, in the order a request meets them:
//! 1. `downstream/h1/mod.rs`: the connection is accepted (a TLS one after its handshake) and
//!    parked; when bytes arrive a task reads a head with the codec (`http1/head.rs`), however TCP
//!    split it.
//! 2. `downstream/h1/exchange.rs`: the request is made (its body whole when it came with the
//!    head, else read on demand) and handed to the proxy through its `tower::Service`.
//! 3. `proxy/mod.rs`: the current snapshot is loaded once (the request sees that config to the
//!    end); the request is screened, and counted and logged whatever becomes of it. The first
//!    route matching it (`proxy/dispatch.rs`) checks its rate limit, then answers a redirect or
//!    respond itself, or names a pool (one of a split's).
//! 4. `proxy/forward.rs`: the pool's balancer picks a backend (with `[pool.NAME.overload]`
//!    limits, one with a free slot, or the request waits its turn in the pool's queue:
//!    `upstream/overload/gate.rs`); the head is rewritten; attempts are made and retried by the
//!    pool's (or route's) rules; a mirror copy leaves on its own task.
//! 5. `upstream/exchange.rs`: one attempt, whatever the backend speaks; the backend's in-flight
//!    count goes up (an RAII guard that ends with the response body).
//! 6. `upstream/h1/connection.rs`: on a pooled (or new) connection the head and what of the body
//!    is ready leave in one write; the response head is read with the codec.
//! 7. `upstream/h1/body.rs`: the response body is read as the client takes it; the connection
//!    goes back to its backend once read whole.
//! 8. `downstream/h1/write.rs`: the response is written, head and ready body in one write, the
//!    rest framed as it comes. Any failure on the way became a `ProxyError` (`proxy/error.rs`):
//!    logged once with pool and backend, answered with its status and a one-line reason.
//!
//! An HTTP/2 connection (ALPN `h2`, or prior knowledge) is hyper's server's
//! (`downstream/connection.rs`) in step 1; a pool with `protocol = "http2"` is spoken to by
//! hyper's client (`upstream/h2.rs`) in steps 6 and 7. Everything else is the same.
//!
//! # Layout
//! The top-level modules are layers: each uses only those listed before it, so no two use each
//! other (`.ci/layers.sh` checks it).
//! - Leaves, which use nothing else in the crate:
//!   - `allocator.rs`: the binary's global allocator ([`Allocator`]): glibc's, with a per-thread
//!     cache of the blocks it is slow to serve (over-aligned, or above 1,032 bytes).
//!   - `clock.rs`: the millisecond clock behind ejection deadlines and the retry budget.
//!   - `arena.rs`: per-thread chunks that a request's small byte strings are copied into.
//!   - `names.rs`: header names parsed from the wire, remembered per thread by their bytes.
//!   - `pause.rs`: waits without progress against a limit: a client not reading, a backend not
//!     sending.
//!   - `path.rs`: the path routes match (normalized as nginx matches locations), `%XX` escapes.
//!   - `stream.rs`: a connection's bytes, plain TCP or TLS, for client and backend alike; bytes
//!     already read put back in front of a stream handed on.
//! 1. `http1/`: HTTP/1.1 as bytes, the one codec both sides use, with no I/O.
//! 2. `config/`: the TOML file to a checked [`Config`]; errors name file, line and key.
//!    The value types a config holds (strategy, host pattern, affinity settings, certificates)
//!    are config's too.
//! 3. `telemetry/`: `metrics/`, lock-free counts on the request path, and `access/`, the access
//!    log, a line per request, written off the request path.
//! 4. `body/`: the request body, streamed without buffering: as a server hands it over, as the
//!    proxy reads it (counted, limited, timed, trailers screened) and as sent to a backend (kept
//!    for replay); the client's connection after a `101`.
//! 5. `upstream/`: backends with their live counters and health, pools, `balance/` (the
//!    selection strategies, pure and synchronous, one file each), `affinity.rs` (consistent-hash
//!    keys, sticky-session cookies), `overload/` (per-backend limits and each pool's priority
//!    queue), and the clients behind one exchange interface: Fulcrum's for
//!    HTTP/1.1 (`h1/`), hyper's for HTTP/2 (`h2.rs`).
//! 6. `proxy/`: the request path, retries included: [`Proxy`], the `tower::Service` servers call
//!    (`service.rs`), the snapshot a request is served from (`state.rs`), screening, routing,
//!    header rewriting, upgrades, the one map from error to status (`error.rs`), and the watch on
//!    an HTTP/2 connection (`guard.rs`) that each request on it is counted on.
//! 7. `downstream/`: listeners (changed on reload), admission, TLS termination (`tls/`: the
//!    rustls `ServerConfig`, certificates chosen by SNI), Fulcrum's HTTP/1 server (`h1/`) for
//!    plain and TLS listeners, hyper's HTTP/2 server, graceful drain.
//! 8. `control/`: the one place that changes the running proxy ([`Control`]): reloads, runtime
//!    registrations (`registry.rs`: the admin API's overlay, leases, persistence), backends found
//!    in DNS (`discovery/`), registrations shared through etcd (`etcd/`), reloading when
//!    the config file changes (`watch.rs`), and the admin API (`admin/`: JSON over HTTP, and
//!    `GET /metrics`, the Prometheus exposition).
//! 9. `app.rs`: a whole running proxy assembled from a config ([`App`], what the binary starts).
//!
//! The modules are private to the crate. What the binary, the integration tests and the examples
//! use is re-exported here: [`App`] and its [`Options`], [`Config`], [`Control`], [`Proxy`] with
//! [`Peer`] and [`ResponseBody`], the types their methods return, and the binary's
//! [`Allocator`]. `bench` is for the criterion benches alone, `fuzz_http1` for the fuzz target.

// Unsafe code only where a measured win needs it, each use allowed where it is, with its SAFETY
// notes: one function, `http1::head::value`, and one module, `allocator` (README, "What pays").
#![deny(unsafe_code)]

mod allocator;
mod app;
mod arena;
mod body;
mod clock;
mod config;
mod control;
mod downstream;
mod http1;
mod names;
mod path;
mod pause;
mod proxy;
mod stream;
mod telemetry;
mod upstream;

pub use allocator::Allocator;
pub use app::{App, Options, StartError};
pub use config::{Config, ConfigError};
pub use control::{ConfigStatus, Control, ReloadError};
pub use proxy::{Peer, Proxy, ResponseBody};

/// Runs arbitrary bytes through the HTTP/1 codec's readers, checking what must hold whatever
/// they are (`http1/exercise.rs`): the fuzz target's body (`fuzz/`). Not API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_http1(data: &[u8]) {
    let split = data.first().map_or(1, |&byte| usize::from(byte) % 64 + 1);
    http1::exercise::exercise(data, split);
}

/// What the criterion benches (`benches/pick.rs`, `benches/snapshot.rs`, `benches/shed.rs`,
/// `benches/routing.rs`)
/// measure, reachable from outside the crate. It exists for the benches only and is not API.
#[doc(hidden)]
pub mod bench {
    pub use crate::config::{Priority, Strategy};
    pub use crate::proxy::route::Asked;
    pub use crate::proxy::state::State;
    pub use crate::upstream::balance::stable_hash;
    pub use crate::upstream::overload::{Refused, ShedReason, Want};
    pub use crate::upstream::{Backend, Policy, Pool};
}
