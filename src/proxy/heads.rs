//! The request heads in a client's HTTP/1 byte stream, followed from head to body to head.
//!
//! hyper drops `Content-Length` when `Transfer-Encoding` is present (it frames by the latter), so
//! only the raw head can show that a request carried both, which screening refuses (400). To find
//! every head, pipelined ones included, this reads each body's framing exactly as hyper does: a
//! `Content-Length` body is skipped by count, a chunked one byte by byte through the states of
//! hyper's chunked decoder (`proto/h1/decode.rs`), so that a byte hyper accepts is read the same
//! way here and one it refuses (closing the connection) stops the following. An attacker's bytes
//! cannot then end a body here where hyper does not, which would let a head of theirs be taken
//! for the next request's.
//!
//! The following stops for good (`Lost`) at what hyper refuses, at a head longer than hyper's read
//! buffer (which hyper refuses too) and when the connection becomes a tunnel: no head after that
//! is known, and screening refuses a chunked request whose head is not known.
//!
//! Only what screening asks about is kept of a head: for a chunked request, its request line and
//! whether it also had `Content-Length`. A request without `Transfer-Encoding` costs a scan of its
//! lines and no copy beyond the head buffer, which is reused. Kept heads are bounded by hyper's
//! read-ahead: a request asks for its head as it starts, and hyper reads at most its buffer ahead.

use std::collections::VecDeque;

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
    /// Not followed any more: see the module documentation.
    Lost,
}

/// Where a chunked body is: hyper's `ChunkedState`, one variant each, the size carried along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A size line's first byte, which must be a hex digit.
    Start,
    /// The size's further digits.
    Size(u64),
    /// Whitespace after the size.
    SizeLws(u64),
    /// A chunk extension, to the CR.
    Extension(u64),
    /// The LF ending the size line.
    SizeLf(u64),
    /// Data with this many bytes to go.
    Body(u64),
    BodyCr,
    BodyLf,
    /// After the last chunk: a CR (the end) or a trailer line's first byte.
    EndCr,
    /// In a trailer line, to its CR (a bare LF does not end it).
    Trailer,
    TrailerLf,
    EndLf,
}

/// What a request says of its first line, to check a kept head is its own: the method, and the
/// target as parsed (`None` for an absolute-form target, which the parser normalises:
/// `http://a` reads `http://a/`). A fragment, which the parser drops, may follow the target.
#[derive(Debug, Clone, Copy)]
pub struct StartLine<'a> {
    pub method: &'a [u8],
    pub target: Option<&'a [u8]>,
}

