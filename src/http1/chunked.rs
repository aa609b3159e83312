//! The chunked transfer coding (RFC 9112 section 7.1): a decoder that takes a body's bytes as
//! they come, in any pieces, and the encoder's few pieces.
//!
//! The decoder reads requests strictly: a chunk size is hex digits with optional whitespace
//! after it, every line ends in CR LF, an extension is visible characters. Responses are read
//! with two leniencies that cannot change where a body ends: whitespace before a chunk size, and
//! a bare LF ending a line. A response is read by Fulcrum alone (its backend connection is its
//! own) and re-framed for the client, so this tolerates a sloppy backend without letting any
//! second party read the bytes differently; a request is re-framed too, but a party in front of
//! Fulcrum may have read it, so there nothing ambiguous passes.
//!
//! Everything is bounded: a chunk-size line (with its extensions) of [`MAX_LINE`] bytes, a
//! trailer section of [`MAX_TRAILERS`] bytes and [`MAX_TRAILER_FIELDS`] fields.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Longest chunk-size line, extensions included.
pub(crate) const MAX_LINE: usize = 4096;
/// Largest trailer section.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields.
pub(crate) const MAX_TRAILER_FIELDS: usize = 100;

/// What the decoder found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// `used` bytes of framing, then `data` bytes of the body's data (at least one) right after
    /// them in the input. The caller consumes both.
    Data { used: usize, data: usize },
    /// `used` bytes of framing (all that was given), and the body goes on: more bytes needed.
    More { used: usize },
    /// The body ended `used` bytes in, with its trailer fields if it had any.
    End {
        used: usize,
        trailers: Option<HeaderMap>,
    },
}

/// Why a chunked body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError(pub(crate) &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// How strictly a body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Requests: the grammar as written.
    Strict,
    /// Responses: whitespace before a chunk size and bare LF line ends are taken too.
    Lenient,
}

/// A chunked body being read.
#[derive(Debug)]
pub(crate) struct Decoder {
    at: At,
    lenient: bool,
    /// Bytes of the chunk-size line read so far.
    line: usize,
    /// The trailer section read so far.
    trailers: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Where a chunk-size line starts.
    Start,
    /// In the size's digits: the size so far.
    Size(u64),
    /// In whitespace after the size.
    AfterSize(u64),
    /// In an extension.
    Extension(u64),
    /// The line's CR was read; its LF must follow.
    SizeLf(u64),
    /// In a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CR LF.
    DataCr,
    DataLf,
    /// In the trailer section.
    Trailers,
    Done,
}

impl Decoder {
    pub(crate) fn new(strictness: Strictness) -> Decoder {
        Decoder {
            at: At::Start,
            lenient: strictness == Strictness::Lenient,
            line: 0,
            trailers: Vec::new(),
        }
    }

    /// Bytes of data the current chunk has declared and not yet given.
    pub(crate) fn pending(&self) -> u64 {
        match self.at {
            At::Data(left) => left,
            _ => 0,
        }
    }

    /// Reads from the start of `input`: framing bytes are consumed here, data bytes are left to
    /// the caller (see [`Chunk`]). Once the body has ended it ends again at once.
    pub(crate) fn decode(&mut self, input: &[u8]) -> Result<Chunk, ChunkError> {
        let mut used = 0;
        while used < input.len() {
            match self.at {
                At::Done => break,
                At::Data(left) => {
                    let data = left.min((input.len() - used) as u64);
                    self.at = match left - data {
                        0 => At::DataCr,
                        left => At::Data(left),
                    };
                    return Ok(Chunk::Data {
                        used,
                        data: data as usize,
                    });
                }
                At::Trailers => {
                    let (taken, ended) = self.trailer_bytes(&input[used..])?;
                    used += taken;
                    if ended {
                        self.at = At::Done;
                        let trailers = parse_trailers(&std::mem::take(&mut self.trailers))?;
                        return Ok(Chunk::End { used, trailers });
                    }
                }
                _ => {
                    let byte = input[used];
                    used += 1;
                    self.step(byte)?;
                }
            }
        }
        if self.at == At::Done {
            return Ok(Chunk::End {
                used,
                trailers: None,
            });
        }
        Ok(Chunk::More { used })
    }

