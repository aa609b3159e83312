//! The request path: route, pick, rewrite, forward with retries, relay, and turn failures into
//! answers.
//!
//! Life of a request: load the snapshot once → find the route by host and path → rewrite the
//! head once → the pool picks an available backend → count it in flight → one attempt
//! (`attempt.rs`) → relay the response head and stream its body, the in-flight count ending with
//! the body. A failed attempt is retried on a backend not yet tried when the retry rules below
//! allow it; otherwise it is a [`ProxyError`], logged once here with pool and backend.
//!
//! # Retries
//! - A request that never reached a backend (connect refused or timed out, or a pooled connection
//!   found closed before writing) is retried whatever its method.
//! - One that was sent and then failed (reset, closed, response timeout) is retried only for
//!   idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and only when its body can be
//!   replayed (no body, or one that fit in `body::REPLAY_LIMIT`).
//! - Once a response head has arrived nothing is retried: the response is the client's.
//! - At most `retries` extra attempts, each on a backend not tried yet. Retries of requests that
//!   may have reached a backend also need the pool's retry budget (`upstream/budget.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use tracing::field::Empty;
use tracing::{Instrument, Span, debug, debug_span, warn};

use crate::access::{Entry, Logged};
use crate::attempt::{self, Cause, Failed, Head, Replay, Report};
use crate::body::{ProxyBody, Relayed, RequestBody};
use crate::config::{Limits, Timeouts};
use crate::error::ProxyError;
use crate::guard::Watch;
use crate::headers::{self, ClientSide};
use crate::inbound::{BodyRules, Inbound};
use crate::metrics::{Outcomes, RetryReason};
use crate::request_id;
use crate::route::host_name;
use crate::screen;
use crate::state::{SharedState, State};
use crate::tunnel::{self, Tunnels};
use crate::upstream::{Backend, Failure, InFlight, Pool, Sender};

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
    pub fn new(state: SharedState) -> Proxy {
        Proxy {
            state,
            https_port: Arc::new(AtomicU16::new(443)),
            tunnels: Arc::default(),
        }
    }

    /// The open tunnels, for shutdown to wait on.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// Where `redirect_https` sends clients.
    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
    }

    /// The limits and timeouts in force, for a new connection.
    pub fn settings(&self) -> (Limits, Timeouts) {
        let state = self.state.load();
        (*state.limits(), *state.timeouts())
    }

    /// Serves one request from `peer`, on the connection `watch` follows; never fails, since
    /// every error becomes a response.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
        watch: &Arc<Watch>,
    ) -> Response<Logged> {
        let active = watch.start();
        let started = Instant::now();
        let state = self.state.load_full();
        let mut request = request;
        let id = request_id::ensure(request.headers_mut());
        let entry = state
            .access_log()
            .map(|_| Entry::begin(&request, peer, &id, started));
        let received = entry.as_ref().map(|entry| Arc::clone(entry.received()));
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
            entry,
            trail: Trail {
                pool: None,
                backend: None,
                attempts: 0,
                upstream_time: None,
                span: span.clone(),
            },
            answered: false,
        };
        let raw_content_length = || {
            let target = request.uri().to_string();
            let start_line = format!("{} {target} ", request.method());
            watch.head_had_content_length(start_line.as_bytes())
        };
        let redirect =
            (!tls && state.redirect_https()).then(|| self.https_port.load(Ordering::Relaxed));
        let mut response = match screen::screen(&request, state.limits(), raw_content_length) {
            Some(local) => local_response(&local),
            None if redirect.is_some() => redirect_response(&request, redirect.unwrap_or(443)),
            None => {
                let forwarding = forward(
                    &state,
                    request,
                    (peer, tls),
                    received,
                    (&self.tunnels, watch),
                    &mut pending.trail,
                )
                .instrument(span);
                let forwarded = match state.timeouts().request {
                    None => forwarding.await,
                    Some(after) => tokio::time::timeout(after, forwarding)
                        .await
                        .unwrap_or(Err(ProxyError::Deadline { after })),
                };
                match forwarded {
                    Ok(response) => response,
                    Err(error) => error_response(&error, &id),
                }
            }
        };
        let entry = pending.answer(response.status().as_u16());
        response.headers_mut().insert(request_id::X_REQUEST_ID, id);
        let log = entry.zip(state.access_log().cloned());
        response.map(|body| Logged::new(body, log, active))
    }
}

/// A request on its way: until it is answered, dropping it (the client went away) still counts
/// it and logs it, with status 499 as nginx does.
struct Pending<'a> {
    state: &'a State,
    started: Instant,
    entry: Option<Entry>,
    trail: Trail<'a>,
    answered: bool,
}

