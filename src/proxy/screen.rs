//! Screening: what hyper's parser lets through but a proxy must not forward. Runs on every request
//! before anything else, so a refused request never reaches a backend.
//!
//! - `Host` (HTTP/1.1, and HTTP/2 without `:authority`): exactly one, a valid `host[:port]` (RFC
//!   9112 section 3.2): 400 and close.
//! - Limits: a target longer than `max_uri_bytes` gets 414; a declared `Content-Length` over
//!   `max_body` gets 413 (both close, since the body is not read); an HTTP/2 request with more
//!   than `max_headers` fields gets 431 (HTTP/1's parser counts them itself).
//! - Methods: `CONNECT` gets 405 (Fulcrum is not a tunnel), as does `TRACE` (it would echo
//!   credentials back to a script); `OPTIONS` with `Max-Forwards: 0` is answered here (RFC 9110
//!   section 7.6.2). A target form other methods cannot have (`host:port`, or `*` but for
//!   `OPTIONS`) gets 400.
//! - Loops: a request whose `Via` already names Fulcrum [`LOOP_LIMIT`] times gets 508: a pool
//!   that points back at the proxy cannot multiply a request forever.

use http::uri::Authority;
use http::{HeaderMap, Method, Request, StatusCode, Version, header};

use super::headers::VIA_PSEUDONYM;
use crate::config::Limits;

/// How many Fulcrum hops a request may already have made.
pub const LOOP_LIMIT: usize = 4;

/// Methods Fulcrum forwards, for `Allow`.
pub const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";

/// A request answered here instead of forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub status: StatusCode,
    /// The response body, one line.
    pub reason: &'static str,
    /// Close the connection after answering (the request's framing cannot be trusted, or its
    /// body is not read).
    pub close: bool,
    /// Send `Allow` (405 and OPTIONS).
    pub allow: bool,
}

impl Local {
    fn refuse(status: StatusCode, reason: &'static str) -> Local {
        Local {
            status,
            reason,
            close: true,
            allow: false,
        }
    }
}

/// The 413 for a request whose declared `Content-Length` is over `max_body` (the server's, or
/// its route's).
pub fn body_too_large(headers: &HeaderMap, max_body: u64) -> Option<Local> {
    declared_length(headers)
        .is_some_and(|len| len > max_body)
        .then(|| Local::refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))
}

/// What to answer `request` with here, if it must not be forwarded. An HTTP/1 request's framing
/// was judged as its head was read (`http1/framing.rs`).
pub fn screen<B>(request: &Request<B>, limits: &Limits) -> Option<Local> {
    let headers = request.headers();
    let carried = Carried::in_(headers);
    if request.version() < Version::HTTP_2 {
        if let Some(refusal) = host(headers, request.version() == Version::HTTP_11) {
            return Some(refusal);
        }
    } else {
        // HTTP/1's parser counts the fields as it reads them; HTTP/2's only bounds their bytes.
        // Cookies count as the one field they are joined into (RFC 9113 section 8.2.3):
        // browsers send each cookie as a field of its own.
        let cookies = headers.get_all(header::COOKIE).iter().count();
        if headers.len() - cookies.saturating_sub(1) > limits.max_headers {
            return Some(Local::refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ));
        }
        // Without `:authority`, `Host` carries it (RFC 9113 section 8.3.1), and the HTTP/1.1
        // backend needs exactly one, as from an HTTP/1.1 client.
        if request.uri().authority().is_none()
            && let Some(refusal) = host(headers, true)
        {
            return Some(refusal);
        }
    }
    if let Some(authority) = request.uri().authority()
        && !valid_host(authority.as_str().as_bytes())
    {
        return Some(Local::refuse(
            StatusCode::BAD_REQUEST,
            "malformed authority in the target",
        ));
    }
    if target_len(request) > limits.max_uri_bytes {
        return Some(Local::refuse(
            StatusCode::URI_TOO_LONG,
            "request target too long",
        ));
    }
    if carried.content_length
        && let Some(refusal) = body_too_large(headers, limits.max_body)
    {
        return Some(refusal);
    }
    if let Some(local) = method(request.method(), headers) {
        return Some(local);
    }
    if let Some(refusal) = target_form(request.method(), request.uri()) {
        return Some(refusal);
    }
    if carried.via && fulcrum_hops(headers) >= LOOP_LIMIT {
        return Some(Local {
            status: StatusCode::LOOP_DETECTED,
            reason: "request loop: it has passed through this proxy too many times",
            close: false,
            allow: false,
        });
    }
    None
}

/// Which of the fields screened below a request carries. One pass over the names finds them:
/// most requests carry none of them, and a lookup for each would cost more.
#[derive(Debug, Default)]
struct Carried {
    content_length: bool,
    via: bool,
}

