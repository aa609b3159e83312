//! A request head read by Fulcrum's own connection: parsed into a request when it is the common
//! kind this connection serves, or judged hyper's.
//!
//! Served here: HTTP/1.1, an origin-form target, no body (`Content-Length` absent or 0, no
//! `Transfer-Encoding`), no `Upgrade`, no `Expect`, and a method other than `HEAD` or `CONNECT`.
//! Everything else, malformed heads included, goes to hyper, which answers them as it always
//! has (400, 431, 100-continue, upgrades, HTTP/1.0 keep-alive, HTTP/2 prior knowledge).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::body::ClientBody;
use crate::{arena, names};

/// hyper's default count of request header fields, the largest this connection parses.
const MAX_HEADERS: usize = 100;

/// Fields the proxy may add to a request on its way.
const ADDED_FIELDS: usize = 8;

/// A request this connection serves.
#[derive(Debug)]
pub(super) struct Served {
    pub(super) request: Request<ClientBody>,
    /// Bytes of the buffer its head took.
    pub(super) len: usize,
    pub(super) asks: Asks,
}

/// What the client's fields ask of the response's connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Asks {
    /// Close after it (`Connection: close`).
    pub(super) close: bool,
    /// Trailer fields may be sent (`TE: trailers`); as with hyper, they are dropped otherwise.
    pub(super) trailers: bool,
}

/// Parses the head at the start of `bytes`; header values share `bytes`, copied nowhere.
/// `None`: a head not (yet) complete, or one hyper must serve.
pub(super) fn parse(bytes: &Bytes, max_headers: usize) -> Option<Served> {
    // Uninitialised: a hundred empty fields would be 3 KiB written for every request.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut []);
    let len = match head.parse_with_uninit_headers(bytes, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    if head.version != Some(1) || head.headers.len() > max_headers {
        return None;
    }
    let method = Method::from_bytes(head.method?.as_bytes()).ok()?;
    if method == Method::HEAD || method == Method::CONNECT {
        return None;
    }
    let uri = origin_form(bytes, head.path?)?;
    let (headers, asks) = fields_of(bytes, head.headers)?;
    let mut request = Request::new(ClientBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(Served { request, len, asks })
}

/// The target, if it is in origin form (`/path?query`) and valid.
fn origin_form(bytes: &Bytes, path: &str) -> Option<Uri> {
    if !path.starts_with('/') {
        return None;
    }
    Uri::from_maybe_shared(bytes.slice_ref(path.as_bytes())).ok()
}

/// The header fields, and what they ask of the connection; `None` if any field makes the
/// request hyper's.
fn fields_of(bytes: &Bytes, fields: &[httparse::Header<'_>]) -> Option<(HeaderMap, Asks)> {
    // Room for the fields the proxy adds (request id, forwarding, `Via`): growing the map
    // re-hashes it, a cost hyper avoids by reusing the last response's map.
    let mut headers = arena::header_map(fields.len() + ADDED_FIELDS);
    let mut asks = Asks::default();
    for field in fields {
        let name = names::header_name(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(field.value)).ok()?;
        match name {
            header::CONTENT_LENGTH if value.as_bytes() != b"0" => return None,
            // Kept once, as hyper does: some servers refuse a repeated Content-Length.
            header::CONTENT_LENGTH if headers.contains_key(header::CONTENT_LENGTH) => continue,
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => return None,
            header::CONNECTION => asks.close |= lists(&value, b"close"),
            header::TE => asks.trailers |= lists(&value, b"trailers"),
            _ => {}
        }
        headers.append(name, value);
    }
    Some((headers, asks))
}

/// Whether a comma-separated field value lists `token` (in any case).
pub(super) fn lists(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|listed| listed.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Option<Served> {
        parse(&Bytes::copy_from_slice(head.as_bytes()), MAX_HEADERS)
    }

    fn served(head: &str) -> (Request<ClientBody>, usize, Asks) {
        match parsed(head) {
            Some(Served { request, len, asks }) => (request, len, asks),
            None => panic!("served here: {head:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_served_here_with_its_fields_in_order() {
        let head = "GET /a%2Fb?x=1 HTTP/1.1\r\nHost: shop\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next";
        let (request, len, asks) = served(head);
        assert_eq!(len, head.len() - "GET /next".len());
        assert_eq!(asks, Asks::default());
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().to_string(), "/a%2Fb?x=1");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "shop");
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn connection_close_is_noticed_among_other_tokens() {
        let (_, _, asks) = served("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo, Close\r\n\r\n");
        assert!(asks.close);
        let (_, _, asks) = served("DELETE / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        assert!(!asks.close);
    }

    #[test]
    fn te_trailers_is_noticed_among_other_codings() {
        let (_, _, asks) = served("GET / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\nte: Trailers\r\n\r\n");
        assert!(asks.trailers);
        let (_, _, asks) = served("GET / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\n\r\n");
        assert!(!asks.trailers);
    }

    #[test]
    fn an_empty_body_declared_with_content_length_zero_is_served_here() {
        served("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn a_repeated_zero_content_length_is_kept_once() {
        let (request, _, _) =
            served("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            request.headers().get_all("content-length").iter().count(),
            1
        );
    }

    #[test]
    fn everything_else_is_hypers() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost a\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(parsed(head).is_none(), "hyper's: {head:?}");
        }
    }

    #[test]
    fn more_fields_than_allowed_is_hypers_to_refuse() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        assert!(parse(&bytes, 2).is_none());
        assert!(parse(&bytes, 3).is_some());
    }
}
