//! A response body read from a backend connection as the client side takes it: by length, in
//! chunks (the codec's decoder, lenient as responses are read), or until the connection closes;
//! and the rest of a request body the backend answered early, sent as the response is read
//! ([`Upload`]). Once it is read to its end, the connection can carry another exchange
//! ([`ResponseBody::reusable`]) if the backend allows, sent nothing more, and got the whole
//! request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

use super::connection::{Connection, ExchangeError, Upload};

/// Data pieces at least this large are split off the read buffer, not copied.
const SPLIT_FROM: usize = 4096;
use crate::arena;
use crate::http1::BodyLength;
use crate::http1::chunked::{Chunk, Decoder, Strictness};
use crate::upstream::describe_io;

/// A response body on a backend connection.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    /// `None` once the body failed or was given back.
    connection: Option<Box<Connection>>,
    reading: Reading,
    /// The backend lets the connection carry another exchange (and the request went whole).
    keep_alive: bool,
    /// The rest of the request body, still being sent.
    upload: Option<Box<Upload>>,
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    /// Reading failed: the error is given at the next poll (see [`ResponseBody::fail`]).
    Failed(String),
    Done,
}

impl ResponseBody {
    /// A body of `length` read from `connection`; `keep_alive` when the exchange lets the
    /// connection carry another, `upload` the rest of the request body to send meanwhile (the
    /// connection is then reused only if it is sent whole before the response ends).
    pub(super) fn new(
        connection: Box<Connection>,
        length: BodyLength,
        keep_alive: bool,
        upload: Option<Box<Upload>>,
    ) -> ResponseBody {
        let reading = match length {
            BodyLength::Empty => Reading::Done,
            BodyLength::Length(n) => Reading::Length(n),
            BodyLength::Chunked => Reading::Chunked(Decoder::new(Strictness::Lenient)),
            BodyLength::UntilClose => Reading::UntilClose,
        };
        ResponseBody {
            connection: Some(connection),
            reading,
            keep_alive,
            upload,
        }
    }

    /// The connection, once the body has been read to its end, if the backend allows another
    /// exchange on it and sent nothing beyond the body.
    pub(crate) fn reusable(&mut self) -> Option<Box<Connection>> {
        if !matches!(self.reading, Reading::Done) || !self.keep_alive || self.upload.is_some() {
            return None;
        }
        self.connection.take().filter(|c| c.input.is_empty())
    }

    /// Gives up on the body. The error comes at the next poll, not this one: a server stops at
    /// the error, and the data already relayed must first be flushed, which this poll returning
    /// pending does.
    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        reason: impl Into<String>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.connection = None;
        self.upload = None;
        self.reading = Reading::Failed(reason.into());
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Sends what it can of the rest of the request body; `Err` with the reason the response
    /// is given up for when the request body failed.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        let (Some(upload), Some(connection)) = (&mut self.upload, &mut self.connection) else {
            return Ok(());
        };
        match connection.poll_upload(upload, cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(whole)) => {
                self.upload = None;
                self.keep_alive &= whole;
                Ok(())
            }
            Poll::Ready(Err(error)) => {
                self.upload = None;
                Err(match error {
                    ExchangeError::Body(error) => format!("the request body failed: {error}"),
                    other => format!("sending the request body: {other:?}"),
                })
            }
        }
    }

    fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a body being read has its connection")
    }

    /// Reads more, about `wanted` bytes at most: `Ok(false)` at the end of the stream.
    fn poll_more(&mut self, wanted: usize, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        Poll::Ready(ready!(self.connection().poll_fill(wanted, cx)).map(|n| n > 0))
    }

    /// The first `n` bytes of the input, as data. Small pieces are copied out (into the
    /// thread's arena), so that the read buffer stays the connection's alone and the next read
    /// reuses it; large ones are split off, which costs the next read an allocation, less than
    /// a copy of that many bytes.
    fn take(&mut self, n: usize) -> Bytes {
        let input = &mut self.connection().input;
        if n < SPLIT_FROM {
            let data = arena::copy(&input[..n]);
            input.advance(n);
            return data;
        }
        input.split_to(n).freeze()
    }

    fn poll_chunked(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            let Reading::Chunked(decoder) = &mut self.reading else {
                unreachable!("only a chunked body is read here")
            };
            let input = &mut self.connection.as_mut().expect("reading").input;
            match decoder.decode(input) {
                Ok(Chunk::Data { used, data }) => {
                    input.advance(used);
                    return Poll::Ready(Some(Ok(Frame::data(self.take(data)))));
                }
                Ok(Chunk::More { used }) => input.advance(used),
                Ok(Chunk::End { used, trailers }) => {
                    input.advance(used);
                    self.reading = Reading::Done;
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                Err(error) => return self.fail(cx, format!("invalid chunked body: {error}")),
            }
            match ready!(self.poll_more(0, cx)) {
                Ok(true) => {}
                Ok(false) => return self.fail(cx, "connection closed in a chunked body"),
                Err(error) => return self.fail(cx, describe_io(&error)),
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.upload.is_some()
            && let Err(reason) = this.poll_upload(cx)
        {
            return this.fail(cx, reason);
        }
        loop {
            match &mut this.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Failed(reason) => {
                    let error = io::Error::other(std::mem::take(reason));
                    this.reading = Reading::Done;
                    this.keep_alive = false;
                    return Poll::Ready(Some(Err(error)));
                }
                Reading::Chunked(_) => return this.poll_chunked(cx),
                Reading::Length(left) => {
                    let left = *left;
                    let buffered = this.connection().input.len();
                    if buffered > 0 {
                        let n = (left as usize).min(buffered);
                        let data = this.take(n);
                        this.reading = match left - n as u64 {
                            0 => Reading::Done,
                            left => Reading::Length(left),
                        };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_more(left as usize, cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this.fail(cx, "connection closed before the body ended");
                        }
                        Err(error) => return this.fail(cx, describe_io(&error)),
                    }
                }
                Reading::UntilClose => {
                    let buffered = this.connection().input.len();
                    if buffered > 0 {
                        return Poll::Ready(Some(Ok(Frame::data(this.take(buffered)))));
                    }
                    // A TLS backend may close without `close_notify`; nginx and HAProxy take
                    // that as the end of such a body too.
                    let more = ready!(this.poll_more(usize::MAX, cx)).or_else(|error| match error
                        .kind()
                    {
                        io::ErrorKind::UnexpectedEof => Ok(false),
                        _ => Err(error),
                    });
                    match more {
                        Ok(true) => {}
                        Ok(false) => {
                            this.reading = Reading::Done;
                            return Poll::Ready(None);
                        }
                        Err(error) => return this.fail(cx, describe_io(&error)),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
