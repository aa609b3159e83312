//! Forwarding a request to its pool: pick, attempt, retry by the rules in `mod.rs`, relay.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use tokio::sync::oneshot;
use tracing::debug;

use super::client_ip::ClientAddr;
use super::error::ProxyError;
use super::header_rules::{self, Facts};
use super::headers;
use super::mirror::Duplicate;
use super::priority::priority;
use super::route::Route;
use super::state::State;
use super::target::prepare;
use super::tunnel::{self, Tunnels};
use super::{ProxyBody, Trail};
use crate::body::upgrade::OnUpgrade;
use crate::body::{BodyRules, ClientBody, Inbound, RequestBody};
use crate::config::Priority;
use crate::telemetry::metrics::RetryReason;
use crate::upstream::exchange::{self, Answer, Cause, Failed, Replay, Report};
use crate::upstream::head::{Head, is_idempotent};
use crate::upstream::overload::{Refused, Want};
use crate::upstream::{Backend, Failure, InFlight, Pool, Relayed, UpstreamBody};

/// Makes attempts on the backends of the pool `forwarding` names until one answers or the
/// retry rules say stop; `trail` records where it went.
///
/// The request is made ready for its backends before the future is (see `Proxy::handle`).
pub(super) fn forward<'a, 't>(
    state: &'a State,
    forwarding: Forwarding<'a>,
    mut request: Request<ClientBody>,
    client: &ClientAddr,
    received: Option<Arc<AtomicU64>>,
    tunnels: &'t Arc<Tunnels>,
    trail: &'t mut Trail<'a>,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
    let Forwarding {
        route,
        pool,
        rewritten,
        pin: split_pin,
    } = forwarding;
    let settings = route.settings();
    // An upgrade (WebSocket): its protocol, and the client's side of the connection to come.
    // The server promises the client's side to every request asking to upgrade: one without
    // the promise needs no lookups.
    let promised = request.extensions_mut().remove::<OnUpgrade>();
    let mut upgrade = promised.and_then(|client| {
        tunnel::requested(request.version(), request.headers()).map(|protocol| (protocol, client))
    });
    // What header templates may name, for a route with header rules (boxed: most have none).
    let facts = route
        .header_rules()
        .map(|_| Box::new(Facts::of(&request, client)));
    trail.priority = priority(
        route.priority(),
        request.headers(),
        client.ip,
        state.priority_rules(),
    );
    // A priority a client named goes on as the one it got, so that a proxy further on that
    // trusts this one does not take a client's word this one did not.
    if let Some(name) = &state.priority_rules().header
        && let Some(named) = request.headers_mut().get_mut(name)
    {
        *named = HeaderValue::from_static(trail.priority.name());
    }
    trail.pool = Some(pool);
    trail.span.record("pool", &**pool.name());
    let policy = pool.policy();
    let key = policy
        .hash_key
        .as_ref()
        .and_then(|k| k.hash(&request, client.ip));
    let pinned = policy
        .sticky
        .as_ref()
        .and_then(|s| s.requested(request.headers()));
    let (mut head, body) = prepare(
        request,
        client,
        upgrade.as_ref().map(|(protocol, _)| protocol.clone()),
        (pool.name(), state.underscores_in_headers()),
    );
    if let Some(uri) = rewritten {
        head.uri = *uri;
    }
    if let (Some((rules, _)), Some(facts)) = (route.header_rules(), &facts) {
        header_rules::apply(rules, &mut head.headers, facts);
    }
    let idempotent = is_idempotent(&head.method);
    let retries = settings.retries.unwrap_or(policy.retries);
    let rules = BodyRules {
        max_body: settings.max_body.unwrap_or(state.limits().max_body),
        idle: state.timeouts().request_body_idle,
    };
    let (mut body, report) = request_body(body, rules, received);
    if let Some(mirror) = &settings.mirror
        && upgrade.is_none()
        && mirror.sampled()
        && let Some(copy) = Duplicate::of(&mut body)
    {
        mirror.send(
            state.client(),
            head.detached(),
            copy,
            state.timeouts().response,
        );
    }
    // A copy of the head is needed only to resend an idempotent request with a streamed body
    // after hyper's HTTP/2 client took it; any other comes back whole (`upstream/exchange.rs`).
    let kept = (report.is_some() && idempotent && retries > 0).then(|| Box::new(head.detached()));
    let mut next = (head.into_request(body), report);
    async move {
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        // Boxed: an attempt failed is the exception.
        let mut last_error: Option<Box<ProxyError>> = None;
        // Why the attempt before failed: a retry is counted once it has a backend to go to.
        let mut retrying = None;
        loop {
            let in_flight = if pool.limited() {
                let want = Want {
                    key,
                    pinned,
                    tried: tried.clone(),
                };
                let admitted = match pool.gate().admit_now(pool, &want) {
                    Some(now) => now,
                    None => {
                        // Boxed: waiting is the exception, and every request's future would carry
                        // its size.
                        let waiting = Box::pin(pool.gate().wait(pool, trail.priority, want));
                        let (admitted, waited) = waiting.await;
                        *trail.queued.get_or_insert_default() += waited;
                        admitted
                    }
                };
                match admitted {
                    Ok(in_flight) => in_flight,
                    Err(why) => return Err(refused(why, pool, trail.priority, last_error)),
                }
            } else {
                let chosen = pinned
                    .and_then(|token| pool.pinned(token, &tried))
                    .or_else(|| pool.pick(&tried, key));
                let Some(backend) = chosen else {
                    return Err(refused(
                        Refused::NoBackend,
                        pool,
                        trail.priority,
                        last_error,
                    ));
                };
                if upgrade.is_some() && backend.http2() {
                    return Err(ProxyError::UpgradeUnsupported {
                        pool: pool.name().clone(),
                    });
                }
                backend.start_request()
            };
            let backend = Arc::clone(in_flight.backend());
            if upgrade.is_some() && backend.http2() {
                return Err(ProxyError::UpgradeUnsupported {
                    pool: pool.name().clone(),
                });
            }
            if let Some(reason) = retrying.take() {
                pool.stats().retried(reason);
            }
            if tried.is_empty() {
                pool.budget().deposit();
            }
            let (request, report) = next;
            let timeout = state.timeouts().response;
            trail.attempts += 1;
            trail.backend = Some(Arc::clone(&backend));
            trail.span.record("backend", backend.address().as_str());
            // Timed only for the access log and an adaptive limit: clock reads are not free.
            let adaptive = backend.limit().is_adaptive();
            let sent = (adaptive || state.access_log().is_some()).then(Instant::now);
            trail.waiting_since = sent.filter(|_| state.access_log().is_some());
            // The backend's load when the request went: what an adaptive limit learns against.
            let load = if adaptive { backend.in_flight() } else { 0 };
            // Awaited through a pin: by value, the large future would be copied once more.
            let exchanged = pin!(exchange::exchange(
                state.client(),
                &backend,
                request,
                report,
                upgrade.is_some(),
                timeout
            ))
            .await;
            if let Some(sent) = trail.waiting_since.take() {
                *trail.upstream_time.get_or_insert_default() += sent.elapsed();
            }
            let failed = match exchanged {
                Ok(Answer::Switched(response, connection)) => {
                    let Some((_, client)) = upgrade.take() else {
                        unreachable!("a switch is taken only when an upgrade asked for it")
                    };
                    pool.record_success(&backend);
                    let idle = state.timeouts().client_idle;
                    // The request's log line waits for the tunnel's close (`tunnel.rs`).
                    let log = state.access_log().map(|_| {
                        let (later, log) = oneshot::channel();
                        trail.log_later = Some(later);
                        log
                    });
                    tunnel::bridge(tunnels, (client, connection), in_flight, idle, log);
                    return Ok(switching(response));
                }
                Ok(Answer::Response(response)) => {
                    if let Some(sent) = sent.filter(|_| adaptive) {
                        backend.record_latency(sent.elapsed(), load);
                    }
                    let idle = state.timeouts().response_body_idle;
                    let mut response = relay(pool, response, in_flight, idle);
                    pin_to(pool, &backend, pinned, &mut response);
                    if let Some(cookie) = split_pin {
                        response.headers_mut().append(header::SET_COOKIE, *cookie);
                    }
                    if let (Some((_, rules)), Some(facts)) = (route.header_rules(), &facts) {
                        header_rules::apply(rules, response.headers_mut(), facts);
                    }
                    return Ok(response);
                }
                Err(failed) => failed,
            };
            // A response that never came is as slow as it got: the adaptive limit learns from it.
            if let (Cause::TimedOut, Some(sent)) = (&failed.cause, sent.filter(|_| adaptive)) {
                backend.record_latency(sent.elapsed(), load);
            }
            drop(in_flight);
            let error = upstream_error(&failed.cause, pool, &backend, state);
            if failed.cause.blames_backend() {
                pool.record_failure(&backend, &error.to_string());
            }
            let last = tried.len() as u32 >= retries;
            let reason = retry_reason(&failed.cause);
            let Some(again) = retry(failed, idempotent, last, pool, kept.as_deref()) else {
                return Err(error);
            };
            retrying = Some(reason);
            debug!(pool = %pool.name(), backend = %backend, %error, "attempt failed, retrying on another backend");
            next = again;
            tried.push(backend);
            last_error = Some(Box::new(error));
        }
    }
}