    /// Takes one framing byte (not data, not trailers).
    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        let in_line = matches!(
            self.at,
            At::Start | At::Size(_) | At::AfterSize(_) | At::Extension(_)
        );
        if in_line {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(ChunkError("chunk-size line too long"));
            }
        }
        let digit = (byte as char).to_digit(16).map(u64::from);
        self.at = match (self.at, byte) {
            (At::Start, b' ' | b'\t') if self.lenient => At::Start,
            (At::Start, _) => At::Size(digit.ok_or(ChunkError("invalid chunk size"))?),
            // Any number of digits (leading zeros too), as long as the size fits a `u64`.
            (At::Size(size), _) if digit.is_some() => {
                if size >> 60 != 0 {
                    return Err(ChunkError("chunk size too large"));
                }
                At::Size(size << 4 | digit.unwrap_or_default())
            }
            (At::Size(size) | At::AfterSize(size), b' ' | b'\t') => At::AfterSize(size),
            (At::Size(size) | At::AfterSize(size) | At::Extension(size), b';') => {
                At::Extension(size)
            }
            (At::Size(size) | At::AfterSize(size) | At::Extension(size), b'\r') => At::SizeLf(size),
            (At::Size(size) | At::AfterSize(size) | At::Extension(size), b'\n') if self.lenient => {
                self.end_line(size)
            }
            (At::Extension(size), _) if is_extension_byte(byte) => At::Extension(size),
            (At::Extension(_), _) => return Err(ChunkError("invalid chunk extension")),
            (At::SizeLf(size), b'\n') => self.end_line(size),
            (At::Size(_) | At::AfterSize(_) | At::SizeLf(_), _) => {
                return Err(ChunkError("invalid chunk size line"));
            }
            (At::DataCr, b'\r') => At::DataLf,
            (At::DataCr, b'\n') if self.lenient => At::Start,
            (At::DataLf, b'\n') => At::Start,
            (At::DataCr | At::DataLf, _) => {
                return Err(ChunkError("chunk data not followed by CRLF"));
            }
            (At::Data(_) | At::Trailers | At::Done, _) => {
                unreachable!("data and trailers are not read byte by byte")
            }
        };
        Ok(())
    }

    /// The state after a chunk-size line declaring `size`.
    fn end_line(&mut self, size: u64) -> At {
        self.line = 0;
        if size == 0 {
            At::Trailers
        } else {
            At::Data(size)
        }
    }

    /// Keeps trailer-section bytes up to its empty line: how many it took, and whether the
    /// section ended with them.
    fn trailer_bytes(&mut self, input: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut taken = 0;
        for &byte in input {
            taken += 1;
            self.trailers.push(byte);
            if self.trailers.len() > MAX_TRAILERS {
                return Err(ChunkError("trailers too large"));
            }
            if byte != b'\n' {
                continue;
            }
            let section = &self.trailers;
            let line_start = section[..section.len() - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |lf| lf + 1);
            let line = &section[line_start..section.len() - 1];
            let line = match line.strip_suffix(b"\r") {
                Some(line) => line,
                None if self.lenient => line,
                None => return Err(ChunkError("trailer line not ended by CRLF")),
            };
            if line.is_empty() {
                return Ok((taken, true));
            }
        }
        Ok((taken, false))
    }
}

/// Visible characters, spaces and tabs, and obs-text: what a `chunk-ext` is made of.
fn is_extension_byte(byte: u8) -> bool {
    byte == b'\t' || (byte >= b' ' && byte != 0x7f)
}

