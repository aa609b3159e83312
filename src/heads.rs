//! The request heads in a client's HTTP/1 byte stream, followed from head to body to head.
//!
//! hyper drops `Content-Length` when `Transfer-Encoding` is present (it frames by the latter), so
//! only the raw head can show that a request carried both, which screening refuses (400). To find
//! every head, pipelined ones included, this reads each body's framing as hyper does: a
//! `Content-Length` body is skipped by count, a chunked one chunk by chunk to its last chunk and
//! trailers. What cannot be followed (an upgrade, whose bytes after the head may be anything; a
//! head longer than kept; a chunk line hyper would refuse) stops the following until no request
//! is in progress again, and the heads in between are not known: screening then refuses chunked
//! requests, whose framing it cannot check.
//!
//! Only what screening asks about is kept of a head: for a chunked request, its request line and
//! whether it also had `Content-Length`. A request without `Transfer-Encoding` costs a scan of its
//! lines' first bytes and no copy beyond the head buffer, which is reused.

use std::collections::VecDeque;

/// Most chunked heads kept, not yet asked about: pipelined requests beyond it are refused.
const MAX_KEPT: usize = 32;

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum At {
    /// Between messages: the next byte other than an empty line starts a head.
    #[default]
    Between,
    /// In a head (its bytes so far are in `Heads::head`).
    Head,
    /// In a body with this many bytes to go.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not followed: see the module documentation.
    Lost,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The size's hex digits; `digits` says whether any has been read.
    Size { size: u64, digits: bool },
    /// After the size (extensions, whitespace), to the end of the line.
    SizeLine { size: u64 },
    /// Data with this many bytes to go.
    Data(u64),
    /// The CR LF after a chunk's data; `cr` says whether the CR has been read.
    DataEnd { cr: bool },
    /// Trailer lines after the last chunk; `empty` says whether the current line is empty so far.
    Trailers { empty: bool },
}

/// A chunked request's head, as screening asks about it.
#[derive(Debug)]
struct Kept {
    /// The number of the request it is the head of (the first request is 1).
    request: u64,
    /// Its first line, with the line end.
    line: Box<[u8]>,
    content_length: bool,
}

/// A client's HTTP/1 stream, followed.
#[derive(Debug, Default)]
pub struct Heads {
    at: At,
    /// Heads ended so far.
    ended: u64,
    /// The current head's bytes so far (at most `max_head`).
    head: Vec<u8>,
    /// When the current head started, on the caller's clock.
    started_ms: u64,
    kept: VecDeque<Kept>,
    max_head: usize,
}

impl Heads {
    pub fn new(max_head: usize) -> Heads {
        Heads {
            max_head,
            ..Heads::default()
        }
    }

    /// When the head being read started, if one is being read.
    pub fn open_since_ms(&self) -> Option<u64> {
        (self.at == At::Head).then_some(self.started_ms)
    }

    /// Heads ended so far, while followed.
    pub fn ended(&self) -> u64 {
        self.ended
    }

    /// Whether the stream is not followed (see the module documentation).
    pub fn lost(&self) -> bool {
        self.at == At::Lost
    }

    /// Follows the stream again from the start of a head, as when no request is in progress and
    /// `started` requests (every head so far) have started.
    pub fn resume(&mut self, started: u64) {
        self.at = At::Between;
        self.ended = started;
        self.kept.clear();
    }

    /// Reads `bytes`, the next of the stream; `now_ms` dates a head that starts in them.
    pub fn read(&mut self, mut bytes: &[u8], now_ms: u64) {
        while !bytes.is_empty() {
            let used = match self.at {
                At::Between => {
                    let empty = bytes
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    if empty < bytes.len() {
                        self.at = At::Head;
                        self.head.clear();
                        self.started_ms = now_ms;
                    }
                    empty
                }
                At::Head => self.read_head(bytes),
                At::Body(left) => {
                    let used = left.min(bytes.len() as u64);
                    self.at = match left - used {
                        0 => At::Between,
                        left => At::Body(left),
                    };
                    used as usize
                }
                At::Chunked(chunk) => self.read_chunked(chunk, bytes),
                At::Lost => bytes.len(),
            };
            bytes = &bytes[used..];
        }
    }

