//! The request path: route, pick, rewrite, forward with retries, relay, and turn failures into
//! answers.
//!
//! Life of a request: load the snapshot once → find the route (`dispatch.rs`), check its rate
//! limit, and answer a redirect or respond there, or choose its pool → rewrite the head once → the pool picks an available backend → count it in flight → one attempt
//! (`upstream/exchange.rs`) → relay the response head and stream its body, the in-flight count ending with
//! the body. A failed attempt is retried on a backend not yet tried when the retry rules below
//! allow it; otherwise it is a [`ProxyError`], logged once here with pool and backend.
//!
//! # Retries
//! - A request that never reached a backend (connect refused or timed out, or a pooled connection
//!   found closed before writing) is retried whatever its method.
//! - One that was sent and then failed (reset, closed, response timeout) is retried only for
//!   idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and only when its body can be
//!   replayed (no body, or one that fit in `REPLAY_LIMIT`, `body/request.rs`).
//! - Once a response head has arrived nothing is retried: the response is the client's.
//! - At most `retries` extra attempts, each on a backend not tried yet. Retries of requests that
//!   may have reached a backend also need the pool's retry budget (`upstream/budget.rs`).
//!
//! # Layout
//! - `mod.rs`: [`Proxy::handle`]: screening, metrics, the access log entry, the request span.
//! - `state.rs`: [`state::State`], the immutable snapshot (routes → pools → backends) that a
//!   request is served from, held in an `ArcSwap`.
//! - `screen.rs`: what is refused before anything is forwarded (framing, Host, methods, loops).
//! - `client_ip.rs`: who the client is (the peer, or behind `trusted_proxies` the address its
//!   `X-Forwarded-For` names).
//! - `dispatch.rs`: from a request to its route, the route's rate limit, and its target: a
//!   pool, a split's pool, or a redirect or respond answered there.
//! - `route.rs`: a route as the snapshot holds it, and its matching (first match wins).
//! - `route_table.rs`: the routes indexed by host, so a request reads only those that could
//!   take it.
//! - `split.rs`: a route's weighted choice among pools, sticky when the pools are.
//! - `rate_limit.rs`: a route's requests per client (GCRA over a bounded store).
//! - `mirror.rs`: copies of a route's requests sent to a shadow pool, bounded, answers dropped.
//! - `header_rules.rs`: a route's `request_headers` and `response_headers`, templates filled in.
//! - `rewrite.rs`: a route's `strip_prefix` or `rewrite` of the path.
//! - `priority.rs`: a request's priority, from its route and its priority header.
//! - `forward.rs`: routing, picking, attempts and retries, relaying (upgrades included).
//! - `target.rs`: the head as the backend receives it.
//! - `headers.rs`: hop-by-hop removal and forwarding headers.
//! - `request_id.rs`: `X-Request-Id`, kept or made, sent both ways.
//! - `tunnel.rs`: WebSocket and other upgrades, bridged after the backend's 101.
//! - `error.rs`: [`ProxyError`], one variant per failure, one status each.
//! - `answer.rs`: the answers the proxy writes itself.
//! - `body.rs`: [`ProxyBody`], the response body: the backend's, relayed, or the proxy's own.
//! - `logged.rs`: the response body sent to the client, which finishes the access log entry and
//!   the request's activity on its connection when it ends.
//! - `service.rs`: [`Proxy`] as a `tower::Service`, what every server calls.
//! - `guard.rs`: an HTTP/2 client connection's socket, watched for the timers hyper's server
//!   does not keep. It is here, not with the listeners, because each request on it is counted
//!   on the connection's watch ([`guard::Watch`], [`guard::Active`]), while the server calls
//!   the proxy.
//!
//! Not here: accepting connections and speaking HTTP to clients (`downstream/`), and backends,
//! their selection and the client that reaches them (`upstream/`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::body::ClientBody;
use http::{HeaderValue, Method, Request, Response, Version, header};
use hyper::body::Body;
use tokio::sync::oneshot;
use tracing::field::Empty;
use tracing::{Instrument, Span, debug_span};