/// A request's route and the pool it goes to, with its target rewritten when the route says so.
#[derive(Debug)]
pub(super) struct Forwarding<'a> {
    pub route: &'a Route,
    pub pool: &'a Arc<Pool>,
    /// Boxed, as `pin`: most requests have neither, and every request's future carries room
    /// for what this holds.
    pub rewritten: Option<Box<Uri>>,
    /// A split's cookie that keeps the client on `pool`, for the response.
    pub pin: Option<Box<HeaderValue>>,
}

impl Forwarding<'_> {
    /// The largest body the request may have: its route's, else the server's.
    pub fn max_body(&self, state: &State) -> u64 {
        self.route
            .settings()
            .max_body
            .unwrap_or(state.limits().max_body)
    }

    /// The deadline of the whole request: its route's, else the server's.
    pub fn deadline(&self, state: &State) -> Option<Duration> {
        self.route.settings().timeout.or(state.timeouts().request)
    }
}

/// The error for a request that got no slot on a backend: shed, or none available (the last
/// attempt's failure, when there was one).
fn refused(
    why: Refused,
    pool: &Pool,
    priority: Priority,
    last_error: Option<Box<ProxyError>>,
) -> ProxyError {
    let name = pool.name().clone();
    match why {
        Refused::Shed(reason) => ProxyError::Shed {
            pool: name,
            priority,
            reason,
            retry_after: pool.policy().overload.retry_after,
        },
        Refused::NoBackend => {
            last_error.map_or(ProxyError::NoHealthyBackend { pool: name }, |e| *e)
        }
        Refused::PoolRemoved => ProxyError::PoolRemoved { pool: name },
    }
}