    /// Whether request `request`'s head had a `Content-Length` field, if it was a chunked
    /// request whose head was kept and whose first line begins with `start_line`
    /// (`"POST /x "`). Heads of earlier requests are forgotten.
    pub fn had_content_length(&mut self, request: u64, start_line: &[u8]) -> Option<bool> {
        while self.kept.front().is_some_and(|kept| kept.request < request) {
            self.kept.pop_front();
        }
        let kept = self.kept.front()?;
        (kept.request == request && kept.line.starts_with(start_line))
            .then_some(kept.content_length)
    }

    /// Reads head bytes up to the head's end; returns how many it used.
    fn read_head(&mut self, bytes: &[u8]) -> usize {
        // The end may straddle reads: look again from the last line end kept.
        let from = self.head.len().saturating_sub(3);
        let room = self.max_head - self.head.len().min(self.max_head);
        let taken = bytes.len().min(room);
        self.head.extend_from_slice(&bytes[..taken]);
        match head_end(&self.head, from) {
            Some(end) => {
                let used = end - (self.head.len() - taken);
                self.head.truncate(end);
                self.ended += 1;
                self.at = self.after_head();
                used
            }
            None if taken < bytes.len() => {
                self.at = At::Lost;
                bytes.len()
            }
            None => taken,
        }
    }

    /// What follows the head just read: its body, or the next head; keeps what screening asks.
    fn after_head(&mut self) -> At {
        let summary = summarize(&self.head);
        if summary.upgrade {
            return At::Lost;
        }
        if summary.transfer_encoding {
            if self.kept.len() < MAX_KEPT {
                let line_end = memchr::memchr(b'\n', &self.head).map_or(self.head.len(), |n| n + 1);
                self.kept.push_back(Kept {
                    request: self.ended,
                    line: self.head[..line_end].into(),
                    content_length: summary.content_length.is_some(),
                });
            }
            return At::Chunked(Chunk::Size {
                size: 0,
                digits: false,
            });
        }
        match summary.content_length {
            None | Some(Some(0)) => At::Between,
            Some(Some(length)) => At::Body(length),
            // hyper refuses the request and closes.
            Some(None) => At::Lost,
        }
    }

    /// Reads chunked-body bytes; returns how many it used.
    fn read_chunked(&mut self, mut chunk: Chunk, bytes: &[u8]) -> usize {
        let mut used = 0;
        while used < bytes.len() {
            let byte = bytes[used];
            chunk = match chunk {
                Chunk::Data(left) => {
                    let take = left.min((bytes.len() - used) as u64);
                    used += take as usize;
                    chunk = match left - take {
                        0 => Chunk::DataEnd { cr: false },
                        left => Chunk::Data(left),
                    };
                    continue;
                }
                Chunk::Size { size, digits } => match (byte as char).to_digit(16) {
                    Some(digit) => match size.checked_mul(16) {
                        Some(size) => Chunk::Size {
                            size: size + u64::from(digit),
                            digits: true,
                        },
                        None => return self.lose(bytes.len()),
                    },
                    None if digits => self.size_line(size, byte),
                    None => return self.lose(bytes.len()),
                },
                Chunk::SizeLine { size } => self.size_line(size, byte),
                Chunk::DataEnd { cr: false } if byte == b'\r' => Chunk::DataEnd { cr: true },
                Chunk::DataEnd { .. } if byte == b'\n' => Chunk::Size {
                    size: 0,
                    digits: false,
                },
                Chunk::DataEnd { .. } => return self.lose(bytes.len()),
                Chunk::Trailers { empty } => match byte {
                    b'\n' if empty => {
                        self.at = At::Between;
                        return used + 1;
                    }
                    b'\n' => Chunk::Trailers { empty: true },
                    b'\r' => Chunk::Trailers { empty },
                    _ => Chunk::Trailers { empty: false },
                },
            };
            used += 1;
        }
        self.at = At::Chunked(chunk);
        used
    }

    /// A byte of a chunk-size line after the digits: the line's end starts the data (or, after
    /// the last chunk, the trailers).
    fn size_line(&self, size: u64, byte: u8) -> Chunk {
        match (byte, size) {
            (b'\n', 0) => Chunk::Trailers { empty: true },
            (b'\n', size) => Chunk::Data(size),
            _ => Chunk::SizeLine { size },
        }
    }

    fn lose(&mut self, used: usize) -> usize {
        self.at = At::Lost;
        used
    }
}

