//! The fields a trailer must not carry, removed from every trailer section the proxy passes on:
//! a client's to its backend (`inbound.rs`), a backend's to its client (`upstream/relayed.rs`).

use http::HeaderMap;

/// Fields a trailer must not carry (RFC 9110 section 6.5.1): framing, routing, authentication,
/// connection management and the proxy's own. Whatever a client puts after the body cannot
/// change how a backend frames, routes or trusts the request.
const NOT_IN_TRAILERS: [&str; 22] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "authorization",
    "cookie",
    "content-type",
    "content-encoding",
    "content-range",
    "expect",
    "max-forwards",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Removes from `trailers` every field a trailer must not carry.
pub fn strip_trailer_fields(trailers: &mut HeaderMap) {
    for name in NOT_IN_TRAILERS {
        trailers.remove(name);
    }
}
