//! A request's head kept apart from its body: the rewritten head a retry builds its request
//! from again, and which methods may be sent twice.

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};

use crate::body::RequestBody;

/// The rewritten request head, kept to build the request again for a retry.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) method: Method,
    /// Origin-form: path and query only.
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

impl Head {
    /// A copy of `request`'s head that owns its bytes, as [`Head::detached`].
    pub(crate) fn copy_of<B>(request: &Request<B>) -> Head {
        detach(request.method(), request.uri(), request.headers())
    }

    /// A copy that owns its bytes, in one allocation for all values. A plain clone would share
    /// the values' and target's bytes with hyper's connection read buffer, keeping that buffer
    /// shared for as long as the request lives.
    pub(crate) fn detached(&self) -> Head {
        detach(&self.method, &self.uri, &self.headers)
    }

    /// The HTTP/1.1 request for this head and `body`.
    pub(crate) fn into_request(self, body: RequestBody) -> Request<RequestBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

/// A copy of a head that owns its bytes: every value copied into one allocation, each header a
/// slice of it.
fn detach(method: &Method, uri: &Uri, headers: &HeaderMap) -> Head {
    let total: usize = headers.values().map(|v| v.len()).sum();
    let mut buffer = BytesMut::with_capacity(total);
    for value in headers.values() {
        buffer.extend_from_slice(value.as_bytes());
    }
    let buffer = buffer.freeze();
    let mut copied = HeaderMap::with_capacity(headers.len());
    let mut offset = 0;
    for (name, value) in headers {
        let bytes = buffer.slice(offset..offset + value.len());
        offset += value.len();
        let mut copy =
            HeaderValue::from_maybe_shared(bytes).expect("a copy of a valid header value is valid");
        copy.set_sensitive(value.is_sensitive());
        copied.append(name.clone(), copy);
    }
    let uri = uri
        .path_and_query()
        .and_then(|pq| Uri::try_from(pq.as_str().to_owned()).ok())
        .unwrap_or_else(|| uri.clone());
    Head {
        method: method.clone(),
        uri,
        headers: copied,
    }
}

/// Methods that may be sent twice without a different effect (RFC 9110 section 9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_head_is_equal_and_owns_its_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop.example.com"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 10.0.0.1"),
        );
        headers.append("via", HeaderValue::from_static("1.0 edge"));
        headers.append("via", HeaderValue::from_static("1.1 fulcrum"));
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        let head = Head {
            method: Method::PUT,
            uri: "/a%2Fb?x=1".parse().unwrap(),
            headers,
        };
        let copy = head.detached();
        assert_eq!(copy.method, Method::PUT);
        assert_eq!(copy.uri, head.uri);
        assert_eq!(copy.headers, head.headers);
        assert!(copy.headers["authorization"].is_sensitive());
        let via: Vec<_> = copy.headers.get_all("via").iter().collect();
        assert_eq!(
            via,
            ["1.0 edge", "1.1 fulcrum"],
            "repeated headers keep their order"
        );
    }
}
