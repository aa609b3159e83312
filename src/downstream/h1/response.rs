//! A response written by Fulcrum's own connection: the head as hyper would write it, then the
//! body framed by length, in chunks, or until close.
//!
//! hyper's rules kept: `Content-Length` from the header if present, else from a body whose size
//! is known, else chunked (`Transfer-Encoding: chunked`); no body and no added length for 1xx,
//! 204 and 304; a response the backend gave as HTTP/1.0 goes out as HTTP/1.0 and, with no
//! length, ends at close; trailers only those the `Trailer` header declares; `Date` added when
//! absent; `Connection: close` added when the connection will close.
//!
//! Small responses leave in one `write`: the head and whatever body is ready at once share a
//! buffer, which is written when the body has nothing more ready, or has grown past [`FLUSH_AT`].

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::response::Parts;
use http::{HeaderMap, Response, StatusCode, Version};
use hyper::body::{Body, Frame};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::date;
use super::request::lists;
use crate::arena;
use crate::body::strip_trailer_fields;
use crate::proxy::Logged;

/// Bytes gathered before they are written, however much more body is ready.
const FLUSH_AT: usize = 64 * 1024;
/// Data frames at least this large are written from their own buffer, not copied.
const COPY_BELOW: usize = 16 * 1024;

/// How the body is delimited on the wire.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// No body is sent (1xx, 204, 304, or an empty body).
    Empty,
    Length(u64),
    /// Chunked, with the trailer fields the `Trailer` header declared.
    Chunked(Vec<HeaderName>),
    /// Until the connection closes.
    Close,
}

/// How long the body is, as known before it is read.
#[derive(Debug, Clone, Copy)]
enum Known {
    Empty,
    Exactly(u64),
    Unknown,
}

/// Writes `response`; whether the connection may carry another request after it (`keep_alive`
/// asked for, and nothing failed or asked to close). Trailer fields are sent only if the client
/// accepts them (`trailers`).
///
/// The head is encoded before the future is made, so the future holds only the body and the
/// bytes to write, not the response: a connection's task is sized by its largest future.
pub(super) fn write<S>(
    stream: S,
    response: Response<Logged>,
    keep_alive: bool,
    trailers: bool,
) -> impl Future<Output = bool>
where
    S: AsyncWrite + Unpin,
{
    let (mut parts, body) = response.into_parts();
    let known = if body.is_end_stream() {
        Known::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(Known::Unknown, Known::Exactly)
    };
    let mut out = arena::buffer(256 + parts.headers.len() * 32);
    let (framing, keep_alive) = encode_head(&mut parts, known, keep_alive, trailers, &mut out);
    arena::recycle(parts.headers);
    send(stream, out, body, framing, keep_alive)
}

/// Writes the head in `out` and the body after it; whether the connection may stay open.
///
/// An `async` block, not an `async fn`: an `async fn` keeps its arguments and its moved copies
/// of them both, which made the future too large for the allocator's fast path.
#[allow(clippy::manual_async_fn)]
fn send<S, B>(
    mut stream: S,
    mut out: Vec<u8>,
    mut body: B,
    framing: Framing,
    keep_alive: bool,
) -> impl Future<Output = bool>
where
    S: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    async move {
        let written = send_body(&mut stream, &mut out, &mut body, Encoder::new(framing)).await;
        // The body (and what it holds: the backend connection, the access log entry) ends here.
        drop(body);
        arena::recycle_buffer(out);
        written.is_ok() && keep_alive
    }
}

