//! Header names as parsed from the wire, remembered per thread by their exact bytes.
//!
//! A backend sends the same few names in every response, and clients the same few in every
//! request. Turning bytes into a [`HeaderName`] lower-cases them, matches them against the
//! standard table and, for any other name, allocates; comparing them with the name last seen in
//! the same slot costs a fraction of that. The cache is keyed by the bytes as received (case
//! included), so it returns exactly what [`HeaderName::from_bytes`] would.

use std::cell::RefCell;

use http::header::{HeaderName, InvalidHeaderName};

/// Slots in each thread's cache (direct-mapped: a name evicts whatever shared its slot).
const SLOTS: usize = 64;

/// Longer names are rare, and converted every time.
const LONGEST: usize = 32;

/// A name as received, and what it parsed to.
struct Seen {
    len: usize,
    bytes: [u8; LONGEST],
    name: HeaderName,
}

thread_local! {
    static SEEN: RefCell<[Option<Seen>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

/// [`HeaderName::from_bytes`], from this thread's cache when these exact bytes were seen last in
/// their slot.
pub fn header_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return HeaderName::from_bytes(bytes);
    };
    if bytes.len() > LONGEST {
        return HeaderName::from_bytes(bytes);
    }
    let slot = (bytes.len() * 7 + usize::from(first) * 3 + usize::from(last)) % SLOTS;
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if let Some(known) = &seen[slot]
            && known.bytes[..known.len] == *bytes
        {
            return Ok(known.name.clone());
        }
        let name = HeaderName::from_bytes(bytes)?;
        let mut kept = [0; LONGEST];
        kept[..bytes.len()].copy_from_slice(bytes);
        seen[slot] = Some(Seen {
            len: bytes.len(),
            bytes: kept,
            name: name.clone(),
        });
        Ok(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_from_bytes_seen_or_not() {
        let names: [&[u8]; 9] = [
            b"Content-Length",
            b"content-length",
            b"CONTENT-LENGTH",
            b"X-Custom-Thing",
            b"x-custom-thing",
            b"Date",
            b"Server",
            b"a-name-longer-than-thirty-two-bytes-in-all",
            b"Set-Cookie",
        ];
        // Twice: the first round fills the cache, the second reads it.
        for _ in 0..2 {
            for bytes in names {
                assert_eq!(
                    header_name(bytes).unwrap(),
                    HeaderName::from_bytes(bytes).unwrap()
                );
            }
        }
    }

    #[test]
    fn invalid_names_stay_invalid() {
        for bytes in [&b""[..], b"bad name", b"bad:name", b"caf\xc3\xa9"] {
            assert!(header_name(bytes).is_err(), "{bytes:?}");
            assert!(header_name(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn names_sharing_a_slot_evict_each_other_and_stay_right() {
        // Same length, first and last byte: the same slot.
        let (a, b) = (&b"x-aaaa-z"[..], &b"x-bbbb-z"[..]);
        for _ in 0..3 {
            assert_eq!(header_name(a).unwrap(), "x-aaaa-z");
            assert_eq!(header_name(b).unwrap(), "x-bbbb-z");
        }
    }
}
