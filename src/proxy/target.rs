//! The request head as a backend receives it: `Host` from the target, hop-by-hop headers out,
//! forwarding headers in, the target in origin form.

use crate::body::ClientBody;
use http::{HeaderValue, Method, Request, Uri, header};

use super::client_ip::ClientAddr;
use super::headers::{self, ClientSide};
use super::tunnel;
use crate::upstream::head::Head;

/// Rewrites the head once for every attempt: `Host` from the target, hop-by-hop headers out,
/// forwarding headers in, the target in origin form. `pool` is the `Host` of a request without
/// one (HTTP/1.0): the backend speaks HTTP/1.1, which requires it, and like nginx's default
/// (`$proxy_host`, the upstream's name) Fulcrum names the pool.
pub(super) fn prepare(
    mut request: Request<ClientBody>,
    client: &ClientAddr,
    upgrade: Option<HeaderValue>,
    (pool, underscores): (&str, bool),
) -> (Head, ClientBody) {
    let client = ClientSide {
        ip: client.peer.ip(),
        proto: if client.tls { "https" } else { "http" },
        version: request.version(),
        underscores,
        keep_chain: client.keep_chain,
    };
    set_host_from_target(&mut request);
    let has_host = headers::rewrite_request(request.headers_mut(), &client);
    if !has_host && let Ok(name) = HeaderValue::from_str(pool) {
        request.headers_mut().insert(header::HOST, name);
    }
    if request.method() == Method::OPTIONS {
        headers::count_down_max_forwards(request.headers_mut());
    }
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
pub(super) fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// The host a request is for: the target's authority (HTTP/2, absolute-form) or `Host`.
pub(super) fn request_host<B>(request: &Request<B>) -> Option<&str> {
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
pub(super) fn set_host_from_target<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(header::HOST, value);
    }
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
}
