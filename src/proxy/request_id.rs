//! `X-Request-Id`: one id per request, shared by the client, the proxy and the backend, so their
//! logs can be joined. A client's id is kept when it is reasonable (visible ASCII, at most
//! [`MAX_LEN`] bytes); otherwise the proxy makes one: 32 random hex digits (128 bits).

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};

use crate::arena;

/// The header's name.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id that is kept.
pub const MAX_LEN: usize = 200;

/// The request's id: the client's, if acceptable, else a new one (which is also set on
/// `headers`, so the backend receives it).
///
/// The id is marked sensitive, which HTTP/2's header compression (HPACK) sends as a literal
/// never indexed (RFC 7541 section 6.2.3): a value unique to one request is never sent again, so
/// indexing it would only fill the connection's table with ids, evict the fields that do repeat
/// (`server`, `content-type`, `via`), and make each response's lookup compare its id with every
/// id still in the table. HTTP/1 ignores the mark.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    // One lookup for the check and the insert: hashing the name costs as much as the rest.
    match headers.entry(X_REQUEST_ID) {
        Entry::Occupied(mut kept) if acceptable(kept.get()) => {
            kept.get_mut().set_sensitive(true);
            kept.get().clone()
        }
        Entry::Occupied(mut replaced) => {
            let id = generate();
            replaced.insert(id.clone());
            id
        }
        Entry::Vacant(vacant) => vacant.insert(generate()).clone(),
    }
}

fn acceptable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// 32 random hex digits.
fn generate() -> HeaderValue {
    let mut digits = [0u8; 32];
    // A byte, two digits, at a time: shifting a u128 for each digit cost more than the rest.
    let random = fastrand::u128(..).to_le_bytes();
    for (pair, byte) in digits.chunks_exact_mut(2).zip(random) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    // In the arena: the id is cloned for the backend, the log and the response, and a clone of
    // an arena slice is a count, where a clone of a fresh allocation is another allocation.
    let mut id = HeaderValue::from_maybe_shared(arena::copy(&digits))
        .expect("hex digits form a valid header value");
    id.set_sensitive(true);
    id
}

/// Each byte's two hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
        byte += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        let id = ensure(&mut headers);
        assert_eq!(id, "abc-123");
        assert!(id.is_sensitive(), "never indexed by HPACK");
        assert_eq!(headers[X_REQUEST_ID], "abc-123");
        assert!(headers[X_REQUEST_ID].is_sensitive());
    }

    #[test]
    fn a_missing_or_unreasonable_id_is_replaced_by_a_fresh_one() {
        for bad in [
            None,
            Some(""),
            Some("has space"),
            Some(&*"x".repeat(MAX_LEN + 1)),
        ] {
            let mut headers = HeaderMap::new();
            if let Some(bad) = bad {
                headers.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            }
            let id = ensure(&mut headers);
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
            assert_eq!(headers[X_REQUEST_ID], id, "the backend receives the new id");
            assert!(id.is_sensitive(), "never indexed by HPACK");
        }
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
    }
}
