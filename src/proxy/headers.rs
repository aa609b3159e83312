//! Header rewriting for a forwarded message (RFC 9110 section 7.6).
//!
//! Hop-by-hop headers describe one connection and must not cross the proxy: `Connection` and
//! every header it names, `Keep-Alive`, `Proxy-Connection`, `TE` (except its `trailers` token),
//! `Transfer-Encoding` (hyper re-frames bodies), `Upgrade`, `HTTP2-Settings` (the h2c upgrade's,
//! connection-specific by RFC 9113 section 3.2.1), and the proxy's own credentials.
//! Requests lose `Expect` too: the proxy answers it (`100 Continue` to its client) and sends the
//! body on whatever the backend says, as nginx and Envoy do, so the backend is asked nothing.
//! Requests then gain `X-Forwarded-For/-Proto/-Host` and both directions gain `Via`.
//!
//! Request headers whose names have an underscore are dropped, as nginx drops them by default
//! (`underscores_in_headers off`): CGI-style backends (WSGI, PHP, Rack) read `X_Forwarded_For`
//! and `X-Forwarded-For` as the same `HTTP_X_FORWARDED_FOR`, so a client could otherwise set
//! forwarding headers the proxy owns. `[server] underscores_in_headers = true` keeps them.
//!
//! Everything here is a pure function of a header map, so it is unit-tested without sockets.
//! What a trailer may carry is the body's business (`body/trailers.rs`).

use std::net::IpAddr;

use bytes::{BufMut, Bytes};
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::arena;

/// The pseudonym Fulcrum gives itself in `Via` (RFC 9110 section 7.6.3).
pub const VIA_PSEUDONYM: &str = "fulcrum";

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that never cross a proxy, whatever `Connection` says.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("http2-settings"),
];

/// Facts about the client side of a request that the backend is told.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    /// The peer address of the client connection.
    pub ip: IpAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The protocol version the request arrived with.
    pub version: Version,
    /// Header names with an underscore are forwarded, not dropped.
    pub underscores: bool,
    /// An incoming `X-Forwarded-For` is extended; otherwise it is replaced (an untrusted peer's,
    /// with `trusted_proxies` set).
    pub keep_chain: bool,
}

/// Rewrites a request's headers for the backend: hop-by-hop removed, forwarding headers set.
/// Returns whether the request has a `Host` (only an HTTP/1.0 one can lack it).
pub fn rewrite_request(headers: &mut HeaderMap, client: &ClientSide) -> bool {
    if client.version == Version::HTTP_2 {
        join_cookies(headers);
    }
    let present = Present::in_(headers, !client.underscores);
    let keep_trailers = present.te && te_allows_trailers(headers);
    strip_present(headers, present.hop);
    if present.underscored {
        strip_underscored(headers);
    }
    if present.te {
        headers.remove(header::TE);
    }
    if present.expect {
        headers.remove(header::EXPECT);
    }
    if keep_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    append_forwarded_for(
        headers,
        client.ip,
        present.forwarded_for && client.keep_chain,
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(client.proto),
    );
    let has_host = present.host.is_some();
    if let Some(host) = present.host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    append_via(headers, client.version);
    has_host
}

/// `OPTIONS` (and `TRACE`) carry `Max-Forwards` to count down: each intermediary forwards one
/// less (RFC 9110 section 7.6.2). Zero is answered by the proxy itself (`screen.rs`); a value
/// that is not a number is left alone.
pub fn count_down_max_forwards(headers: &mut HeaderMap) {
    let Some(value) = headers.get_mut(header::MAX_FORWARDS) else {
        return;
    };
    let left = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if let Some(left) = left.filter(|n| *n > 0) {
        *value = HeaderValue::from(left - 1);
    }
}

/// Rewrites a backend response's headers for the client.
pub fn rewrite_response(headers: &mut HeaderMap, version: Version) {
    let present = Present::in_(headers, false);
    strip_present(headers, present.hop);
    if present.proxy_authenticate {
        headers.remove(header::PROXY_AUTHENTICATE);
    }
    append_via(headers, version);
}

/// Which of the fields the rewrites act on a message carries. One pass over the names finds
/// them: most messages carry none of them, and a lookup for each would cost more.
#[derive(Debug, Default)]
struct Present {
    /// Each of [`HOP_BY_HOP`], in its order.
    hop: [bool; 7],
    te: bool,
    expect: bool,
    forwarded_for: bool,
    proxy_authenticate: bool,
    /// A name with an underscore.
    underscored: bool,
    /// The first `Host` value.
    host: Option<HeaderValue>,
}