use crate::clock;
use crate::config::{Limits, Priority, Timeouts};
use crate::telemetry::access::{AccessLog, Entry};
use crate::telemetry::metrics::Outcomes;
use crate::upstream::{Backend, Pool};

mod answer;
mod body;
mod client_ip;
mod dispatch;
mod error;
mod forward;
pub mod guard;
mod header_rules;
mod headers;
mod logged;
mod mirror;
mod priority;
mod rate_limit;
mod request_id;
mod rewrite;
pub mod route;
mod route_table;
mod screen;
mod service;
mod split;
pub mod state;
mod target;
mod tunnel;

pub(crate) use body::ProxyBody;
pub use logged::Logged;
pub(crate) use service::Watched;
pub use service::{Peer, ResponseBody};

use answer::{error_response, local_response, redirect_response};
use client_ip::ClientAddr;
use dispatch::{Routed, dispatch};
use error::ProxyError;
use forward::{Forwarding, forward};
use guard::Watch;
use state::{SharedState, State};
use tunnel::Tunnels;

/// The proxy service: one per server, shared by every connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: SharedState,
    /// The port plain-HTTP requests are redirected to with `redirect_https`: the first TLS
    /// listener's, as bound (443 without one).
    https_port: Arc<AtomicU16>,
    /// Open upgraded connections (WebSockets).
    tunnels: Arc<Tunnels>,
}

impl Proxy {
    pub(crate) fn new(state: SharedState) -> Proxy {
        Proxy {
            state,
            https_port: Arc::new(AtomicU16::new(443)),
            tunnels: Arc::default(),
        }
    }

