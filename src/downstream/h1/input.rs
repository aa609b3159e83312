//! A client connection's stream and the bytes read from it that are not used yet: the rest of
//! the read that brought a head (a body's first bytes, pipelined requests), and a head that has
//! not ended yet, gathered across reads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncRead;

use crate::arena;
use crate::http1::head::{self, HeadError, Limits, Parsed, RequestHead};

/// The most bytes one read takes.
const READ_SIZE: usize = 8192;

#[derive(Debug)]
pub(crate) struct Input<S> {
    pub(crate) stream: S,
    /// Read and not yet used; never `Some` and empty.
    pub(crate) unread: Option<Bytes>,
    /// A head begun and not yet ended: reads append here until it ends.
    partial: BytesMut,
}

impl<S> Input<S> {
    pub(crate) fn new(stream: S) -> Input<S> {
        Input {
            stream,
            unread: None,
            partial: BytesMut::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.unread.is_none() && self.partial.is_empty()
    }

    /// Drops `unread` once it is used up.
    pub(crate) fn settle(&mut self) {
        if self.unread.as_ref().is_some_and(Bytes::is_empty) {
            self.unread = None;
        }
    }

    /// What was read and not used, without taking it.
    pub(crate) fn peek(&self) -> &[u8] {
        if self.partial.is_empty() {
            self.unread.as_deref().unwrap_or_default()
        } else {
            &self.partial
        }
    }

    /// Whether part of a head has arrived.
    pub(crate) fn has_partial_head(&self) -> bool {
        !self.partial.is_empty()
    }

    /// The next request head, if what was read holds a whole one; its bytes are consumed. A
    /// head not ended yet is kept, and later reads append to it.
    pub(crate) fn take_head(&mut self, limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
        if self.partial.is_empty() {
            let Some(bytes) = self.unread.take() else {
                return Ok(None);
            };
            match head::parse_request(&bytes, limits, |len| bytes.slice(..len))? {
                Parsed::Complete(head) => {
                    self.unread = Some(bytes.slice(head.len..));
                    self.settle();
                    return Ok(Some(head));
                }
                Parsed::Partial => {
                    self.partial.extend_from_slice(&bytes);
                    return Ok(None);
                }
            }
        }
        let partial = &self.partial;
        match head::parse_request(partial, limits, |len| {
            Bytes::copy_from_slice(&partial[..len])
        })? {
            Parsed::Complete(head) => {
                let rest = self.partial.split().freeze().slice(head.len..);
                self.unread = Some(rest);
                self.settle();
                Ok(Some(head))
            }
            Parsed::Partial => Ok(None),
        }
    }
}

impl<S: AsyncRead + Unpin> Input<S> {
    /// Reads what the stream has now, after what is unread (or into a head begun): `Ok(false)`
    /// at its end.
    ///
    /// Bytes are read into the thread's arena chunk (`arena.rs`), not a buffer of the
    /// connection's: an idle connection holds none, and a head's values are slices of the read.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.partial.is_empty() {
            self.partial.reserve(READ_SIZE);
            let stream = Pin::new(&mut self.stream);
            let read = tokio_util::io::poll_read_buf(stream, cx, &mut self.partial);
            return read.map_ok(|n| n > 0);
        }
        let (bytes, read) = arena::fill(READ_SIZE, |chunk| {
            let stream = Pin::new(&mut self.stream);
            tokio_util::io::poll_read_buf(stream, cx, &mut chunk.limit(READ_SIZE))
        });
        match read {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => {
                self.unread = Some(match self.unread.take() {
                    None => bytes,
                    Some(before) => {
                        let mut joined = BytesMut::with_capacity(before.len() + bytes.len());
                        joined.extend_from_slice(&before);
                        joined.extend_from_slice(&bytes);
                        joined.freeze()
                    }
                });
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Everything read and not used, for a protocol that takes the connection over.
    pub(crate) fn take_read(&mut self) -> Bytes {
        if self.partial.is_empty() {
            return self.unread.take().unwrap_or_default();
        }
        self.partial.split().freeze()
    }
}