impl Present {
    /// The fields of `headers`; names with an underscore only looked for when `underscores`.
    fn in_(headers: &HeaderMap, underscores: bool) -> Present {
        let mut present = Present::default();
        for (name, value) in headers {
            if name == header::HOST {
                present.host.get_or_insert_with(|| value.clone());
            } else if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
                present.hop[i] = true;
            } else if name == header::TE {
                present.te = true;
            } else if name == header::EXPECT {
                present.expect = true;
            } else if name == X_FORWARDED_FOR {
                present.forwarded_for = true;
            } else if name == header::PROXY_AUTHENTICATE {
                present.proxy_authenticate = true;
            } else if underscores && has_underscore(name) {
                present.underscored = true;
            }
        }
        present
    }
}

/// Whether a header name has an underscore. It is asked of every request header, so eight bytes
/// at a time: a byte of `word ^ UNDERSCORES` is zero where the name has `_`, and the classic
/// test for a zero byte (`(x - 0x01..) & !x & 0x80..`) finds one in a few instructions, where a
/// byte loop took one compare and branch per byte.
fn has_underscore(name: &HeaderName) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const UNDERSCORES: u64 = u64::from_ne_bytes([b'_'; 8]);
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let bytes = name.as_str().as_bytes();
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("chunks of eight"));
        if has_zero_byte(word ^ UNDERSCORES) {
            return true;
        }
    }
    // The rest, padded with bytes that are not `_`.
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    has_zero_byte(u64::from_ne_bytes(last) ^ UNDERSCORES)
}