/// Where a head ends (just past its empty line), searching `head` from `from`. A head does not
/// start with a line end (`At::Between` skips those), so its empty line follows a line end.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    memchr::memchr_iter(b'\n', &head[from..]).find_map(|newline| {
        let after = &head[from + newline + 1..];
        if after.starts_with(b"\n") {
            Some(from + newline + 2)
        } else if after.starts_with(b"\r\n") {
            Some(from + newline + 3)
        } else {
            None
        }
    })
}

/// What a head says about its body.
struct Summary {
    transfer_encoding: bool,
    /// `Some(None)` when present but not one number hyper would take.
    content_length: Option<Option<u64>>,
    upgrade: bool,
}

fn summarize(head: &[u8]) -> Summary {
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let mut summary = Summary {
        transfer_encoding: false,
        content_length: None,
        upgrade: first.starts_with(b"CONNECT "),
    };
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            summary.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|value| value.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|value| value.parse().ok());
            summary.content_length = match summary.content_length {
                None => Some(length),
                Some(earlier) if earlier == length => Some(length),
                Some(_) => Some(None),
            };
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            summary.upgrade = true;
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] =
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n";

    /// Reads `stream` in pieces of `piece` bytes.
    fn follow(stream: &[u8], piece: usize) -> Heads {
        let mut heads = Heads::new(8192);
        for bytes in stream.chunks(piece) {
            heads.read(bytes, 7);
        }
        heads
    }

    #[test]
    fn pipelined_heads_are_found_behind_every_kind_of_body() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        stream.extend_from_slice(b"POST /l HTTP/1.1\r\nContent-Length: 11\r\n\r\nTransfer-En");
        stream.extend_from_slice(CHUNKED);
        stream.extend_from_slice(
            b"\r\nPOST /s HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 3\n\n0\n\n",
        );
        for piece in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut heads = follow(&stream, piece);
            assert_eq!(heads.ended(), 4, "pieces of {piece}");
            assert_eq!(heads.open_since_ms(), None);
            assert_eq!(heads.had_content_length(3, b"POST /c "), Some(false));
            assert_eq!(heads.had_content_length(4, b"POST /s "), Some(true));
        }
    }

    #[test]
    fn a_head_is_asked_about_by_its_own_request_and_start_line() {
        let mut heads = follow(CHUNKED, 4);
        assert_eq!(heads.had_content_length(1, b"POST /other "), None);
        assert_eq!(heads.had_content_length(2, b"POST /c "), None);
        // Forgotten once a later request has asked.
        assert_eq!(heads.had_content_length(1, b"POST /c "), None);
        let mut heads = follow(b"GET / HTTP/1.1\r\n\r\n", 100);
        assert_eq!(
            heads.had_content_length(1, b"GET / "),
            None,
            "not chunked: not kept"
        );
    }

    #[test]
    fn an_open_head_is_dated_from_its_first_byte() {
        let mut heads = Heads::new(8192);
        heads.read(b"\r\n", 1);
        assert_eq!(heads.open_since_ms(), None, "empty lines start no head");
        heads.read(b"GET / HT", 2);
        heads.read(b"TP/1.1\r\n", 3);
        assert_eq!(heads.open_since_ms(), Some(2));
        heads.read(b"\r\n", 4);
        assert_eq!(heads.open_since_ms(), None);
    }

    #[test]
    fn what_cannot_be_followed_is_lost_until_resumed() {
        for stream in [
            &b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"[..],
            b"CONNECT a:443 HTTP/1.1\r\n\r\nanything",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ] {
            let mut heads = follow(stream, 3);
            assert!(heads.lost(), "{:?}", String::from_utf8_lossy(stream));
            heads.read(CHUNKED, 9);
            assert_eq!(heads.had_content_length(2, b"POST /c "), None);
            heads.resume(1);
            heads.read(CHUNKED, 9);
            assert_eq!(heads.had_content_length(2, b"POST /c "), Some(false));
        }
    }

    #[test]
    fn a_head_longer_than_kept_is_lost() {
        let mut heads = Heads::new(64);
        heads.read(b"GET / HTTP/1.1\r\nX-Pad: ", 1);
        heads.read(&[b'p'; 64], 1);
        assert!(heads.lost());
        assert_eq!(heads.open_since_ms(), None);
    }

    #[test]
    fn chunk_sizes_that_overflow_are_lost() {
        let heads = follow(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            100,
        );
        assert!(heads.lost());
    }
}
