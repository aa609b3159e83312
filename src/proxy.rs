//! The request path: route, pick, rewrite, forward, relay, and turn failures into answers.
//!
//! Life of a request: load the snapshot once → find the route by host and path → the pool picks a
//! backend → count it in flight → rewrite the URI and headers → send through the pooled client,
//! with the response timeout running from the moment the request body is fully sent → relay the
//! response head and stream its body, the in-flight count ending with the body. Any failure is a
//! [`ProxyError`], logged once here with its pool and backend, and answered with its status.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use tracing::{debug, warn};

use crate::body::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::headers::{self, ClientSide};
use crate::route::host_name;
use crate::state::{SharedState, State};
use crate::upstream::{Backend, Failure, Pool, classify};

/// The proxy service: one per server, shared by every connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: SharedState,
}

impl Proxy {
    pub fn new(state: SharedState) -> Proxy {
        Proxy { state }
    }

    /// Serves one request from `peer`; never fails, since every error becomes a response.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let state = self.state.load_full();
        match forward(&state, request, peer).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        }
    }
}

async fn forward(
    state: &State,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host = request_host(&request).map(host_name);
    let route = state
        .route(host, request.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    let pool = route.pool();
    let backend = pool
        .pick(None)
        .ok_or_else(|| ProxyError::NoHealthyBackend {
            pool: pool.name().clone(),
        })?;
    let in_flight = backend.start_request();

    let client = ClientSide {
        ip: peer.ip(),
        proto: "http",
        version: request.version(),
    };
    set_host_from_target(&mut request);
    headers::rewrite_request(request.headers_mut(), &client);
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = upstream_uri(request.uri(), backend.address());
    let (parts, body) = request.into_parts();
    let (body, body_sent) = RequestBody::track(body);
    let sent = state.client().request(Request::from_parts(parts, body));

    let response = await_response(sent, body_sent, state.timeouts().response)
        .await
        .map_err(|failure| upstream_error(failure, pool, backend, state))?;
    let (mut parts, body) = response.into_parts();
    headers::rewrite_response(&mut parts.headers, parts.version);
    Ok(Response::from_parts(
        parts,
        ProxyBody::Upstream {
            body,
            _in_flight: in_flight,
        },
    ))
}

/// Why no response head came back.
enum Awaited {
    Failed(Failure),
    TimedOut,
}

/// Waits for the response head: unbounded while the request body is still being sent, then at
/// most `timeout`.
async fn await_response(
    sent: hyper_util::client::legacy::ResponseFuture,
    body_sent: Option<tokio::sync::oneshot::Receiver<()>>,
    timeout: Duration,
) -> Result<Response<Incoming>, Awaited> {
    tokio::pin!(sent);
    if let Some(body_sent) = body_sent {
        tokio::select! {
            response = &mut sent => return response.map_err(|e| Awaited::Failed(classify(&e))),
            // Sent or dropped unsent: either way the response future now decides.
            _ = body_sent => {}
        }
    }
    match tokio::time::timeout(timeout, sent).await {
        Ok(response) => response.map_err(|e| Awaited::Failed(classify(&e))),
        Err(_) => Err(Awaited::TimedOut),
    }
}

fn upstream_error(awaited: Awaited, pool: &Pool, backend: &Backend, state: &State) -> ProxyError {
    let pool_name = pool.name().clone();
    let backend = backend.address().clone();
    match awaited {
        Awaited::TimedOut => ProxyError::ResponseTimeout {
            pool: pool_name,
            backend,
            after: state.timeouts().response,
        },
        Awaited::Failed(Failure::ConnectTimeout) => ProxyError::ConnectTimeout {
            pool: pool_name,
            backend,
            after: state.timeouts().connect,
        },
        Awaited::Failed(Failure::Connect(reason)) => ProxyError::ConnectFailed {
            pool: pool_name,
            backend,
            reason,
        },
        Awaited::Failed(Failure::Upstream(reason)) => ProxyError::UpstreamFailed {
            pool: pool_name,
            backend,
            reason,
        },
        Awaited::Failed(Failure::RequestBody(reason)) => ProxyError::RequestBody {
            pool: pool_name,
            backend,
            reason,
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

/// `http://backend/path?query`, the path and query kept byte for byte.
fn upstream_uri(original: &Uri, backend: &Authority) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(backend.clone());
    parts.path_and_query = Some(
        original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).expect("scheme, authority and an origin-form path make a valid URI")
}

/// Logs `error` once, with its pool and backend, and builds the answer.
fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let (pool, backend) = error.location();
    let pool = pool.unwrap_or("");
    let backend = backend.map(Authority::as_str).unwrap_or("");
    match error {
        ProxyError::NoRoute | ProxyError::RequestBody { .. } => {
            debug!(pool, backend, %error, "request answered by the proxy");
        }
        _ => warn!(pool, backend, %error, "request failed"),
    }
    let mut response = Response::new(ProxyBody::text(error.to_string()));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query_bytes() {
        let original: Uri = "/a%2Fb/./c?x=1&y=%20;z".parse().unwrap();
        let uri = upstream_uri(&original, &Authority::from_static("127.0.0.1:9001"));
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9001/a%2Fb/./c?x=1&y=%20;z"
        );
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
}
