//! Fulcrum: a layer-7 load-balancing reverse proxy.
//!
//! # Layout
//! - `config/`: the TOML file to a checked [`config::Config`]; errors name file, line and key.
//!   The value types a config holds (strategy, host pattern, affinity settings, certificates)
//!   are config's too, so that config uses nothing above it.
//! - `upstream/`: backends with their live counters, pools, and the pooled HTTP client (hyper's,
//!   and `plain.rs`, the HTTP/1.1 exchange a bodyless request drives in its own task);
//!   `balance/`, the selection strategies, pure and synchronous, one file each; `affinity.rs`,
//!   consistent-hash keys and sticky-session cookies.
//! - `proxy/`: the request path (below), retries included: the snapshot a request is served from
//!   (`state.rs`), screening, routing, header rewriting, attempts, upgrades, the one map from
//!   error to status (`error.rs`), and the watch on a client connection (`guard.rs`) that each
//!   request is counted on.
//! - `body/`: the request body, streamed without buffering: as read from the client (counted,
//!   limited, timed, trailers screened) and as sent to a backend (kept for replay).
//! - `arena.rs`: per-thread chunks that a request's small byte strings are copied into.
//! - `names.rs`: header names parsed from the wire, remembered per thread by their bytes.
//! - `clock.rs`: the millisecond clock behind ejection deadlines and the retry budget.
//! - `path.rs`: the path routes match (normalized as nginx matches locations), `%XX` escapes.
//! - `pause.rs`: waits without progress against a limit: a client not reading, a backend not sending.
//! - `downstream/`: listeners (changed on reload), admission, TLS termination (`tls/`: the
//!   rustls `ServerConfig`, certificates chosen by SNI), HTTP/1.1 + HTTP/2 connections, graceful
//!   drain; `downstream/h1/` is Fulcrum's own HTTP/1.1 connection for the common request on plain
//!   listeners (idle connections parked without a task), hyper's for everything else.
//! - `app.rs`: a whole running proxy assembled from a config (what the binary starts).
//! - `control.rs`: the one place that changes the running proxy: reloads and registrations.
//! - `watch.rs`: reload when the config file changes.
//! - `registry.rs`: runtime registrations (the admin API's overlay), leases, persistence.
//! - `admin/`: the admin API (JSON over HTTP) and `GET /metrics`, the Prometheus exposition.
//! - `telemetry/`: `metrics/`, lock-free counts on the request path, and `access/`, the access
//!   log, a line per request, written off the request path.
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

pub mod admin;
pub mod app;
pub mod arena;
pub mod body;
pub mod clock;
pub mod config;
pub mod control;
pub mod downstream;
pub mod names;
pub mod path;
pub mod pause;
pub mod proxy;
pub mod registry;
pub mod telemetry;
pub mod upstream;
pub mod watch;