    /// The open tunnels, for shutdown to wait on.
    pub(crate) fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// Where `redirect_https` sends clients.
    pub(crate) fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
    }

    /// The limits and timeouts in force, for a new connection.
    pub(crate) fn settings(&self) -> (Limits, Timeouts) {
        let state = self.state.load();
        (*state.limits(), *state.timeouts())
    }

    /// Counts and logs a request refused before it could be made: a head the server could not
    /// read (400, 414, 431, 505), or the 408 to a head that did not arrive within
    /// `request_header` (`took`), so probes and slow clients show in the access log and in
    /// `fulcrum_requests_total{pool="",backend=""}` as nginx logs them. `sent`: the answer's
    /// body bytes.
    pub(crate) fn refused(&self, peer: SocketAddr, status: u16, sent: u64, took: Duration) {
        let state = self.state.load();
        state.unrouted().record(status, took);
        if let Some(log) = state.access_log() {
            log.write(Entry::refused(peer, status, sent, took).line(log.format()));
        }
    }

    /// Serves one request from `peer`, on the connection `watch` follows (hyper's connections;
    /// Fulcrum's own keeps its own time); never fails, since every error becomes a response.
    ///
    /// Owns what it uses, so that its future is the one [`Service::call`] boxes: a wrapper
    /// around it would copy the large future once more. Not an `async fn`: one stores each
    /// argument twice in its future (once as passed, once as the body's own variable), and the
    /// request alone is 264 bytes; an `async move` block uses what it captures in place.
    ///
    /// The request path's futures are written this way throughout, and keep what they need only
    /// before their first await out of the block: a future keeps room for all it captures until
    /// it ends, so what is spent up front (the request, the head made from it) is made ready
    /// before the block and not carried, and copied with the future, to the end.
    ///
    /// [`Service::call`]: tower_service::Service::call
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn handle(
        self,
        mut request: Request<ClientBody>,
        peer: SocketAddr,
        tls: bool,
        watch: Option<Arc<Watch>>,
    ) -> impl Future<Output = Result<Response<Logged>, Infallible>> + Send {
        async move {
            let active = watch.as_ref().map(Watch::start);
            let started = clock::now().into_std();
            let state = self.state.load_full();
            let http10 = request.version() == Version::HTTP_10;
            let head = request.method() == Method::HEAD;
            let id = request_id::ensure(request.headers_mut());
            let client = ClientAddr::resolve(state.trusted_proxies(), peer, tls, request.headers());
            // At debug level: every event of the request carries its id, pool and backend.
            let span = debug_span!(
                "request",
                id = id.to_str().unwrap_or(""),
                pool = Empty,
                backend = Empty
            );
            // Counted and logged even if the client goes away before the answer (as 499).
            let mut pending = Pending {
                state: &state,
                started,
                entry: state
                    .access_log()
                    .map(|_| Box::new(Entry::begin(&request, client.socket(), &id, started))),
                trail: Trail {
                    pool: None,
                    backend: None,
                    attempts: 0,
                    priority: Priority::default(),
                    queued: None,
                    upstream_time: None,
                    waiting_since: None,
                    log_later: None,
                    span: span.clone(),
                },
                answered: false,
            };
            let received = pending.entry.as_ref().map(|e| Arc::clone(e.received()));
            let routed = self.route(&state, &request, &client, &id);
            let mut response = match routed {
                Err(answered) => *answered,
                Ok(forwarding) => {
                    let deadline = forwarding.deadline(&state);
                    // Pinned where it is made and awaited through the pin: awaiting it by value
                    // would copy the large future once more.
                    let mut forwarding = pin!(forward(
                        &state,
                        forwarding,
                        request,
                        &client,
                        received,
                        &self.tunnels,
                        &mut pending.trail,
                    ));
                    // A disabled span (debug off, the usual case) is not worth wrapping.
                    let forwarded = match (deadline, span.is_disabled()) {
                        (None, true) => forwarding.as_mut().await,
                        (None, false) => forwarding.instrument(span).await,
                        (Some(after), _) => {
                            tokio::time::timeout(after, forwarding.instrument(span))
                                .await
                                .unwrap_or(Err(ProxyError::Deadline { after }))
                        }
                    };
                    match forwarded {
                        Ok(response) => response,
                        Err(error) => error_response(&error, &id),
                    }
                }
            };
            let entry = pending.answer(response.status().as_u16());
            response.headers_mut().insert(request_id::X_REQUEST_ID, id);
            if http10 {
                close_if_unsized(&mut response);
            }
            if head {
                leave_out_body(&mut response);
            }
            let mut log = entry.zip(state.access_log().cloned());
            if let Some(tunnel) = pending.trail.log_later.take() {
                // A 101: its tunnel writes the line when it closes.
                if let Some(entry) = log.take() {
                    tunnel.send(entry).ok();
                }
            }
            Ok(response.map(|body| Logged::new(body, log, active)))
        }
    }

    /// Where `request` goes: the proxy's own answer (a refusal, a redirect, a route's answer or
    /// error), boxed as the exception it is so that the request's future does not carry its
    /// room; or the pool that forwards it.
    fn route<'s>(
        &self,
        state: &'s State,
        request: &Request<ClientBody>,
        client: &ClientAddr,
        id: &HeaderValue,
    ) -> Result<Forwarding<'s>, Box<Response<ProxyBody>>> {
        if let Some(local) = screen::screen(request, state.screen_limits()) {
            return Err(Box::new(local_response(&local)));
        }
        if !client.tls && state.redirect_https() {
            let port = self.https_port.load(Ordering::Relaxed);
            return Err(Box::new(redirect_response(request, port)));
        }
        let forwarding = match dispatch(state, request, client) {
            Err(error) => return Err(Box::new(error_response(&error, id))),
            Ok(Routed::Answered(response)) => return Err(response),
            Ok(Routed::Forward(forwarding)) => forwarding,
        };
        // Screening read the declared length against the largest limit: only a route's smaller
        // one needs another look.
        let max_body = forwarding.max_body(state);
        if max_body < state.screen_limits().max_body
            && let Some(local) = screen::body_too_large(request.headers(), max_body)
        {
            return Err(Box::new(local_response(&local)));
        }
        Ok(forwarding)
    }
}