/// What nginx logs for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

impl Pending<'_> {
    /// Counts the answer's `status` and returns the access log entry to finish with its body.
    fn answer(&mut self, status: u16) -> Option<Entry> {
        self.answered = true;
        let trail = &self.trail;
        trail
            .outcomes(self.state)
            .record(status, self.started.elapsed());
        let mut entry = self.entry.take()?;
        entry.answered(
            status,
            trail.pool.map(|pool| Arc::clone(pool.name())),
            trail.backend.as_ref().map(|b| b.address().clone()),
            trail.attempts,
            trail.upstream_time,
        );
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
    /// Time spent waiting on backends for a response head, over all attempts.
    upstream_time: Option<Duration>,
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

async fn forward<'a>(
    state: &'a State,
    mut request: Request<Incoming>,
    client: (SocketAddr, bool),
    received: Option<Arc<AtomicU64>>,
    (tunnels, watch): (&Arc<Tunnels>, &Arc<Watch>),
    trail: &mut Trail<'a>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (peer, _) = client;
    // An upgrade (WebSocket): its protocol, and the client's side of the connection to come.
    let mut upgrade = tunnel::requested(request.version(), request.headers())
        .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
    let host = request_host(&request).map(host_name);
    let route = state
        .route(host, request.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    let pool = route.pool();
    trail.pool = Some(pool);
    trail.span.record("pool", &**pool.name());
    let policy = pool.policy();
    let key = policy
        .hash_key
        .as_ref()
        .and_then(|k| k.hash(&request, peer.ip()));
    let pinned = policy
        .sticky
        .as_ref()
        .and_then(|s| s.requested(request.headers()));
    let (head, body) = prepare(
        request,
        client,
        upgrade.as_ref().map(|(protocol, _)| protocol.clone()),
    );
    let idempotent = is_idempotent(&head.method);
    let retries = pool.policy().retries;
    // A copy of the head is needed only to resend an idempotent request after it was sent; a
    // request that never left comes back whole.
    let kept = (idempotent && retries > 0).then(|| head.detached());
    let rules = BodyRules {
        max_body: state.limits().max_body,
        idle: state.timeouts().request_body_idle,
    };
    let (body, report) = RequestBody::new(Inbound::new(body, rules, received));
    let mut next = (head.into_request(body), report);
    let mut tried: Vec<Arc<Backend>> = Vec::new();
    let mut last_error = None;
    // Why the attempt before failed: a retry is counted once it has a backend to go to.
    let mut retrying = None;
    loop {
        let chosen = pinned
            .and_then(|token| pool.pinned(token, &tried))
            .or_else(|| pool.pick(&tried, key));
        let Some(backend) = chosen.cloned() else {
            return Err(last_error.unwrap_or_else(|| ProxyError::NoHealthyBackend {
                pool: pool.name().clone(),
            }));
        };
        if let Some(reason) = retrying.take() {
            pool.stats().retried(reason);
        }
        if tried.is_empty() {
            pool.budget().deposit();
        }
        let in_flight = backend.start_request();
        let (request, report) = next;
        let timeout = state.timeouts().response;
        trail.attempts += 1;
        trail.backend = Some(Arc::clone(&backend));
        trail.span.record("backend", backend.address().as_str());
        // Timed only for the access log: two clock reads per attempt are not free.
        let sent = state.access_log().map(|_| Instant::now());
        let exchanged = attempt::exchange(state.client(), &backend, request, report, timeout).await;
        if let Some(sent) = sent {
            *trail.upstream_time.get_or_insert_default() += sent.elapsed();
        }
        let failed = match exchanged {
            Ok((mut response, connection)) => {
                if let Some(reason) = screen::response_framing(&response, upgrade.is_some()) {
                    // Its connection is dropped with it: nothing more is read from it.
                    pool.record_failure(&backend, reason);
                    return Err(ProxyError::UpstreamFailed {
                        pool: pool.name().clone(),
                        backend: backend.address().clone(),
                        reason: reason.to_owned(),
                    });
                }
                if response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some((_, client)) = upgrade.take()
                {
                    pool.record_success(&backend);
                    let upgraded = hyper::upgrade::on(&mut response);
                    // The connection is the tunnel's now: it never goes back to the pool.
                    drop(connection);
                    let idle = state.timeouts().client_idle;
                    // The client connection is busy for the tunnel's life: its request-head and
                    // idle deadlines must not fire on tunnelled bytes.
                    let busy = watch.start();
                    tunnel::bridge(tunnels, client, upgraded, (in_flight, busy), idle);
                    return Ok(switching(response));
                }
                let mut response = relay(pool, response, in_flight, connection);
                pin_to(pool, &backend, pinned, &mut response);
                return Ok(response);
            }
            Err(failed) => failed,
        };
        drop(in_flight);
        let error = upstream_error(&failed.cause, pool, &backend, state);
        if failed.cause.blames_backend() {
            pool.record_failure(&backend, &error.to_string());
        }
        let last = tried.len() as u32 >= retries;
        let reason = retry_reason(&failed.cause);
        let Some(again) = retry(failed, idempotent, last, pool, kept.as_ref()) else {
            return Err(error);
        };
        retrying = Some(reason);
        debug!(pool = %pool.name(), backend = %backend, %error, "attempt failed, retrying on another backend");
        next = again;
        tried.push(backend);
        last_error = Some(error);
    }
}

/// The request for another attempt, when the retry rules and the budget allow one.
fn retry(
    failed: Failed,
    idempotent: bool,
    last: bool,
    pool: &Pool,
    kept: Option<&Head>,
) -> Option<(Request<RequestBody>, Report)> {
    let client_fault = matches!(&failed.cause, Cause::Failed(f) if f.is_client_fault());
    if last || client_fault {
        return None;
    }
    let never_sent = failed.cause.never_sent();
    if !never_sent && !idempotent {
        return None;
    }
    let again = match failed.replay? {
        Replay::Request(request, report) => (request, report),
        Replay::Body(body, report) => (kept?.clone().into_request(body), report),
    };
    // A request that never reached a backend adds no load when sent to another: the budget,
    // which guards against multiplying load, only counts retries of requests that may have.
    (never_sent || pool.budget().try_withdraw()).then_some(again)
}

/// The `reason` label of a retry after `cause`.
fn retry_reason(cause: &Cause) -> RetryReason {
    match cause {
        Cause::TimedOut => RetryReason::ResponseTimeout,
        Cause::Failed(Failure::ConnectTimeout) => RetryReason::ConnectTimeout,
        Cause::Failed(Failure::Connect(_)) => RetryReason::ConnectFailure,
        Cause::Failed(Failure::NotSent(_)) => RetryReason::ConnectionClosed,
        // A client's fault is never retried; the label is never used for it.
        Cause::Failed(
            Failure::Upstream(_)
            | Failure::RequestBody(_)
            | Failure::BodyTooLarge(_)
            | Failure::BodyIdle(_),
        ) => RetryReason::UpstreamError,
    }
}

/// With sticky sessions, sets the affinity cookie when the request was not already pinned to the
/// backend that served it (no cookie, a forged one, or its backend was unavailable).
fn pin_to(pool: &Pool, backend: &Backend, pinned: Option<u64>, response: &mut Response<ProxyBody>) {
    let Some(sticky) = &pool.policy().sticky else {
        return;
    };
    let token = pool.sticky_token(backend);
    if pinned != Some(token) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, sticky.set_cookie(token));
    }
}