/// The fields of a complete trailer section (its empty line included); `None` when it has none.
fn parse_trailers(section: &[u8]) -> Result<Option<HeaderMap>, ChunkError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let fields = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => return Err(ChunkError("trailer section incomplete")),
        Err(httparse::Error::TooManyHeaders) => return Err(ChunkError("too many trailer fields")),
        Err(_) => return Err(ChunkError("invalid trailer field")),
    };
    if fields.is_empty() {
        return Ok(None);
    }
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| ChunkError("invalid trailer field"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| ChunkError("invalid trailer field"))?;
        trailers.append(name, value);
    }
    Ok(Some(trailers))
}

/// Appends the line that starts a chunk of `len` bytes (not 0: that ends the body).
pub(crate) fn encode_size(len: u64, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a chunk of 0 bytes is the last chunk");
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    while n > 0 {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// What ends each chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// Appends the last chunk and the trailer section with `trailers`.
pub(crate) fn encode_end(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body's data, trailers and, when it ended, the bytes after it.
    type Decoded = (Vec<u8>, Option<HeaderMap>, Option<Vec<u8>>);

    /// Decodes `input` fed in pieces of `piece` bytes.
    fn decode_in_pieces(
        input: &[u8],
        piece: usize,
        strictness: Strictness,
    ) -> Result<Decoded, ChunkError> {
        let mut decoder = Decoder::new(strictness);
        let mut pending: Vec<u8> = Vec::new();
        let mut data = Vec::new();
        let mut fed = 0;
        while fed < input.len() {
            let next = (fed + piece.max(1)).min(input.len());
            pending.extend_from_slice(&input[fed..next]);
            fed = next;
            loop {
                match decoder.decode(&pending)? {
                    Chunk::Data { used, data: len } => {
                        data.extend_from_slice(&pending[used..used + len]);
                        pending.drain(..used + len);
                    }
                    Chunk::More { used } => {
                        assert_eq!(used, pending.len(), "framing is consumed as it comes");
                        pending.clear();
                        break;
                    }
                    Chunk::End { used, trailers } => {
                        pending.drain(..used);
                        pending.extend_from_slice(&input[fed..]);
                        return Ok((data, trailers, Some(pending)));
                    }
                }
            }
        }
        Ok((data, None, None))
    }

    fn decoded(
        input: &str,
        strictness: Strictness,
    ) -> Result<(String, Option<HeaderMap>), ChunkError> {
        let (data, trailers, ended) = decode_in_pieces(input.as_bytes(), input.len(), strictness)?;
        assert!(ended.is_some(), "{input:?} ends");
        Ok((String::from_utf8(data).unwrap(), trailers))
    }

    #[test]
    fn chunks_with_extensions_and_trailers_are_read() {
        let (data, trailers) = decoded(
            "5;name=value;x\r\nhello\r\n7 \r\n world!\r\n0\r\nX-Sum: 42\r\nX-B: b\r\n\r\n",
            Strictness::Strict,
        )
        .unwrap();
        assert_eq!(data, "hello world!");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-sum"], "42");
        assert_eq!(trailers["x-b"], "b");
        assert_eq!(
            decoded("0\r\n\r\n", Strictness::Strict).unwrap(),
            (String::new(), None)
        );
        assert_eq!(
            decoded("A\r\n0123456789\r\n0\r\n\r\n", Strictness::Strict)
                .unwrap()
                .0,
            "0123456789"
        );
    }

    #[test]
    fn strict_refuses_what_requests_must_not_carry() {
        for body in [
            "zz\r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "\r\nhello\r\n0\r\n\r\n",
            "fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            "3\r\nhello\r\n0\r\n\r\n",
            "5;a=b\rc\r\nhello\r\n0\r\n\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "5 x\r\nhello\r\n0\r\n\r\n",
            "5;a\0\r\nhello\r\n0\r\n\r\n",
            "0\r\nX: a\n\r\n",
            "0\r\nX : a\r\n\r\n",
            "0\r\n\n",
        ] {
            assert!(
                decoded(body, Strictness::Strict).is_err(),
                "{body:?} is refused"
            );
        }
    }

    #[test]
    fn lenient_takes_whitespace_before_sizes_and_bare_lf() {
        for body in [
            " 5\r\nhello\r\n0\r\n\r\n",
            "\t5 \r\nhello\r\n0\r\n\r\n",
            "5\nhello\n0\n\n",
            "5;a=b\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                decoded(body, Strictness::Lenient).unwrap().0,
                "hello",
                "{body:?}"
            );
        }
        let (_, trailers) = decoded("0\nX: a\n\n", Strictness::Lenient).unwrap();
        assert_eq!(trailers.unwrap()["x"], "a");
        for body in ["zz\r\n", "5\r\nhelloX", "5\r\r\nhello"] {
            assert!(decoded(body, Strictness::Lenient).is_err(), "{body:?}");
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_LINE));
        assert_eq!(
            decoded(&long, Strictness::Strict).unwrap_err().0,
            "chunk-size line too long"
        );
        let big = format!("0\r\nX: {}\r\n\r\n", "a".repeat(MAX_TRAILERS));
        assert_eq!(
            decoded(&big, Strictness::Strict).unwrap_err().0,
            "trailers too large"
        );
        let many: String = (0..=MAX_TRAILER_FIELDS)
            .map(|i| format!("X-{i}: a\r\n"))
            .collect();
        let many = format!("0\r\n{many}\r\n");
        assert_eq!(
            decoded(&many, Strictness::Strict).unwrap_err().0,
            "too many trailer fields"
        );
    }

    #[test]
    fn the_largest_size_is_taken_and_one_digit_more_is_not() {
        let mut decoder = Decoder::new(Strictness::Strict);
        let chunk = decoder.decode(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(chunk, Chunk::Data { used: 18, data: 2 });
        let mut decoder = Decoder::new(Strictness::Strict);
        assert!(decoder.decode(b"10000000000000000\r\n").is_err());
        // Leading zeros are digits of the size like any other (chunk-size = 1*HEXDIG).
        let mut decoder = Decoder::new(Strictness::Strict);
        let chunk = decoder
            .decode(b"000000000000000000005\r\nhello\r\n")
            .unwrap();
        assert_eq!(chunk, Chunk::Data { used: 23, data: 5 });
    }

    #[test]
    fn a_chunk_tells_how_much_of_it_is_still_to_come() {
        let mut decoder = Decoder::new(Strictness::Strict);
        assert_eq!(decoder.decode(b"ff\r\n").unwrap(), Chunk::More { used: 4 });
        assert_eq!(decoder.pending(), 255);
        assert_eq!(
            decoder.decode(b"hello").unwrap(),
            Chunk::Data { used: 0, data: 5 }
        );
        assert_eq!(decoder.pending(), 250);
    }

    #[test]
    fn what_follows_the_body_is_left_alone() {
        let mut decoder = Decoder::new(Strictness::Strict);
        let input = b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            decoder.decode(input).unwrap(),
            Chunk::Data { used: 3, data: 1 }
        );
        let rest = &input[4..];
        assert_eq!(
            decoder.decode(rest).unwrap(),
            Chunk::End {
                used: 7,
                trailers: None
            }
        );
        assert_eq!(
            decoder.decode(b"more").unwrap(),
            Chunk::End {
                used: 0,
                trailers: None
            }
        );
    }

    #[test]
    fn sizes_and_ends_are_encoded() {
        let mut out = Vec::new();
        encode_size(1, &mut out);
        encode_size(255, &mut out);
        encode_size(u64::MAX, &mut out);
        assert_eq!(out, b"1\r\nff\r\nffffffffffffffff\r\n");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("42"));
        let mut out = Vec::new();
        encode_end(Some(&trailers), &mut out);
        assert_eq!(out, b"0\r\nx-sum: 42\r\n\r\n");
        let mut out = Vec::new();
        encode_end(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");
    }
}
