//! A request body as its connection reads it: bytes already read first, then the socket, decoded
//! by length or in chunks (strictly: this is a request), a frame at a time as the request asks
//! (`feed.rs`). `Expect: 100-continue` is answered when the body is first asked for, so a client
//! that waits for it sends nothing the proxy will not read.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use super::input::Input;
use crate::body::feed::{Feed, FeedError, Wants};
use crate::http1::chunked::{Chunk, Decoder, Strictness};
use crate::http1::encode::CONTINUE;

/// The most of a body the request let go of that is read and dropped to keep the connection
/// for the next request; past it, the connection closes.
pub(crate) const DISCARD_LIMIT: u64 = 1 << 20;

/// Where the body is.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Decoder),
}

/// The connection's side of a body being read.
#[derive(Debug)]
pub(crate) struct BodyReader {
    feed: Feed,
    left: Left,
    /// Bytes of `100 Continue` still to write before reading, when the client waits for it.
    to_continue: Option<usize>,
    /// The body cannot be read to its end (malformed, or the client left): the connection
    /// cannot carry another request.
    broken: bool,
    /// Bytes of a body the request let go of, read and dropped so far.
    discarded: u64,
    /// The rest of such a body has been read and dropped: the connection is past it.
    skipped: bool,
    /// What the request was last told its body's current chunk still declares.
    promised: u64,
}

/// How a body reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Read to its end (or failed): nothing more to do.
    Over,
    /// Waiting: on the request to ask, or on the client.
    Waiting,
}

impl BodyReader {
    /// A reader feeding `feed` a body of `length` bytes (`None`: chunked); `expects` when the
    /// client waits for `100 Continue`.
    pub(crate) fn new(feed: Feed, length: Option<u64>, expects: bool) -> BodyReader {
        BodyReader {
            feed,
            left: match length {
                Some(n) => Left::Length(n),
                None => Left::Chunked(Decoder::new(Strictness::Strict)),
            },
            to_continue: expects.then_some(0),
            broken: false,
            discarded: 0,
            skipped: false,
            promised: 0,
        }
    }

    /// Whether the body was read to its end (for the request, or dropped).
    pub(crate) fn is_complete(&self) -> bool {
        !self.broken && (self.skipped || self.feed.is_ended())
    }