/// Methods that may be sent twice without a different effect (RFC 9110 section 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Rewrites the head once for every attempt: `Host` from the target, hop-by-hop headers out,
/// forwarding headers in, the target in origin form.
fn prepare(
    mut request: Request<Incoming>,
    (peer, tls): (SocketAddr, bool),
    upgrade: Option<HeaderValue>,
) -> (Head, Incoming) {
    let client = ClientSide {
        ip: peer.ip(),
        proto: if tls { "https" } else { "http" },
        version: request.version(),
    };
    set_host_from_target(&mut request);
    headers::rewrite_request(request.headers_mut(), &client);
    if let Some(protocol) = upgrade {
        tunnel::restore(request.headers_mut(), protocol);
    }
    let (parts, body) = request.into_parts();
    let head = Head {
        method: parts.method,
        uri: origin_form(parts.uri),
        headers: parts.headers,
    };
    (head, body)
}

/// The target as a backend receives it: path and query, byte for byte.
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// The client's 101 for a backend's: its headers, with the upgrade ones put back.
fn switching(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    headers::rewrite_response(&mut parts.headers, parts.version);
    if let Some(protocol) = protocol {
        tunnel::restore(&mut parts.headers, protocol);
    }
    Response::from_parts(parts, ProxyBody::text(""))
}

/// Relays a backend's response; a 502/503/504 from it counts against it for ejection.
fn relay(
    pool: &Pool,
    response: Response<Incoming>,
    in_flight: InFlight,
    connection: Sender,
) -> Response<ProxyBody> {
    let status = response.status();
    if matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    ) {
        pool.record_failure(in_flight.backend(), status.as_str());
    } else {
        pool.record_success(in_flight.backend());
    }
    let (mut parts, body) = response.into_parts();
    headers::rewrite_response(&mut parts.headers, parts.version);
    Response::from_parts(
        parts,
        ProxyBody::Upstream(Relayed::new(body, in_flight, connection)),
    )
}