/// Writes the status line and fields to `out`; how the body will be framed, and whether the
/// connection stays open after it.
fn encode_head(
    parts: &mut Parts,
    known: Known,
    mut keep_alive: bool,
    send_trailers: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    let closing = !keep_alive;
    let http10 = parts.version == Version::HTTP_10;
    status_line(parts, http10, out);
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let (mut length, mut wrote_date, mut wrote_close) = (None, false, false);
    let mut trailers = Vec::new();
    for (name, value) in parts.headers.iter() {
        match *name {
            header::CONTENT_LENGTH => {
                if length.is_some() || matches!(known, Known::Empty) {
                    continue; // hyper writes one, and none for an empty body
                }
                let declared = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok());
                let Some(declared) = declared else { continue };
                // A body that knows its length is trusted over the header, as hyper does; the
                // line goes where the header was, written once whatever the body's size.
                let n = match known {
                    Known::Exactly(n) => n,
                    _ => declared,
                };
                length = Some(n);
                out.extend_from_slice(b"content-length: ");
                number(out, n, 10);
                out.extend_from_slice(b"\r\n");
                continue;
            }
            // The framing is this connection's to choose.
            header::TRANSFER_ENCODING => continue,
            header::TRAILER => {
                if http10 || bodiless {
                    continue;
                }
                // The field still goes out when its trailers will not, as with hyper.
                trailers.extend(
                    value
                        .as_bytes()
                        .split(|&b| b == b',')
                        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
                        .filter(|_| send_trailers),
                );
            }
            header::CONNECTION if lists(value, b"close") => wrote_close = true,
            header::DATE => wrote_date = true,
            _ => {}
        }
        field(out, name.as_str(), value.as_bytes());
    }
    let framing = match (length, known) {
        _ if bodiless => Framing::Empty,
        // Its line is written already.
        (Some(0), _) => Framing::Empty,
        (None, Known::Empty) | (None, Known::Exactly(0)) => {
            field(out, "content-length", b"0");
            Framing::Empty
        }
        (Some(n), _) => Framing::Length(n),
        (None, Known::Exactly(n)) => {
            out.extend_from_slice(b"content-length: ");
            number(out, n, 10);
            out.extend_from_slice(b"\r\n");
            Framing::Length(n)
        }
        (None, Known::Unknown) if http10 => {
            keep_alive = false;
            Framing::Close
        }
        (None, Known::Unknown) => {
            field(out, "transfer-encoding", b"chunked");
            Framing::Chunked(trailers)
        }
    };
    if closing && !wrote_close {
        field(out, "connection", b"close");
    }
    keep_alive &= !wrote_close;
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