impl Carried {
    fn in_(headers: &HeaderMap) -> Carried {
        let mut carried = Carried::default();
        for name in headers.keys() {
            if name == header::CONTENT_LENGTH {
                carried.content_length = true;
            } else if name == header::VIA {
                carried.via = true;
            }
        }
        carried
    }
}

/// `Host`: at most one, well formed; required when `required` (HTTP/1.1).
fn host(headers: &HeaderMap, required: bool) -> Option<Local> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let bad = |reason| Some(Local::refuse(StatusCode::BAD_REQUEST, reason));
    let Some(host) = hosts.next() else {
        return if required {
            bad("missing Host header")
        } else {
            None
        };
    };
    if hosts.next().is_some() {
        return bad("more than one Host header");
    }
    if valid_host(host.as_bytes()) {
        None
    } else {
        bad("malformed Host header")
    }
}

/// `host[:port]` with a non-empty host, no userinfo, and a port that is a number if present.
fn valid_host(value: &[u8]) -> bool {
    if let Some(valid) = plain_host(value) {
        return valid;
    }
    if value.is_empty() || value.contains(&b'@') {
        return false;
    }
    let Ok(authority) = Authority::try_from(value) else {
        return false;
    };
    let text = authority.as_str();
    let after_host = match text.strip_prefix('[') {
        Some(_) => text.find(']').map_or(text.len(), |end| end + 1),
        None => 0,
    };
    !authority.host().is_empty()
        && (!text[after_host..].contains(':') || authority.port_u16().is_some())
}

/// The verdict on the common `Host` (a name or IPv4 address, a port or none) without parsing an
/// `Authority`, which copies the value; `None` for anything else, which the full check judges.
fn plain_host(value: &[u8]) -> Option<bool> {
    let (host, port) = match value.iter().position(|&b| b == b':') {
        Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
        None => (value, None),
    };
    if host.is_empty() || host.len() > 255 || !host.iter().all(|&b| NAME_BYTE[usize::from(b)]) {
        return None;
    }
    let Some(port) = port else {
        return Some(true);
    };
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = port
        .iter()
        .fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0'));
    Some(number <= u32::from(u16::MAX))
}

/// The bytes of a host name or IPv4 address: letters, digits, `-` and `.` (a table: a test per
/// byte of every request's `Host`).
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.';
        b += 1;
    }
    table
};

fn method(method: &Method, headers: &HeaderMap) -> Option<Local> {
    let not_allowed = |reason| {
        Some(Local {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason,
            close: false,
            allow: true,
        })
    };
    if *method == Method::CONNECT {
        return not_allowed("CONNECT is not supported: this is not a tunnel");
    }
    if *method == Method::TRACE {
        return not_allowed("TRACE is not allowed");
    }
    // The method first: the lookup is for OPTIONS only.
    let last_hop = || {
        headers
            .get(header::MAX_FORWARDS)
            .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
            .is_some_and(|value| value.trim().parse::<u64>() == Ok(0))
    };
    if *method == Method::OPTIONS && last_hop() {
        return Some(Local {
            status: StatusCode::OK,
            reason: "",
            close: false,
            allow: true,
        });
    }
    None
}

/// A target form its method cannot have (RFC 9112 section 3.2): authority-form (`host:port`) is
/// CONNECT's alone, asterisk-form (`*`) OPTIONS' alone. Forwarded, the one would become `/` and
/// the other reach a backend that cannot route it.
fn target_form(method: &Method, uri: &http::Uri) -> Option<Local> {
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Some(Local::refuse(
            StatusCode::BAD_REQUEST,
            "authority-form target is for CONNECT only",
        ));
    }
    if uri.path() == "*" && *method != Method::OPTIONS {
        return Some(Local::refuse(
            StatusCode::BAD_REQUEST,
            "asterisk-form target is for OPTIONS only",
        ));
    }
    None
}

/// The target's length as received: authority (absolute form) plus path and query.
fn target_len<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len())
}

