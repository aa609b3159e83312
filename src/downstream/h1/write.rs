//! A response written to the client: its head (the codec's), then its body framed as the head
//! said, a poll at a time so the connection can go on reading the request's body meanwhile.
//!
//! Small responses leave in one write: the head and whatever body is ready at once share a
//! buffer, written when the body has nothing more ready, or has grown past [`FLUSH_AT`]; data
//! frames of [`COPY_BELOW`] bytes or more are written from their own buffer, not copied.
//!
//! A client that reads nothing of what is written to it for `client_idle` has its response
//! given up on, as nginx's `send_timeout` does ([`WriteWait`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;

use crate::arena;
use crate::http1::chunked;
use crate::http1::encode::Framing;
use crate::pause::WriteWait;

/// Bytes gathered before they are written, however much more body is ready.
const FLUSH_AT: usize = 64 * 1024;
/// Data frames at least this large are written from their own buffer.
const COPY_BELOW: usize = 16 * 1024;

/// Why a response could not be written whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// Writing to the client failed (it left, or stopped reading for too long).
    #[error("to the client: {0}")]
    Client(io::Error),
    /// The body failed, or broke its framing: the client got it cut short.
    #[error("{0}")]
    Body(String),
}

/// A response being written.
#[derive(Debug)]
pub(crate) struct Writer {
    out: Vec<u8>,
    written: usize,
    framing: Framing,
    /// What a `Content-Length` body has left.
    left: u64,
    /// A large data frame being written from its own buffer, and how much of it is.
    large: Option<(Bytes, usize)>,
    /// Every byte of the response is in `out` (or written).
    complete: bool,
    /// The body failed: what is gathered goes out, then this.
    failed: Option<String>,
    /// The body has been polled once, to go with the head.
    begun: bool,
}

impl Writer {
    /// A writer of `head` (already encoded), with a body framed as `framing`.
    pub(crate) fn new(head: Vec<u8>, framing: Framing) -> Writer {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Writer {
            out: head,
            written: 0,
            framing,
            left,
            large: None,
            complete: framing == Framing::None,
            failed: None,
            begun: false,
        }
    }

    /// Whether only the connection's close ends the body.
    pub(crate) fn ends_at_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    /// Gives the buffer back to the thread's arena, for the next response.
    pub(crate) fn recycle(self) {
        arena::recycle_buffer(self.out);
    }

    /// Writes what it can; `Ready(Ok)` once the whole response is written and flushed. Writes
    /// that wait on the client count against `writes`.
    pub(crate) fn poll<S, B>(
        &mut self,
        stream: &mut S,
        body: &mut B,
        writes: &mut WriteWait,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>>
    where
        S: AsyncWrite + Unpin,
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        if !self.begun {
            // What of the body is ready now leaves with the head, in one write.
            self.begun = true;
            let _ = self.gather(body, cx);
        }
        loop {
            if self.written < self.out.len() {
                let gathered = &self.out[self.written..];
                // A large frame waiting behind what is gathered goes in the same write.
                let wrote = match &self.large {
                    Some((data, 0)) if stream.is_write_vectored() => {
                        let both = [IoSlice::new(gathered), IoSlice::new(data)];
                        Pin::new(&mut *stream).poll_write_vectored(cx, &both)
                    }
                    _ => Pin::new(&mut *stream).poll_write(cx, gathered),
                };
                let n = ready!(writes.count(wrote, cx))
                    .and_then(nonzero)
                    .map_err(WriteError::Client)?;
                let of_gathered = n.min(gathered.len());
                self.written += of_gathered;
                if let Some((_, written)) = &mut self.large {
                    *written += n - of_gathered;
                }
                if self.written == self.out.len() {
                    self.out.clear();
                    self.written = 0;
                }
                if self
                    .large
                    .as_ref()
                    .is_some_and(|(data, written)| *written == data.len())
                {
                    self.large = None;
                    self.end_data();
                }
                continue;
            }
            if let Some((data, written)) = &mut self.large {
                let wrote = Pin::new(&mut *stream).poll_write(cx, &data[*written..]);
                let n = ready!(writes.count(wrote, cx))
                    .and_then(nonzero)
                    .map_err(WriteError::Client)?;
                *written += n;
                if *written == data.len() {
                    self.large = None;
                    self.end_data();
                }
                continue;
            }
            if let Some(reason) = self.failed.take() {
                return Poll::Ready(Err(WriteError::Body(reason)));
            }
            if self.complete {
                let flushed = Pin::new(&mut *stream).poll_flush(cx);
                ready!(writes.count(flushed, cx)).map_err(WriteError::Client)?;
                return Poll::Ready(Ok(()));
            }
            if self.gather(body, cx).is_pending() && self.out.is_empty() && self.large.is_none() {
                // Nothing more for now: what TLS holds goes out while the body is awaited.
                let flushed = Pin::new(&mut *stream).poll_flush(cx);
                ready!(writes.count(flushed, cx)).map_err(WriteError::Client)?;
                return Poll::Pending;
            }
        }
    }

    /// Gathers ready frames into `out`; `Pending` once the body has nothing ready, `Ready` when
    /// there is enough (or all) to write.
    fn gather<B>(&mut self, body: &mut B, cx: &mut Context<'_>) -> Poll<()>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        while !self.complete && self.large.is_none() && self.out.len() < FLUSH_AT {
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => self.finish(),
                Some(Ok(frame)) => self.frame(frame),
                Some(Err(error)) => {
                    self.failed = Some(format!("response body: {error}"));
                    return Poll::Ready(());
                }
            }
            if self.failed.is_some() {
                return Poll::Ready(());
            }
        }
        Poll::Ready(())
    }

    fn frame(&mut self, frame: Frame<Bytes>) {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    self.finish_with(Some(trailers));
                }
                return;
            }
        };
        if data.is_empty() {
            return;
        }
        match self.framing {
            Framing::None => return,
            Framing::Length(_) if data.len() as u64 > self.left => {
                self.failed = Some("response body longer than its Content-Length".into());
                return;
            }
            Framing::Length(_) => self.left -= data.len() as u64,
            Framing::Chunked { .. } => chunked::encode_size(data.len() as u64, &mut self.out),
            Framing::UntilClose => {}
        }
        if data.len() >= COPY_BELOW {
            self.large = Some((data, 0));
            return;
        }
        self.out.extend_from_slice(&data);
        self.end_data();
    }

    /// After a chunk's data: its line end; a length met completes the body.
    fn end_data(&mut self) {
        match self.framing {
            Framing::Chunked { .. } => self.out.extend_from_slice(chunked::CHUNK_END),
            Framing::Length(_) if self.left == 0 => self.complete = true,
            _ => {}
        }
    }

    fn finish(&mut self) {
        self.finish_with(None);
    }

    fn finish_with(&mut self, trailers: Option<http::HeaderMap>) {
        match self.framing {
            Framing::Chunked { trailers: allowed } => {
                let trailers = trailers.filter(|_| allowed);
                chunked::encode_end(trailers.as_ref(), &mut self.out);
            }
            Framing::Length(_) if self.left > 0 => {
                self.failed = Some("response body shorter than its Content-Length".into());
                return;
            }
            _ => {}
        }
        self.complete = true;
    }
}

fn nonzero(n: usize) -> io::Result<usize> {
    if n == 0 {
        Err(io::ErrorKind::WriteZero.into())
    } else {
        Ok(n)
    }
}