fn status_line(parts: &Parts, http10: bool, out: &mut Vec<u8>) {
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if !http10 && parts.status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("<none>")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in `radix` (10 or 16) without going through `fmt`.
fn number(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Streams the body after the head already in `out`, framed; an error once the body fails or
/// breaks its framing (the connection is then closed: the client sees a cut-short body).
async fn send_body<S, B>(
    stream: &mut S,
    out: &mut Vec<u8>,
    body: &mut B,
    mut encoder: Encoder,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if encoder.framing == Framing::Empty {
        return flush(stream, out).await;
    }
    loop {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more ready: what is gathered goes out while the body is awaited.
                flush(stream, out).await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        // The frame is used up here, so the future does not hold one across its writes.
        let step = match frame {
            None => encoder.finish(out).map(|()| Step::Done),
            Some(Err(error)) => Err(io::Error::other(format!("response body: {error}"))),
            Some(Ok(frame)) => encoder.frame(frame, out),
        };
        match step {
            Ok(Step::More) if out.len() < FLUSH_AT => {}
            Ok(Step::More) => flush(stream, out).await?,
            Ok(Step::Large(data)) => {
                flush(stream, out).await?;
                stream.write_all(&data).await?;
                if encoder.end_chunk(out) {
                    return flush(stream, out).await;
                }
            }
            Ok(Step::Done) => return flush(stream, out).await,
            Err(error) => {
                // What was relayed still reaches the client before the connection is cut.
                flush(stream, out).await.ok();
                return Err(error);
            }
        }
    }
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// What a frame of the body leaves to do.
enum Step {
    /// Added to the bytes to write; more to come.
    More,
    /// A data frame too large to copy: to be written from its own buffer, after what is
    /// gathered, then [`Encoder::end_chunk`].
    Large(Bytes),
    /// The body is complete in the bytes to write.
    Done,
}

/// The body's framing as it is written: how much a length still allows.
struct Encoder {
    framing: Framing,
    left: u64,
}

impl Encoder {
    fn new(framing: Framing) -> Encoder {
        let left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        Encoder { framing, left }
    }

    /// Adds a frame to `out`, or, for a large one, its chunk size only.
    fn frame(&mut self, frame: Frame<Bytes>, out: &mut Vec<u8>) -> io::Result<Step> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let (Ok(trailers), Framing::Chunked(allowed)) =
                    (frame.into_trailers(), &self.framing)
                {
                    out.extend_from_slice(b"0\r\n");
                    write_trailers(trailers, allowed, out);
                    out.extend_from_slice(b"\r\n");
                    self.framing = Framing::Empty;
                    return Ok(Step::Done);
                }
                return Ok(Step::More);
            }
        };
        if data.is_empty() {
            return Ok(Step::More);
        }
        let len = data.len() as u64;
        if len > self.left {
            return Err(io::Error::other(
                "response body longer than its Content-Length",
            ));
        }
        self.left -= len;
        if matches!(self.framing, Framing::Chunked(_)) {
            number(out, len, 16);
            out.extend_from_slice(b"\r\n");
        }
        if data.len() >= COPY_BELOW {
            return Ok(Step::Large(data));
        }
        out.extend_from_slice(&data);
        Ok(if self.end_chunk(out) {
            Step::Done
        } else {
            Step::More
        })
    }

    /// Ends the data just written: the chunk's line end; whether the length is now met.
    fn end_chunk(&mut self, out: &mut Vec<u8>) -> bool {
        if matches!(self.framing, Framing::Chunked(_)) {
            out.extend_from_slice(b"\r\n");
        }
        matches!(self.framing, Framing::Length(_)) && self.left == 0
    }

    /// Ends the body: the last chunk, or a check that the length was met.
    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self.framing {
            Framing::Chunked(_) => out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(_) if self.left > 0 => {
                return Err(io::Error::other(
                    "response body shorter than its Content-Length",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The trailer fields declared in `Trailer`, less those that may not be trailers.
fn write_trailers(mut trailers: HeaderMap, allowed: &[HeaderName], out: &mut Vec<u8>) {
    strip_trailer_fields(&mut trailers);
    for (name, value) in trailers.iter() {
        if allowed.contains(name) {
            field(out, name.as_str(), value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn parts(status: u16, version: Version, fields: &[(&str, &str)]) -> Parts {
        let mut builder = Response::builder().status(status).version(version);
        for (name, value) in fields {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// The head as written, without its `date` line; the framing; whether it stays open.
    fn head(parts: &mut Parts, known: Known, keep_alive: bool) -> (String, Framing, bool) {
        let mut out = Vec::new();
        let (framing, open) = encode_head(parts, known, keep_alive, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        let without_date: String = text
            .split_inclusive("\r\n")
            .filter(|line| !line.starts_with("date: "))
            .collect();
        assert_eq!(text.matches("date: ").count(), 1, "{text:?}");
        (without_date, framing, open)
    }

    #[test]
    fn a_known_length_is_written_once_and_the_body_follows_it() {
        let mut p = parts(
            200,
            Version::HTTP_11,
            &[("content-length", "5"), ("x-a", "1")],
        );
        let (text, framing, open) = head(&mut p, Known::Exactly(5), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n"
        );
        assert_eq!(framing, Framing::Length(5));
        assert!(open);
        let (text, framing, _) = head(
            &mut parts(404, Version::HTTP_11, &[]),
            Known::Exactly(9),
            true,
        );
        assert_eq!(text, "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(framing, Framing::Length(9));
    }

    #[test]
    fn a_declared_length_is_written_once_with_the_size_the_body_knows() {
        // An HTTP/2 backend's empty body can end only with an empty DATA frame: not yet at its
        // end, but known to be 0 long.
        let mut p = parts(200, Version::HTTP_11, &[("content-length", "0")]);
        let (text, framing, _) = head(&mut p, Known::Exactly(0), true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(framing, Framing::Empty);
        let mut p = parts(200, Version::HTTP_11, &[("content-length", "5")]);
        let (text, framing, _) = head(&mut p, Known::Exactly(7), true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(framing, Framing::Length(7));
    }

    #[test]
    fn an_unknown_length_is_chunked_and_transfer_encoding_is_ours() {
        let mut p = parts(200, Version::HTTP_11, &[("transfer-encoding", "gzip")]);
        let (text, framing, open) = head(&mut p, Known::Unknown, true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(framing, Framing::Chunked(Vec::new()));
        assert!(open);
    }

    #[test]
    fn bodiless_statuses_get_no_length_and_an_empty_body_gets_zero() {
        for status in [204, 304] {
            let mut p = parts(status, Version::HTTP_11, &[("content-length", "7")]);
            let (text, framing, _) = head(&mut p, Known::Empty, true);
            assert!(!text.contains("content-length"), "{text:?}");
            assert_eq!(framing, Framing::Empty);
        }
        let (text, framing, _) = head(&mut parts(200, Version::HTTP_11, &[]), Known::Empty, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(framing, Framing::Empty);
    }

    #[test]
    fn an_http10_response_of_unknown_length_ends_at_close() {
        let mut p = parts(200, Version::HTTP_10, &[("trailer", "x-sum")]);
        let (text, framing, open) = head(&mut p, Known::Unknown, true);
        assert_eq!(text, "HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(framing, Framing::Close);
        assert!(!open);
    }

    #[test]
    fn closing_adds_connection_close_once_and_a_backend_close_is_kept() {
        let (text, _, open) = head(
            &mut parts(200, Version::HTTP_11, &[]),
            Known::Exactly(1),
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n"
        );
        assert!(!open);
        let mut p = parts(200, Version::HTTP_11, &[("connection", "close")]);
        let (text, _, open) = head(&mut p, Known::Exactly(1), false);
        assert_eq!(text.matches("connection: close").count(), 1, "{text:?}");
        assert!(!open);
    }

    #[test]
    fn a_reason_phrase_from_the_backend_is_kept() {
        let mut p = parts(200, Version::HTTP_11, &[]);
        p.extensions
            .insert(hyper::ext::ReasonPhrase::from_static(b"Fine"));
        let (text, _, _) = head(&mut p, Known::Exactly(0), true);
        assert!(text.starts_with("HTTP/1.1 200 Fine\r\n"), "{text:?}");
    }

    #[test]
    fn trailers_go_out_only_when_declared_and_accepted() {
        let declared = &[("trailer", "x-sum, X-Other")];
        let mut out = Vec::new();
        let (framing, _) = encode_head(
            &mut parts(200, Version::HTTP_11, declared),
            Known::Unknown,
            true,
            true,
            &mut out,
        );
        assert_eq!(
            framing,
            Framing::Chunked(vec![
                HeaderName::from_static("x-sum"),
                HeaderName::from_static("x-other")
            ])
        );
        let (framing, _) = encode_head(
            &mut parts(200, Version::HTTP_11, declared),
            Known::Unknown,
            true,
            false,
            &mut out,
        );
        assert_eq!(framing, Framing::Chunked(Vec::new()));
    }

    async fn sent<B>(body: B, framing: Framing) -> (io::Result<()>, String)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut body = body;
        let mut wire = Vec::new();
        let result = send_body(
            &mut wire,
            &mut b"HEAD\r\n".to_vec(),
            &mut body,
            Encoder::new(framing),
        )
        .await;
        (result, String::from_utf8(wire).unwrap())
    }

    /// A body giving these frames, one per poll.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = String;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn frames(frames: Vec<Frame<Bytes>>) -> Frames {
        Frames(frames.into())
    }

    #[tokio::test]
    async fn a_chunked_body_ends_with_its_declared_trailers_only() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "42".parse().unwrap());
        trailers.insert("x-undeclared", "1".parse().unwrap());
        let body = frames(vec![
            Frame::data(Bytes::from_static(b"hello")),
            Frame::data(Bytes::from_static(b" world!")),
            Frame::trailers(trailers),
        ]);
        let framing = Framing::Chunked(vec![HeaderName::from_static("x-sum")]);
        let (result, wire) = sent(body, framing).await;
        result.unwrap();
        assert_eq!(
            wire,
            "HEAD\r\n5\r\nhello\r\n7\r\n world!\r\n0\r\nx-sum: 42\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_without_trailers_ends_with_the_last_chunk() {
        let body = frames(vec![Frame::data(Bytes::from(vec![b'a'; 20]))]);
        let (result, wire) = sent(body, Framing::Chunked(Vec::new())).await;
        result.unwrap();
        assert_eq!(
            wire,
            format!("HEAD\r\n14\r\n{}\r\n0\r\n\r\n", "a".repeat(20))
        );
    }

    #[tokio::test]
    async fn a_large_body_arrives_whole_and_in_order() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let body = Full::new(Bytes::from(data.clone())).map_err(|never| match never {});
        let mut wire = Vec::new();
        let mut body = body;
        send_body(
            &mut wire,
            &mut Vec::new(),
            &mut body,
            Encoder::new(Framing::Length(200_000)),
        )
        .await
        .unwrap();
        assert_eq!(wire, data);
    }

    #[tokio::test]
    async fn a_body_that_breaks_its_length_is_an_error() {
        let long = frames(vec![Frame::data(Bytes::from_static(b"toolong"))]);
        let (result, _) = sent(long, Framing::Length(3)).await;
        assert!(result.is_err());
        let short = frames(vec![Frame::data(Bytes::from_static(b"ab"))]);
        let (result, wire) = sent(short, Framing::Length(3)).await;
        assert!(result.is_err());
        assert_eq!(wire, "HEAD\r\nab", "what was relayed still goes out");
    }

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        let mut out = Vec::new();
        number(&mut out, 0, 10);
        out.push(b' ');
        number(&mut out, 18_446_744_073_709_551_615, 10);
        out.push(b' ');
        number(&mut out, 255, 16);
        assert_eq!(out, b"0 18446744073709551615 ff");
    }
}
