//! Arbitrary bytes through every reader of the codec, with the invariants that must hold
//! whatever they are: no panic, nothing consumed beyond the input, every buffer bounded, and
//! the same outcome however the bytes are split. The fuzz target (`fuzz/`) and a property test
//! both run it.

use bytes::Bytes;
use http::Method;

use super::chunked::{Chunk, Decoder, MAX_LINE, MAX_TRAILERS, Strictness};
use super::head::{self, Limits, Parsed};

const LIMITS: Limits = Limits {
    max_head: 4096,
    max_fields: 32,
    max_line: 1024,
};

/// Runs `input` through the head parsers and the chunked decoder; `split` is where to cut it
/// for the decoder's second, piecewise read.
pub(crate) fn exercise(input: &[u8], split: usize) {
    heads(input);
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let whole = decode(input, input.len().max(1), strictness);
        let pieces = decode(input, split.max(1), strictness);
        assert_eq!(
            whole.is_ok(),
            pieces.is_ok(),
            "the same verdict whatever the split"
        );
        if let (Ok(whole), Ok(pieces)) = (whole, pieces) {
            assert_eq!(whole, pieces, "the same body whatever the split");
        }
    }
}

fn heads(input: &[u8]) {
    let owned = Bytes::copy_from_slice(input);
    if let Ok(Parsed::Complete(head)) =
        head::parse_request(input, &LIMITS, |len| owned.slice(..len))
    {
        assert!(head.len <= input.len() && head.len <= LIMITS.max_head);
        assert!(head.parts.headers.len() <= LIMITS.max_fields + 8);
        // A complete head parses the same with anything after it.
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        let again = head::parse_request(&longer, &LIMITS, |len| {
            Bytes::copy_from_slice(&longer[..len])
        });
        assert!(matches!(again, Ok(Parsed::Complete(h)) if h.len == head.len));
    }
    for method in [Method::GET, Method::HEAD] {
        if let Ok(Parsed::Complete(head)) =
            head::parse_response(input, &method, &LIMITS, |len| owned.slice(..len))
        {
            assert!(head.len <= input.len() && head.len <= LIMITS.max_head);
        }
    }
}

/// The data, trailers and unread rest of a chunked body fed `piece` bytes at a time; an error
/// as the reason alone.
type Decoded = (Vec<u8>, Option<http::HeaderMap>, Option<Vec<u8>>);

fn decode(input: &[u8], piece: usize, strictness: Strictness) -> Result<Decoded, &'static str> {
    let mut decoder = Decoder::new(strictness);
    let mut pending: Vec<u8> = Vec::new();
    let mut data = Vec::new();
    let mut fed = 0;
    while fed < input.len() {
        let next = (fed + piece).min(input.len());
        pending.extend_from_slice(&input[fed..next]);
        fed = next;
        loop {
            // Framing is consumed as it comes, so what is pending never grows past a piece and
            // the decoder's own buffer stays within its bounds.
            assert!(pending.len() <= piece + MAX_LINE + MAX_TRAILERS);
            match decoder.decode(&pending).map_err(|error| error.0)? {
                Chunk::Data { used, data: len } => {
                    assert!(len > 0 && used + len <= pending.len());
                    data.extend_from_slice(&pending[used..used + len]);
                    pending.drain(..used + len);
                }
                Chunk::More { used } => {
                    assert_eq!(used, pending.len());
                    pending.clear();
                    break;
                }
                Chunk::End { used, trailers } => {
                    assert!(used <= pending.len());
                    pending.drain(..used);
                    pending.extend_from_slice(&input[fed..]);
                    return Ok((data, trailers, Some(pending)));
                }
            }
        }
    }
    Ok((data, None, None))
}