fn upstream_error(cause: &Cause, pool: &Pool, backend: &Backend, state: &State) -> ProxyError {
    let pool = pool.name().clone();
    let backend = backend.address().clone();
    match cause {
        Cause::TimedOut => ProxyError::ResponseTimeout {
            pool,
            backend,
            after: state.timeouts().response,
        },
        Cause::Failed(Failure::ConnectTimeout) => ProxyError::ConnectTimeout {
            pool,
            backend,
            after: state.timeouts().connect,
        },
        Cause::Failed(Failure::Connect(reason)) => ProxyError::ConnectFailed {
            pool,
            backend,
            reason: reason.clone(),
        },
        Cause::Failed(Failure::NotSent(reason) | Failure::Upstream(reason)) => {
            ProxyError::UpstreamFailed {
                pool,
                backend,
                reason: reason.clone(),
            }
        }
        Cause::Failed(Failure::RequestBody(reason)) => ProxyError::RequestBody {
            pool,
            backend,
            reason: reason.clone(),
        },
        Cause::Failed(Failure::BodyTooLarge(limit)) => ProxyError::BodyTooLarge {
            pool,
            backend,
            limit: *limit,
        },
        Cause::Failed(Failure::BodyIdle(idle)) => ProxyError::BodyIdle {
            pool,
            backend,
            idle: *idle,
        },
    }
}

/// The host a request is for: the target's authority (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok()),
    }
}

/// When the target carries an authority (HTTP/2's `:authority`, or an absolute-form target), it
/// replaces `Host` (RFC 9112 section 3.2.2), so the backend sees the host the client asked for.
fn set_host_from_target<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(header::HOST, value);
    }
}

/// `308 Permanent Redirect` to the same host and target over https on `port` (RFC 9110 section
/// 15.4.9: the method and body are kept, unlike 301).
fn redirect_response<B>(request: &Request<B>, port: u16) -> Response<ProxyBody> {
    let host = request_host(request).map(host_name).unwrap_or("");
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = match port {
        443 => format!("https://{host}{target}"),
        port => format!("https://{host}:{port}{target}"),
    };
    let mut response = Response::new(ProxyBody::text(""));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The answer to a request refused (or answered) before forwarding.
fn local_response(local: &screen::Local) -> Response<ProxyBody> {
    debug!(
        status = local.status.as_u16(),
        reason = local.reason,
        "request answered by the proxy"
    );
    let mut response = Response::new(ProxyBody::text(local.reason));
    *response.status_mut() = local.status;
    let headers = response.headers_mut();
    if !local.reason.is_empty() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    if local.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(screen::ALLOWED));
    }
    if local.close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Logs `error` once, with its pool, backend and request id, and builds the answer.
fn error_response(error: &ProxyError, id: &HeaderValue) -> Response<ProxyBody> {
    let request_id = id.to_str().unwrap_or("");
    let (pool, backend) = error.location();
    let pool = pool.unwrap_or("");
    let backend = backend.map(Authority::as_str).unwrap_or("");
    match error {
        ProxyError::NoRoute
        | ProxyError::RequestBody { .. }
        | ProxyError::BodyTooLarge { .. }
        | ProxyError::BodyIdle { .. } => {
            debug!(pool, backend, request_id, %error, "request answered by the proxy");
        }
        _ => warn!(pool, backend, request_id, %error, "request failed"),
    }
    let mut response = Response::new(ProxyBody::text(error.to_string()));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if error.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Uri;

    #[test]
    fn origin_form_keeps_path_and_query_bytes() {
        let original: Uri = "/a%2Fb/./c?x=1&y=%20;z".parse().unwrap();
        assert_eq!(origin_form(original).to_string(), "/a%2Fb/./c?x=1&y=%20;z");
        let absolute: Uri = "http://shop.example.com/a%2Fb?x=1".parse().unwrap();
        assert_eq!(origin_form(absolute).to_string(), "/a%2Fb?x=1");
        let bare: Uri = "http://shop.example.com".parse().unwrap();
        assert_eq!(origin_form(bare).to_string(), "/");
    }

    #[test]
    fn absolute_form_target_sets_host() {
        let mut request = Request::get("http://shop.example.com/x")
            .header(header::HOST, "other")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request), Some("shop.example.com"));
        set_host_from_target(&mut request);
        assert_eq!(request.headers()[header::HOST], "shop.example.com");
    }

    #[test]
    fn only_safe_and_idempotent_methods_are_idempotent() {
        for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&method.parse().unwrap()), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&method.parse().unwrap()), "{method}");
        }
    }
}
