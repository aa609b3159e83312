//! Answers the proxy writes itself: refusals, redirects and errors, each logged once.

use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode, header};
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
        // Shedding is the proxy working as configured, possibly thousands of times a second:
        // its counts are in the metrics.
        | ProxyError::Shed { .. } => {
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
        // Whole seconds (RFC 9110 section 10.2.3), rounded up.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if error.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