/// A response to `HEAD` has no body, whichever server writes it (hyper's HTTP/2 server would
/// send what it is given): one the proxy wrote itself keeps its length, as a `GET` would have
/// been answered, and loses its bytes. A backend's has none already.
fn leave_out_body(response: &mut Response<ProxyBody>) {
    let ProxyBody::Local(_) = response.body() else {
        return;
    };
    let length = response.body().size_hint().exact().unwrap_or_default();
    if length > 0 && !response.headers().contains_key(header::CONTENT_LENGTH) {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    *response.body_mut() = ProxyBody::text("");
}

/// An HTTP/1.0 client can only be sent a body without a length up to the connection's close; a
/// server embedding the proxy may still say `Connection: keep-alive` to a client that asked for
/// it, and a request the client sent behind it would be lost unanswered. Saying `close`, as nginx
/// does, keeps the promise (Fulcrum's own server says it anyway).
fn close_if_unsized(response: &mut Response<ProxyBody>) {
    let unsized_body = response.body().size_hint().exact().is_none()
        && !response.headers().contains_key(header::CONTENT_LENGTH);
    if unsized_body {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// A request on its way: until it is answered, dropping it (the client went away) still counts
/// it and logs it, with status 499 as nginx does.
struct Pending<'a> {
    state: &'a State,
    started: Instant,
    /// Boxed: with the access log off (as often as not) it is not carried at all.
    entry: Option<Box<Entry>>,
    trail: Trail<'a>,
    answered: bool,
}

/// What nginx logs for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

impl Pending<'_> {
    /// Counts the answer's `status` and returns the access log entry to finish with its body.
    fn answer(&mut self, status: u16) -> Option<Box<Entry>> {
        self.answered = true;
        let trail = &self.trail;
        trail
            .outcomes(self.state)
            .record(status, clock::now().into_std() - self.started);
        let mut entry = self.entry.take()?;
        // An attempt cut short (the client left, or the request's deadline passed) waited too.
        let upstream_time = match trail.waiting_since {
            Some(since) => Some(trail.upstream_time.unwrap_or_default() + since.elapsed()),
            None => trail.upstream_time,
        };
        entry.answered(
            status,
            trail.pool.map(|pool| Arc::clone(pool.name())),
            trail.backend.as_ref().map(|b| b.address().clone()),
            trail.attempts,
            upstream_time,
        );
        entry.prioritized(trail.priority, trail.queued);
        Some(entry)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let (Some(entry), Some(log)) = (self.answer(CLIENT_CLOSED), self.state.access_log()) {
            log.write(entry.line(log.format()));
        }
    }
}

/// Where a request went: its pool, the backend its answer is attributed to (the one that
/// answered, or the last one tried), and how many attempts it took.
#[derive(Debug)]
struct Trail<'a> {
    pool: Option<&'a Pool>,
    backend: Option<Arc<Backend>>,
    attempts: u32,
    /// How much it matters (its route's, or its priority header's).
    priority: Priority,
    /// Time spent in its pool's queue for a slot on a backend, over all attempts.
    queued: Option<Duration>,
    /// Time spent waiting on backends for a response head, over all attempts.
    upstream_time: Option<Duration>,
    /// When the attempt under way was sent, while it waits for its response head (access log
    /// on only).
    waiting_since: Option<Instant>,
    /// An upgrade's tunnel, waiting for the request's log entry to write when it closes.
    log_later: Option<oneshot::Sender<(Box<Entry>, AccessLog)>>,
    /// The request's span, told the pool and backends as they are chosen.
    span: Span,
}

impl Trail<'_> {
    /// The series its response counts in: its backend's, else its pool's (no backend), else
    /// the unrouted.
    fn outcomes<'s>(&'s self, state: &'s State) -> &'s Outcomes {
        match (&self.backend, self.pool) {
            (Some(backend), _) => &backend.stats().outcomes,
            (None, Some(pool)) => &pool.stats().unattributed,
            (None, None) => state.unrouted(),
        }
    }
}