/// The declared body length (hyper has already refused malformed or conflicting values).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many `Via` entries name Fulcrum.
fn fulcrum_hops(headers: &HeaderMap) -> usize {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter(|entry| entry.split_whitespace().nth(1) == Some(VIA_PSEUDONYM))
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_host_shortcut_agrees_with_the_full_check() {
        let hosts: [&[u8]; 18] = [
            b"example.com",
            b"a",
            b"a.b-c.d",
            b"127.0.0.1",
            b"shop:8080",
            b"shop:0",
            b"shop:65535",
            b"shop:65536",
            b"shop:99999",
            b"shop:",
            b":80",
            b"shop:080",
            b"-a..b",
            b"shop:8x",
            b"sh op",
            b"[::1]:80",
            b"user@shop",
            b"shop:123456",
        ];
        for host in hosts {
            let full = {
                // The full check alone, as before the shortcut.
                let text = String::from_utf8_lossy(host);
                !host.is_empty()
                    && !host.contains(&b'@')
                    && http::uri::Authority::try_from(host).is_ok_and(|authority| {
                        let after = if text.starts_with('[') {
                            text.find(']').map_or(text.len(), |end| end + 1)
                        } else {
                            0
                        };
                        !authority.host().is_empty()
                            && (!text[after..].contains(':') || authority.port_u16().is_some())
                    })
            };
            if let Some(shortcut) = super::plain_host(host) {
                assert_eq!(shortcut, full, "{:?}", String::from_utf8_lossy(host));
            }
            assert_eq!(
                super::valid_host(host),
                full,
                "{:?}",
                String::from_utf8_lossy(host)
            );
        }
    }

    use super::*;

    fn request(lines: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::post("/x");
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn status(lines: &[(&str, &str)]) -> Option<u16> {
        screen(&request(lines), &Limits::default()).map(|l| l.status.as_u16())
    }

    #[test]
    fn host_must_be_one_valid_authority() {
        assert_eq!(status(&[("host", "shop.example.com:8080")]), None);
        assert_eq!(status(&[("host", "[::1]:8080")]), None);
        assert_eq!(status(&[]), Some(400));
        for bad in ["", "a b", "a:b:c", "a/b", "user@a", "a:", ":80"] {
            assert_eq!(status(&[("host", bad)]), Some(400), "{bad:?}");
        }
        assert_eq!(status(&[("host", "a"), ("host", "a")]), Some(400));
    }

    #[test]
    fn http2_without_authority_needs_one_valid_host() {
        let h2 = |uri: &str, hosts: &[&str]| {
            let mut builder = Request::get(uri).version(Version::HTTP_2);
            for host in hosts {
                builder = builder.header(header::HOST, *host);
            }
            let request = builder.body(()).unwrap();
            screen(&request, &Limits::default()).map(|l| l.status.as_u16())
        };
        assert_eq!(h2("/x", &["a.test"]), None);
        assert_eq!(h2("/x", &[]), Some(400));
        assert_eq!(h2("/x", &["a.test", "b.test"]), Some(400));
        assert_eq!(h2("/x", &["a b"]), Some(400));
        // With `:authority`, `Host` is rebuilt from it: whatever the client sent does not count.
        assert_eq!(h2("http://a.test/x", &[]), None);
        assert_eq!(h2("http://a.test/x", &["b.test", "c.test"]), None);
    }

    #[test]
    fn http2_fields_are_counted() {
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let h2 = |fields: usize| {
            let mut builder = Request::get("http://a.test/").version(Version::HTTP_2);
            for i in 0..fields {
                builder = builder.header("x-field", i.to_string());
            }
            let request = builder.body(()).unwrap();
            screen(&request, &limits).map(|l| l.status.as_u16())
        };
        assert_eq!(h2(3), None);
        assert_eq!(h2(4), Some(431), "a repeated name counts once per value");
        let mut cookies = Request::get("http://a.test/").version(Version::HTTP_2);
        for i in 0..10 {
            cookies = cookies.header(header::COOKIE, format!("c{i}=v"));
        }
        let request = cookies.header("x-field", "1").body(()).unwrap();
        assert_eq!(
            screen(&request, &limits),
            None,
            "cookie fields count as the one they are joined into"
        );
    }

    #[test]
    fn options_with_no_hops_left_is_answered_here() {
        for zero in ["0", "00", " 0 "] {
            let request = Request::options("/")
                .header(header::HOST, "a")
                .header(header::MAX_FORWARDS, zero)
                .body(())
                .unwrap();
            let local = screen(&request, &Limits::default());
            assert_eq!(local.map(|l| l.status.as_u16()), Some(200), "{zero:?}");
        }
    }

    #[test]
    fn target_forms_match_their_methods() {
        let verdict = |method: &str, target: &str| {
            let request = Request::builder()
                .method(method)
                .uri(target)
                .header(header::HOST, "a")
                .body(())
                .unwrap();
            screen(&request, &Limits::default()).map(|l| l.status.as_u16())
        };
        assert_eq!(verdict("GET", "a.example:80"), Some(400));
        assert_eq!(verdict("GET", "*"), Some(400));
        assert_eq!(verdict("OPTIONS", "*"), None);
        assert_eq!(verdict("GET", "/x"), None);
        assert_eq!(verdict("GET", "http://a/x"), None);
        assert_eq!(verdict("CONNECT", "a.example:443"), Some(405));
    }

    #[test]
    fn loops_are_cut_after_the_limit() {
        let via = "1.1 fulcrum, 1.1 fulcrum, 1.0 edge, 1.1 fulcrum";
        assert_eq!(status(&[("host", "a"), ("via", via)]), None);
        let looped = format!("{via}, 1.1 fulcrum");
        assert_eq!(status(&[("host", "a"), ("via", &looped)]), Some(508));
    }
}