    /// Whether the request let go of the body before its end (it will never ask again).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.feed.is_abandoned()
    }

    /// Whether the client still waits for `100 Continue`, having been sent none.
    pub(crate) fn awaits_continue(&self) -> bool {
        self.to_continue == Some(0)
    }

    /// Reads as the request asks, until it asks for nothing more now or the client has sent
    /// nothing more yet (`cx` is woken for either).
    pub(crate) fn poll<S>(&mut self, input: &mut Input<S>, cx: &mut Context<'_>) -> Standing
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            match self.feed.wants(cx) {
                Wants::Over => return Standing::Over,
                Wants::Nothing => return Standing::Waiting,
                Wants::Frame => {}
            }
            if let Some(written) = &mut self.to_continue {
                match Pin::new(&mut input.stream).poll_write(cx, &CONTINUE[*written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        *written += n;
                        if *written == CONTINUE.len() {
                            self.to_continue = None;
                        }
                        continue;
                    }
                    Poll::Ready(Ok(_)) => return self.fail(FeedError::Closed("write zero".into())),
                    Poll::Ready(Err(error)) => {
                        return self.fail(FeedError::Closed(error.to_string()));
                    }
                    Poll::Pending => return Standing::Waiting,
                }
            }
            if input.is_empty() {
                match input.poll_fill(cx) {
                    Poll::Ready(Ok(true)) => {}
                    Poll::Ready(Ok(false)) => {
                        return self.fail(FeedError::Closed("connection closed".into()));
                    }
                    Poll::Ready(Err(error)) => {
                        return self.fail(FeedError::Closed(error.to_string()));
                    }
                    Poll::Pending => return Standing::Waiting,
                }
            }
            self.give(input);
        }
    }

    /// Decodes from what was read, and gives the request a frame if there is one.
    fn give<S>(&mut self, input: &mut Input<S>) {
        let Some(bytes) = input.unread.as_mut() else {
            return;
        };
        match &mut self.left {
            Left::Length(left) => {
                let n = (*left).min(bytes.len() as u64) as usize;
                let data = bytes.split_to(n);
                *left -= n as u64;
                if bytes.is_empty() {
                    input.unread = None;
                }
                self.feed.data(data, *left == 0, 0);
            }
            Left::Chunked(decoder) => match decoder.decode(bytes) {
                Ok(Chunk::Data { used, data }) => {
                    bytes.advance(used);
                    let data = bytes.split_to(data);
                    input.settle();
                    self.promised = decoder.pending();
                    self.feed.data(data, false, self.promised);
                }
                Ok(Chunk::More { used }) => {
                    bytes.advance(used);
                    input.settle();
                    let pending = decoder.pending();
                    self.promise(pending);
                }
                Ok(Chunk::End { used, trailers }) => {
                    bytes.advance(used);
                    input.settle();
                    match trailers {
                        Some(trailers) => self.feed.trailers(trailers),
                        None => self.feed.end(),
                    }
                }
                Err(error) => {
                    self.broken = true;
                    self.feed.fail(FeedError::Malformed(format!(
                        "invalid chunked body: {error}"
                    )));
                }
            },
        }
    }

    /// Tells the request how much the current chunk still declares, when that changed: a chunk
    /// larger than the request's `max_body` is refused (413) as soon as its size is read.
    fn promise(&mut self, pending: u64) {
        if pending != self.promised {
            self.promised = pending;
            self.feed.promise(pending);
        }
    }

    fn fail(&mut self, error: FeedError) -> Standing {
        self.broken = true;
        self.feed.fail(error);
        Standing::Over
    }

    /// Whether the rest of a body the request let go of may be read and dropped, so that the
    /// connection carries the next request: not when the client still waits for `100 Continue`
    /// (it will not send the body) or has declared more than [`DISCARD_LIMIT`] still to come.
    pub(crate) fn can_discard(&self) -> bool {
        let declared_left = match self.left {
            Left::Length(left) => left,
            Left::Chunked(_) => 0,
        };
        !self.broken && !self.awaits_continue() && declared_left <= DISCARD_LIMIT
    }

    /// Reads and drops the rest of a body the request let go of, as nginx discards one, so that
    /// whether the connection carries the next request does not depend on how much of the body
    /// had come when the answer was made: `Ready(true)` at its end, `Ready(false)` when it cannot
    /// be reached (malformed, the client left, more than [`DISCARD_LIMIT`] dropped).
    pub(crate) fn poll_discard<S>(
        &mut self,
        input: &mut Input<S>,
        cx: &mut Context<'_>,
    ) -> Poll<bool>
    where
        S: AsyncRead + Unpin,
    {
        loop {
            if self.is_complete() {
                return Poll::Ready(true);
            }
            if !self.can_discard() || self.discarded > DISCARD_LIMIT {
                return Poll::Ready(false);
            }
            if input.unread.is_some() {
                self.skip(input);
                continue;
            }
            match ready!(input.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    self.broken = true;
                    return Poll::Ready(false);
                }
            }
        }
    }

    /// Drops what was read of the body, up to its end.
    fn skip<S>(&mut self, input: &mut Input<S>) {
        let bytes = input.unread.get_or_insert_with(Bytes::new);
        let before = bytes.len();
        match &mut self.left {
            Left::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                bytes.advance(n as usize);
                *left -= n;
                self.skipped = *left == 0;
            }
            Left::Chunked(decoder) => loop {
                match decoder.decode(bytes) {
                    Ok(Chunk::Data { used, data }) => bytes.advance(used + data),
                    Ok(Chunk::More { used }) => {
                        bytes.advance(used);
                        break;
                    }
                    Ok(Chunk::End { used, .. }) => {
                        bytes.advance(used);
                        self.skipped = true;
                        break;
                    }
                    Err(_) => {
                        self.broken = true;
                        break;
                    }
                }
            },
        }
        self.discarded += (before - bytes.len()) as u64;
        input.settle();
    }
}