/// Removes every header whose name has an underscore.
fn strip_underscored(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| has_underscore(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Removes `Connection`, every header it names (except `Host`, which routing already used and
/// the backend must still see), and those of the fixed hop-by-hop set that are `present`.
fn strip_present(headers: &mut HeaderMap, present: [bool; 7]) {
    if present[0] {
        remove_named_by_connection(headers);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
}

/// Removes the headers that `Connection` names (RFC 9110 section 7.6.1), except `Host` and
/// `X-Request-Id`: routing used the one, the proxy set the other, and the backend gets both.
fn remove_named_by_connection(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        // The usual tokens name no header, or one removed anyway: no allocation for them.
        .filter(|token| {
            !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close")
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| *name != header::HOST && *name != super::request_id::X_REQUEST_ID)
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// HTTP/2 clients may split `Cookie` into one field per cookie; an HTTP/1.1 backend must get
/// them as one, joined with "; " (RFC 9113 section 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// Whether `TE` lists the `trailers` token.
fn te_allows_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| {
            let token = token.split(';').next().unwrap_or("").trim();
            token.eq_ignore_ascii_case("trailers")
        })
}

/// Appends the client address to `X-Forwarded-For`, keeping an incoming chain (if `present`)
/// as one list.
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr, present: bool) {
    let name = X_FORWARDED_FOR;
    let chain = present.then(|| headers.get_all(&name));
    let incoming: usize = chain.iter().flatten().map(|v| v.len() + 2).sum();
    let write_chain = |out: &mut dyn BufMut| {
        for value in chain.iter().flatten() {
            if let Ok(text) = value.to_str() {
                out.put_slice(text.trim().as_bytes());
                out.put_slice(b", ");
            }
        }
        write_ip(ip, out);
    };
    // Written straight into the arena when it fits, as it nearly always does.
    let chain = if incoming + LONGEST_IP <= arena::LARGEST {
        arena::fill(incoming + LONGEST_IP, |chunk| write_chain(chunk)).0
    } else {
        let mut chain = Vec::with_capacity(incoming + LONGEST_IP);
        write_chain(&mut chain);
        Bytes::from(chain)
    };
    let value = HeaderValue::from_maybe_shared(chain)
        .expect("addresses and visible ASCII form a valid header");
    headers.insert(name, value);
}

/// The longest text of an IP address (IPv6 with an embedded IPv4 address).
pub(super) const LONGEST_IP: usize = 45;

/// Writes `ip` as text; IPv4, the common case, without the formatting machinery.
pub(super) fn write_ip(ip: IpAddr, out: &mut dyn BufMut) {
    let IpAddr::V4(v4) = ip else {
        out.put_slice(ip.to_string().as_bytes());
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b'.');
        }
        if octet >= 100 {
            out.put_u8(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.put_u8(b'0' + octet / 10 % 10);
        }
        out.put_u8(b'0' + octet % 10);
    }
}

/// Appends this hop to `Via`, named by the protocol the message arrived with.
fn append_via(headers: &mut HeaderMap, version: Version) {
    let value = match version {
        Version::HTTP_09 => "0.9 fulcrum",
        Version::HTTP_10 => "1.0 fulcrum",
        Version::HTTP_2 => "2 fulcrum",
        Version::HTTP_3 => "3 fulcrum",
        _ => "1.1 fulcrum",
    };
    headers.append(header::VIA, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn client() -> ClientSide {
        ClientSide {
            ip: "10.1.2.3".parse().unwrap(),
            proto: "http",
            version: Version::HTTP_11,
            underscores: false,
            keep_chain: true,
        }
    }

    #[test]
    fn an_underscore_is_found_wherever_it_is() {
        for len in 1..40 {
            let plain = "a".repeat(len);
            assert!(!has_underscore(
                &HeaderName::from_bytes(plain.as_bytes()).unwrap()
            ));
            for at in 0..len {
                let mut name = plain.clone().into_bytes();
                name[at] = b'_';
                let name = HeaderName::from_bytes(&name).unwrap();
                assert!(has_underscore(&name), "{name}");
            }
        }
        // Bytes next to `_` in value (`^`, `` ` ``, `~`) are not taken for it.
        assert!(!has_underscore(&HeaderName::from_static("x-^`~-name")));
    }

    #[test]
    fn names_with_underscores_are_dropped_unless_kept() {
        let request = || {
            map(&[
                ("x_forwarded_for", "6.6.6.6"),
                ("x_forwarded_proto", "https"),
                ("x-custom", "kept"),
                ("x_custom", "dropped"),
            ])
        };
        let mut headers = request();
        rewrite_request(&mut headers, &client());
        assert!(!headers.keys().any(|name| name.as_str().contains('_')));
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");

        let mut headers = request();
        let keeping = ClientSide {
            underscores: true,
            ..client()
        };
        rewrite_request(&mut headers, &keeping);
        assert_eq!(headers["x_custom"], "dropped");
        assert_eq!(headers["x_forwarded_proto"], "https");
    }

    #[test]
    fn removes_hop_by_hop_and_what_connection_names() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("te", "gzip"),
            ("host", "example.com"),
            ("x-kept", "yes"),
        ]);
        rewrite_request(&mut headers, &client());
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "x-other",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "http2-settings",
            "te",
        ] {
            assert!(!headers.contains_key(gone), "{gone} must not be forwarded");
        }
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(headers["host"], "example.com", "Host is kept");
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "255.255.100.9",
            "::1",
            "fe80::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(ip, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut headers = map(&[("connection", "host"), ("host", "example.com")]);
        rewrite_request(&mut headers, &client());
        assert_eq!(headers["host"], "example.com");
    }

    #[test]
    fn expect_is_answered_here_not_forwarded() {
        for value in ["100-continue", "something-else"] {
            let mut headers = map(&[("host", "a"), ("expect", value), ("x-kept", "1")]);
            rewrite_request(&mut headers, &client());
            assert!(!headers.contains_key(header::EXPECT), "{value}");
            assert_eq!(headers["x-kept"], "1");
        }
    }

    #[test]
    fn te_keeps_only_trailers() {
        let mut headers = map(&[("te", "gzip, trailers;q=1")]);
        rewrite_request(&mut headers, &client());
        assert_eq!(headers["te"], "trailers");
    }

    #[test]
    fn forwarded_for_extends_the_chain() {
        let mut headers = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        rewrite_request(&mut headers, &client());
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        let mut fresh = HeaderMap::new();
        rewrite_request(&mut fresh, &client());
        assert_eq!(fresh["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn max_forwards_counts_down() {
        for (given, sent) in [("5", "4"), (" 1 ", "0"), ("0", "0"), ("x", "x")] {
            let mut headers = map(&[("max-forwards", given)]);
            count_down_max_forwards(&mut headers);
            assert_eq!(headers["max-forwards"], sent, "{given:?}");
        }
        let mut none = HeaderMap::new();
        count_down_max_forwards(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn connection_cannot_remove_the_request_id() {
        let mut headers = map(&[
            ("host", "a"),
            ("connection", "x-request-id"),
            ("x-request-id", "abc123"),
        ]);
        assert!(rewrite_request(&mut headers, &client()), "Host is there");
        assert_eq!(headers["x-request-id"], "abc123");
        let mut headers = map(&[("connection", "close")]);
        assert!(!rewrite_request(&mut headers, &client()), "no Host");
    }

    #[test]
    fn forwarding_headers_are_set() {
        let mut headers = map(&[
            ("host", "shop.example.com:8080"),
            ("x-forwarded-proto", "https"),
            ("via", "1.0 edge"),
        ]);
        rewrite_request(&mut headers, &client());
        assert_eq!(
            headers["x-forwarded-proto"], "http",
            "the client cannot claim https"
        );
        assert_eq!(headers["x-forwarded-host"], "shop.example.com:8080");
        let via: Vec<_> = headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.0 edge", "1.1 fulcrum"]);
    }

    #[test]
    fn response_loses_hop_by_hop_and_gains_via() {
        let mut headers = map(&[
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "text/plain"),
        ]);
        rewrite_response(&mut headers, Version::HTTP_11);
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("transfer-encoding"));
        assert!(!headers.contains_key("proxy-authenticate"));
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["via"], "1.1 fulcrum");
    }

    #[test]
    fn ipv6_client_is_written_bare() {
        let mut headers = HeaderMap::new();
        let client = ClientSide {
            ip: "::1".parse().unwrap(),
            ..client()
        };
        rewrite_request(&mut headers, &client);
        assert_eq!(headers["x-forwarded-for"], "::1");
    }

    #[test]
    fn split_http2_cookies_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        let client = ClientSide {
            ip: "127.0.0.1".parse().unwrap(),
            proto: "https",
            version: Version::HTTP_2,
            underscores: false,
            keep_chain: true,
        };
        rewrite_request(&mut headers, &client);
        let cookies: Vec<_> = headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }
}

