//! Fulcrum: a layer-7 load-balancing reverse proxy.
//!
//! # Layout
//! The top-level modules are layers: each uses only those listed before it, so no two use each
//! other (`.ci/layers.sh` checks it).
//! - Leaves, which use nothing else in the crate:
//!   - `clock.rs`: the millisecond clock behind ejection deadlines and the retry budget.
//!   - `arena.rs`: per-thread chunks that a request's small byte strings are copied into.
//!   - `names.rs`: header names parsed from the wire, remembered per thread by their bytes.
//!   - `pause.rs`: waits without progress against a limit: a client not reading, a backend not
//!     sending.
//!   - `path.rs`: the path routes match (normalized as nginx matches locations), `%XX` escapes.
//! 1. `config/`: the TOML file to a checked [`Config`]; errors name file, line and key.
//!    The value types a config holds (strategy, host pattern, affinity settings, certificates)
//!    are config's too.
//! 2. `telemetry/`: `metrics/`, lock-free counts on the request path, and `access/`, the access
//!    log, a line per request, written off the request path.
//! 3. `body/`: the request body, streamed without buffering: as read from the client (counted,
//!    limited, timed, trailers screened) and as sent to a backend (kept for replay).
//! 4. `upstream/`: backends with their live counters and health, pools, `balance/` (the
//!    selection strategies, pure and synchronous, one file each), `affinity.rs` (consistent-hash
//!    keys, sticky-session cookies), and the pooled HTTP client (hyper's, and `plain.rs`, the
//!    HTTP/1.1 exchange a bodyless request drives in its own task).
//! 5. `proxy/`: the request path (below), retries included: the snapshot a request is served
//!    from (`state.rs`), screening, routing, header rewriting, attempts, upgrades, the one map
//!    from error to status (`error.rs`), and the watch on a client connection (`guard.rs`) that
//!    each request is counted on.
//! 6. `downstream/`: listeners (changed on reload), admission, TLS termination (`tls/`: the
//!    rustls `ServerConfig`, certificates chosen by SNI), HTTP/1.1 + HTTP/2 connections,
//!    graceful drain; `downstream/h1/` is Fulcrum's own HTTP/1.1 connection for the common
//!    request on plain listeners (idle connections parked without a task), hyper's for
//!    everything else.
//! 7. `control/`: the one place that changes the running proxy ([`Control`]): reloads, runtime
//!    registrations (`registry.rs`: the admin API's overlay, leases, persistence), reloading when
//!    the config file changes (`watch.rs`), and the admin API (`admin/`: JSON over HTTP, and
//!    `GET /metrics`, the Prometheus exposition).
//! 8. `app.rs`: a whole running proxy assembled from a config ([`App`], what the binary starts).
//!
//! The modules are private to the crate. What the binary, the integration tests and the examples
//! use is re-exported here: [`App`] and its [`Options`], [`Config`], [`Control`], and the types
//! their methods return. `bench` is for the criterion benches alone.
//!
//! # The life of one request
//! 1. `downstream/` accepts the connection and hands each request to `Proxy::handle`.
//! 2. The proxy loads the current snapshot once; the request sees that config to the end.
//! 3. The first route matching host and path names a pool; the pool's balancer picks a backend.
//! 4. The backend's in-flight count goes up (an RAII guard), headers are rewritten, and the
//!    request is sent on a pooled keep-alive connection (a plain one, driven by the request's
//!    own task, for a request without a body to a plain-HTTP/1.1 backend; hyper's otherwise).
//! 5. The response head is relayed and its body streamed; the guard drops with the body.
//! 6. Any failure becomes a `ProxyError`: logged once with pool and backend, answered with its
//!    status and a one-line reason.

#![forbid(unsafe_code)]

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
mod telemetry;
mod upstream;

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

/// What the criterion benches (`benches/pick.rs`, `benches/snapshot.rs`) measure, reachable from
/// outside the crate. It exists for the benches only and is not API.
#[doc(hidden)]
pub mod bench {
    pub use crate::config::{Outlier, Strategy};
    pub use crate::proxy::state::State;
    pub use crate::upstream::balance::stable_hash;
    pub use crate::upstream::{Backend, Policy, Pool};
}
