//! Answers the proxy writes itself: refusals, redirects and errors, each logged once.

use http::uri::Authority;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use tracing::{debug, warn};

use super::ProxyBody;
use super::error::ProxyError;
use super::route::host_name;
use super::screen;
use super::target::request_host;

/// `308 Permanent Redirect` to the same host and target over https on `port` (RFC 9110 section
/// 15.4.9: the method and body are kept, unlike 301).
pub(super) fn redirect_response<B>(request: &Request<B>, port: u16) -> Response<ProxyBody> {
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
pub(super) fn local_response(local: &screen::Local) -> Response<ProxyBody> {
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

/// `duration` in whole seconds, rounded up, as `Retry-After` gives it (RFC 9110 section 10.2.3).
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The fields of the IETF draft "RateLimit header fields for HTTP"
/// (draft-ietf-httpapi-ratelimit-headers): the route's policy, `quota` requests per `window`,
/// and what is left of it now: nothing, for `reset` seconds.
fn rate_limit_fields(
    headers: &mut http::HeaderMap,
    route: &str,
    quota: u32,
    window: Duration,
    reset: Duration,
) {
    // The draft's window is whole seconds: a shorter period is told as the quota of one second.
    let seconds = whole_seconds(window).max(1);
    let quota = (f64::from(quota) * seconds as f64 / window.as_secs_f64()).ceil() as u64;
    let policy = format!("\"{route}\";q={quota};w={seconds}");
    let now = format!("\"{route}\";r=0;t={}", whole_seconds(reset));
    if let (Ok(policy), Ok(now)) = (HeaderValue::try_from(policy), HeaderValue::try_from(now)) {
        headers.insert(HeaderName::from_static("ratelimit-policy"), policy);
        headers.insert(HeaderName::from_static("ratelimit"), now);
    }
}

/// Logs `error` once, with its pool, backend and request id, and builds the answer.
pub(super) fn error_response(error: &ProxyError, id: &HeaderValue) -> Response<ProxyBody> {
    let request_id = id.to_str().unwrap_or("");
    let (pool, backend) = error.location();
    let pool = pool.unwrap_or("");
    let backend = backend.map(Authority::as_str).unwrap_or("");
    match error {
        ProxyError::NoRoute
        | ProxyError::AmbiguousPath
        | ProxyError::RequestBody { .. }
        | ProxyError::BodyTooLarge { .. }
        | ProxyError::BodyIdle { .. }
        // Shedding and rate limiting are the proxy working as configured, possibly thousands
        // of times a second: their counts are in the metrics.
        | ProxyError::Shed { .. }
        | ProxyError::RateLimited { .. } => {
            debug!(pool, backend, request_id, %error, "request answered by the proxy");
        }
        ProxyError::TlsFailed { reason, .. } => {
            warn!(pool, backend, request_id, %error, reason = %reason, "request failed");
        }
        _ => warn!(pool, backend, request_id, %error, "request failed"),
    }
    let mut response = Response::new(ProxyBody::text(error.to_string()));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(after)));
    }
    if let ProxyError::RateLimited {
        route,
        retry_after,
        quota,
        window,
    } = error
    {
        rate_limit_fields(response.headers_mut(), route, *quota, *window, *retry_after);
    }
    if error.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