/// Header maps for the request path's property tests: names the proxy treats specially and
/// values that bend its rules, in any number and order.
#[cfg(test)]
pub(super) mod arbitrary {
    use http::{HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("connection".to_owned()),
            Just("keep-alive".to_owned()),
            Just("transfer-encoding".to_owned()),
            Just("upgrade".to_owned()),
            Just("te".to_owned()),
            Just("host".to_owned()),
            Just("content-length".to_owned()),
            Just("x-forwarded-for".to_owned()),
            Just("via".to_owned()),
            Just("max-forwards".to_owned()),
            "x-[a-z]{1,8}",
        ]
    }

    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            Just("chunked".to_owned()),
            Just("close, x-a, upgrade".to_owned()),
            Just("1.1 fulcrum, 1.1 fulcrum".to_owned()),
            Just("0".to_owned()),
        ]
    }

    pub fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((header_name(), header_value()), 0..12)
    }

    /// The valid pairs of `pairs`, in order.
    pub fn header_map(pairs: &[(String, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing (proptest): whatever headers a request carries, none that is hop-by-hop
    //! reaches the backend.

    use std::net::IpAddr;

    use http::{HeaderName, Version};
    use proptest::prelude::*;

    use super::arbitrary::{header_map, headers};
    use super::{ClientSide, rewrite_request};

    const HOP_BY_HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// After rewriting, no hop-by-hop header and nothing `Connection` named reaches the backend,
        /// the client's address ends `X-Forwarded-For`, and Fulcrum is the last `Via` entry.
        #[test]
        fn rewritten_requests_carry_no_hop_by_hop_headers(pairs in headers(), ip in any::<[u8; 4]>()) {
            let mut map = header_map(&pairs);
            let named: Vec<String> = map
                .get_all("connection")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
                .filter(|t| !t.is_empty())
                .collect();
            let ip = IpAddr::from(ip);
            let client = ClientSide { ip, proto: "http", version: Version::HTTP_11, underscores: true, keep_chain: true };
            rewrite_request(&mut map, &client);
            for name in HOP_BY_HOP {
                prop_assert!(!map.contains_key(name), "{name} survived");
            }
            for name in named {
                if HeaderName::from_bytes(name.as_bytes()).is_ok() && !["x-forwarded-for", "via", "x-forwarded-proto", "x-forwarded-host", "te"].contains(&name.as_str()) {
                    prop_assert!(!map.contains_key(name.as_str()), "{name}, named by Connection, survived");
                }
            }
            let forwarded = map.get_all("x-forwarded-for").iter().next_back().unwrap().to_str().unwrap().to_owned();
            prop_assert!(forwarded.ends_with(&ip.to_string()), "{forwarded}");
            let via = map.get_all("via").iter().next_back().unwrap().to_str().unwrap().to_owned();
            prop_assert!(via.ends_with("fulcrum"), "{via}");
        }
    }
}
