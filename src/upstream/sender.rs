//! The sending half of an upstream connection: HTTP/1.1 (one request at a time) or HTTP/2 (many
//! at once, on one connection shared by every request to the backend).

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use super::Backend;
use crate::body::RequestBody;

/// A connection's sender.
#[derive(Debug)]
pub enum Sender {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

impl Sender {
    /// Whether it can take a request now.
    pub fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_ready(),
            Sender::Http2(sender) => sender.is_ready(),
        }
    }

    /// Whether its connection has closed.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    /// Waits until it can take a request.
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    /// Whether it is shared (HTTP/2): it stays in the pool while requests use it.
    pub fn is_shared(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// Another handle on the same HTTP/2 connection.
    pub fn share(&self) -> Option<Sender> {
        match self {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Sender::Http2(sender.clone())),
        }
    }
}

impl Sender {
    /// Sends `request` to `backend` and waits for the response head (health checks).
    pub async fn send(
        &mut self,
        request: Request<RequestBody>,
        backend: &Backend,
    ) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(for_http2(request, backend)).await,
        }
    }
}

/// `request` as HTTP/2 needs it: an absolute target (`:scheme` and `:authority` from the
/// request's `Host`, or the backend's address), version 2. Hop-by-hop headers were removed
/// already; hyper drops any connection-specific one left.
///
/// `Host` becomes `:authority` and is not sent beside it, as Envoy, Go and curl do: nginx
/// answers a request carrying both with 400 ("client sent duplicate host header").
pub fn for_http2(mut request: Request<RequestBody>, backend: &Backend) -> Request<RequestBody> {
    let host = request.headers_mut().remove(header::HOST);
    let authority = host
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        // A request handed back unsent and sent again has its authority in the target already.
        .or_else(|| request.uri().authority().cloned())
        .unwrap_or_else(|| backend.address().clone());
    let scheme = if backend.tls().is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    // Said for an HTTP/1.1 backend tried before (`proxy/attempt.rs`); HTTP/2 frames bodies itself.
    request.headers_mut().remove(header::TRANSFER_ENCODING);
    // HTTP/2's header compression keeps values for the connection's life.
    crate::arena::own_all(request.headers_mut());
    request
}
