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

use std::future::poll_fn;
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
use super::request::lists_close;
use crate::access::Logged;
use crate::headers::strip_trailer_fields;

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
/// asked for, and nothing failed or asked to close).
pub(super) async fn write<S>(stream: &mut S, response: Response<Logged>, keep_alive: bool) -> bool
where
    S: AsyncWrite + Unpin,
{
    let (mut parts, mut body) = response.into_parts();
    let known = if body.is_end_stream() {
        Known::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(Known::Unknown, Known::Exactly)
    };
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 32);
    let (framing, keep_alive) = encode_head(&mut parts, known, keep_alive, &mut out);
    let written = match framing {
        Framing::Empty => stream.write_all(&out).await,
        framing => send_body(stream, out, &mut body, framing).await,
    };
    drop(body);
    written.is_ok() && keep_alive
}

/// Writes the status line and fields to `out`; how the body will be framed, and whether the
/// connection stays open after it.
fn encode_head(
    parts: &mut Parts,
    known: Known,
    mut keep_alive: bool,
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
                // A body that knows its length is trusted over the header, as hyper does.
                length = Some(match known {
                    Known::Exactly(n) => n,
                    _ => declared,
                });
            }
            // The framing is this connection's to choose.
            header::TRANSFER_ENCODING => continue,
            header::TRAILER => {
                if http10 || bodiless {
                    continue;
                }
                trailers.extend(
                    value
                        .as_bytes()
                        .split(|&b| b == b',')
                        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok()),
                );
            }
            header::CONNECTION if lists_close(value) => wrote_close = true,
            header::DATE => wrote_date = true,
            _ => {}
        }
        field(out, name.as_str(), value.as_bytes());
    }
    let framing = match (length, known) {
        _ if bodiless => Framing::Empty,
        (Some(0), _) | (None, Known::Empty) | (None, Known::Exactly(0)) => {
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
    mut out: Vec<u8>,
    body: &mut B,
    framing: Framing,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut encoder = Encoder::new(framing);
    loop {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more ready: what is gathered goes out while the body is awaited.
                flush(stream, &mut out).await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let done = match frame {
            None => {
                encoder.finish(&mut out)?;
                true
            }
            Some(Err(error)) => {
                // What was relayed still reaches the client before the connection is cut.
                flush(stream, &mut out).await.ok();
                return Err(io::Error::other(format!("response body: {error}")));
            }
            Some(Ok(frame)) => encoder.frame(frame, stream, &mut out).await?,
        };
        if done {
            return flush(stream, &mut out).await;
        }
        if out.len() >= FLUSH_AT {
            flush(stream, &mut out).await?;
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

    /// Adds a frame to `out` (or writes a large one straight out); whether the body is done.
    async fn frame<S>(
        &mut self,
        frame: Frame<Bytes>,
        stream: &mut S,
        out: &mut Vec<u8>,
    ) -> io::Result<bool>
    where
        S: AsyncWrite + Unpin,
    {
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
                    return Ok(true);
                }
                return Ok(false);
            }
        };
        if data.is_empty() {
            return Ok(false);
        }
        let len = data.len() as u64;
        if len > self.left {
            return Err(io::Error::other(
                "response body longer than its Content-Length",
            ));
        }
        self.left -= len;
        let chunked = matches!(self.framing, Framing::Chunked(_));
        if chunked {
            number(out, len, 16);
            out.extend_from_slice(b"\r\n");
        }
        if data.len() < COPY_BELOW {
            out.extend_from_slice(&data);
        } else {
            flush(stream, out).await?;
            stream.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        Ok(matches!(self.framing, Framing::Length(_)) && self.left == 0)
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