impl StartLine<'_> {
    fn begins(&self, line: &[u8]) -> bool {
        let Some(rest) = line
            .strip_prefix(self.method)
            .and_then(|rest| rest.strip_prefix(b" "))
        else {
            return false;
        };
        match self.target {
            None => true,
            Some(target) => rest
                .strip_prefix(target)
                .is_some_and(|after| matches!(after.first(), Some(b' ' | b'#'))),
        }
    }
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
    /// The request lines' bytes in `kept`.
    kept_bytes: usize,
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
    pub fn heads_ended(&self) -> u64 {
        self.ended
    }

    /// Whether the head being read has a first line longer than `limit` bytes so far: its end
    /// not yet seen.
    pub fn line_longer_than(&self, limit: usize) -> bool {
        self.at == At::Head && self.head.len() > limit && !self.head.contains(&b'\n')
    }

    /// Whether the stream is not followed any more (see the module documentation).
    pub fn lost(&self) -> bool {
        self.at == At::Lost
    }

    /// Stops following: the connection is a tunnel now, its bytes are not HTTP.
    pub fn stop(&mut self) {
        self.at = At::Lost;
        self.head = Vec::new();
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
    /// request whose head was kept and whose first line is `start`'s. Heads of earlier requests
    /// are forgotten.
    pub fn had_content_length(&mut self, request: u64, start: StartLine<'_>) -> Option<bool> {
        while let Some(kept) = self.kept.front()
            && kept.request < request
        {
            self.kept_bytes -= kept.line.len();
            self.kept.pop_front();
        }
        let kept = self.kept.front()?;
        (kept.request == request && start.begins(&kept.line)).then_some(kept.content_length)
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
    /// An upgrade's head is followed like any other: after a refusal the connection goes on as
    /// HTTP/1.1, and after a 101 the tunnel stops the following (`stop`).
    fn after_head(&mut self) -> At {
        let summary = summarize(&self.head);
        if summary.transfer_encoding {
            let line_end = memchr::memchr(b'\n', &self.head).map_or(self.head.len(), |n| n + 1);
            // More than hyper's buffer holds cannot be waiting to start.
            if self.kept_bytes + line_end > 2 * self.max_head {
                return At::Lost;
            }
            self.kept_bytes += line_end;
            self.kept.push_back(Kept {
                request: self.ended,
                line: self.head[..line_end].into(),
                content_length: summary.content_length.is_some(),
            });
            return At::Chunked(Chunk::Start);
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
            if let Chunk::Body(left) = chunk {
                let take = left.min((bytes.len() - used) as u64);
                used += take as usize;
                chunk = match left - take {
                    0 => Chunk::BodyCr,
                    left => Chunk::Body(left),
                };
                continue;
            }
            let byte = bytes[used];
            used += 1;
            chunk = match next(chunk, byte) {
                Some(Some(chunk)) => chunk,
                // The body's last byte: the next head follows.
                Some(None) => {
                    self.at = At::Between;
                    return used;
                }
                None => {
                    self.at = At::Lost;
                    return bytes.len();
                }
            };
        }
        self.at = At::Chunked(chunk);
        used
    }
}

/// The state after `byte` (not of a chunk's data): `Some(None)` at the body's end, `None` where
/// hyper's decoder refuses the byte.
fn next(chunk: Chunk, byte: u8) -> Option<Option<Chunk>> {
    let digit = (byte as char).to_digit(16).map(u64::from);
    let next = match (chunk, byte) {
        (Chunk::Start, _) => Chunk::Size(digit?),
        (Chunk::Size(size), _) if digit.is_some() => {
            Chunk::Size(size.checked_mul(16)?.checked_add(digit?)?)
        }
        (Chunk::Size(size) | Chunk::SizeLws(size), b'\t' | b' ') => Chunk::SizeLws(size),
        (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Extension(size), b';') => {
            Chunk::Extension(size)
        }
        (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Extension(size), b'\r') => {
            Chunk::SizeLf(size)
        }
        (Chunk::Extension(_), b'\n') => return None,
        (Chunk::Extension(size), _) => Chunk::Extension(size),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(size), b'\n') => Chunk::Body(size),
        (Chunk::BodyCr, b'\r') => Chunk::BodyLf,
        (Chunk::BodyLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => return Some(None),
        _ => return None,
    };
    Some(Some(next))
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
}

fn summarize(head: &[u8]) -> Summary {
    let mut summary = Summary {
        transfer_encoding: false,
        content_length: None,
    };
    for line in head.split(|&b| b == b'\n').skip(1) {
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
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] =
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n";

    #[test]
    fn a_first_line_past_its_limit_is_seen_before_its_end() {
        let mut heads = Heads::new(64 * 1024);
        heads.read(b"GET /", 1);
        heads.read(&[b'a'; 200], 1);
        assert!(heads.line_longer_than(100));
        assert!(!heads.line_longer_than(300));
        heads.read(b" HTTP/1.1\r\nHost: a\r\n", 1);
        assert!(
            !heads.line_longer_than(100),
            "its end is seen: the target's length is screening's to judge"
        );
        heads.read(b"\r\n", 1);
        assert!(!heads.line_longer_than(0), "between heads");
    }

    fn line<'a>(method: &'a str, target: &'a str) -> StartLine<'a> {
        StartLine {
            method: method.as_bytes(),
            target: Some(target.as_bytes()),
        }
    }

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
            b"\r\nPOST /s HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 3\n\n1 ;a\r\nx\r\n0\r\n\r\n",
        );
        stream.extend_from_slice(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        stream.extend_from_slice(CHUNKED);
        for piece in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut heads = follow(&stream, piece);
            assert_eq!(heads.heads_ended(), 6, "pieces of {piece}");
            assert_eq!(heads.open_since_ms(), None);
            assert_eq!(heads.had_content_length(3, line("POST", "/c")), Some(false));
            assert_eq!(heads.had_content_length(4, line("POST", "/s")), Some(true));
            // A refused upgrade leaves an HTTP/1.1 connection: what follows it is followed.
            assert_eq!(heads.had_content_length(6, line("POST", "/c")), Some(false));
        }
    }

    #[test]
    fn a_head_is_asked_about_by_its_own_request_and_start_line() {
        let mut heads = follow(CHUNKED, 4);
        assert_eq!(heads.had_content_length(1, line("POST", "/other")), None);
        assert_eq!(heads.had_content_length(2, line("POST", "/c")), None);
        // Forgotten once a later request has asked.
        assert_eq!(heads.had_content_length(1, line("POST", "/c")), None);
        let mut heads = follow(b"GET / HTTP/1.1\r\n\r\n", 100);
        assert_eq!(
            heads.had_content_length(1, line("GET", "/")),
            None,
            "not chunked: not kept"
        );
    }

    #[test]
    fn a_start_line_matches_its_target_whole_or_up_to_a_fragment() {
        let mut heads = follow(
            b"POST /c#frag HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            100,
        );
        assert_eq!(heads.had_content_length(1, line("POST", "/")), None);
        assert_eq!(heads.had_content_length(1, line("PUT", "/c")), None);
        assert_eq!(heads.had_content_length(1, line("POST", "/c")), Some(false));
        let absolute = StartLine {
            method: b"POST",
            target: None,
        };
        assert_eq!(heads.had_content_length(1, absolute), Some(false));
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

    /// Where hyper's chunked decoder refuses a byte (and closes), the following stops for good:
    /// a head read here in bytes hyper takes for body would be taken for the next request's.
    #[test]
    fn what_hyper_refuses_stops_the_following_for_good() {
        for stream in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\n\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;x\nb\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\nb\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\r\n\r\n",
        ] {
            let mut heads = follow(stream, 3);
            assert!(heads.lost(), "{:?}", String::from_utf8_lossy(stream));
            heads.read(CHUNKED, 9);
            assert_eq!(heads.had_content_length(2, line("POST", "/c")), None);
        }
    }

    /// hyper ends a trailer line only at CR LF: a bare LF inside trailers does not end the body,
    /// so a head hidden in them is not a head.
    #[test]
    fn a_bare_lf_in_trailers_does_not_end_the_body() {
        for trailers in [&b"X: a\n\n"[..], b"\n"] {
            let mut stream =
                b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
            stream.extend_from_slice(trailers);
            stream.extend_from_slice(
                b"POST /s HTTP/1.1\nTransfer-Encoding: chunked\n\n0\n\n\r\n\r\n",
            );
            stream.extend_from_slice(
                b"POST /s HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            );
            for piece in [1, 4, stream.len()] {
                let mut heads = follow(&stream, piece);
                assert_eq!(heads.heads_ended(), 2, "{trailers:?} in pieces of {piece}");
                assert_eq!(heads.had_content_length(2, line("POST", "/s")), Some(true));
            }
        }
    }

    #[test]
    fn a_tunnel_stops_the_following() {
        let mut heads = follow(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 100);
        heads.stop();
        heads.read(CHUNKED, 1);
        assert!(heads.lost());
        assert_eq!(heads.had_content_length(2, line("POST", "/c")), None);
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