/// The request's body on its way to a backend: a whole one (it came with its head, within
/// `max_body`) as it is; any other read through its limits, kept for replay as it goes.
fn request_body(
    body: ClientBody,
    rules: BodyRules,
    received: Option<Arc<AtomicU64>>,
) -> (RequestBody, Report) {
    match body {
        ClientBody::Full(Some(data)) if data.len() as u64 <= rules.max_body => {
            if let Some(received) = received {
                received.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            (RequestBody::whole(data), None)
        }
        body => RequestBody::new(Inbound::new(body, rules, received)),
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
        Cause::Failed(Failure::Connect(_) | Failure::Tls(_)) => RetryReason::ConnectFailure,
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

/// The client's 101 for a backend's: its headers, with the upgrade ones put back.
fn switching(response: Response<()>) -> Response<ProxyBody> {
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    headers::rewrite_response(&mut parts.headers, parts.version);
    if let Some(protocol) = protocol {
        tunnel::restore(&mut parts.headers, protocol);
    }
    Response::from_parts(parts, ProxyBody::text(""))
}

/// Relays a backend's response; a 502/503/504 from it counts against it for ejection.
/// `idle`: the longest pause allowed in its body.
fn relay(
    pool: &Pool,
    response: Response<UpstreamBody>,
    in_flight: InFlight,
    idle: Duration,
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
    // A 204 has no body and says no length (RFC 9110 section 8.6), whatever the backend sent:
    // HTTP/1's encoder would drop it, hyper's HTTP/2 server would not.
    if status == StatusCode::NO_CONTENT {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    // `Via` names the version the backend spoke; the status line is Fulcrum's own (RFC 9110
    // section 2.5): an HTTP/1.0 backend's response goes out as HTTP/1.1, framed for the client.
    parts.version = Version::HTTP_11;
    Response::from_parts(
        parts,
        ProxyBody::Upstream(Relayed::new(body, in_flight, idle)),
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
        Cause::Failed(Failure::Tls(reason)) => ProxyError::TlsFailed {
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

#[cfg(test)]
mod tests {
    use super::*;

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
