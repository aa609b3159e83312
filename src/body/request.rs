//! A client's request body on its way to a backend, streamed frame by frame, never buffered
//! whole. [`RequestBody`] says when it has been sent whole (the response timeout starts then),
//! and it keeps what it sent, up to [`REPLAY_LIMIT`], so that a failed attempt can be replayed
//! to another backend.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{BodyError, Inbound};

/// Largest request body kept for replay on a retry. A body sent past this is not replayable
/// (an attempt that fails after sending it is not retried); one never sent at all always is.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// One piece of a request body, kept for replay.
#[derive(Debug, Clone)]
enum Chunk {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Chunk {
    fn of(frame: &Frame<Bytes>) -> Option<Chunk> {
        if let Some(data) = frame.data_ref() {
            Some(Chunk::Data(data.clone()))
        } else {
            frame.trailers_ref().map(|t| Chunk::Trailers(t.clone()))
        }
    }

    fn into_frame(self) -> Frame<Bytes> {
        match self {
            Chunk::Data(data) => Frame::data(data),
            Chunk::Trailers(trailers) => Frame::trailers(trailers),
        }
    }

    fn len(&self) -> usize {
        match self {
            Chunk::Data(data) => data.len(),
            Chunk::Trailers(_) => 0,
        }
    }
}

/// What an attempt's request body reports back, once: at its end, or when dropped unfinished.
#[derive(Debug)]
pub struct Leftover {
    /// Enough to send the same body again, if what was sent fit in [`REPLAY_LIMIT`].
    pub replay: Option<Replay>,
}

/// A body to send again: the chunks already sent, then whatever the client has not sent yet.
#[derive(Debug)]
pub struct Replay {
    chunks: Vec<Chunk>,
    rest: Option<Inbound>,
}

impl Replay {
    /// The body for the next attempt.
    pub fn into_body(self) -> (RequestBody, Option<oneshot::Receiver<Leftover>>) {
        RequestBody::build(self.chunks, self.rest)
    }
}

/// A request body on its way to a backend: replayed chunks first, then the client's stream.
///
/// An empty one holds nothing: requests, which carry it by value through every layer of the
/// proxy, stay small for the common request without a body.
#[derive(Debug)]
pub struct RequestBody(Kind);

#[derive(Debug)]
enum Kind {
    Empty,
    /// The whole body, which came with its head: sent at once, sent again as it is. Whether it
    /// has been taken.
    Whole(Bytes, bool),
    Streaming(Box<Streaming>),
}

/// A [`RequestBody`] with something to send.
#[derive(Debug)]
struct Streaming {
    queued: std::vec::IntoIter<Chunk>,
    rest: Option<Inbound>,
    /// Everything sent so far, while it fits in the limit; `None` once it does not.
    sent: Option<Vec<Chunk>>,
    sent_bytes: usize,
    report: Option<oneshot::Sender<Leftover>>,
    /// Told the whole body once it has been sent to its end within [`REPLAY_LIMIT`].
    tap: Option<oneshot::Sender<RequestBody>>,
}

impl RequestBody {
    /// Wraps the client's body. The receiver hears once how the attempt used it: at its end, or
    /// when it is dropped. `None` when the body is empty: there is nothing to wait for or replay.
    pub fn new(body: Inbound) -> (RequestBody, Option<oneshot::Receiver<Leftover>>) {
        if body.is_end_stream() {
            return (RequestBody::empty(), None);
        }
        RequestBody::build(Vec::new(), Some(body))
    }

    /// A body with nothing in it.
    pub fn empty() -> RequestBody {
        RequestBody(Kind::Empty)
    }

    /// The whole body, known before anything is sent: it needs no report, and is sent again
    /// from the bytes themselves.
    pub fn whole(data: Bytes) -> RequestBody {
        if data.is_empty() {
            return RequestBody::empty();
        }
        RequestBody(Kind::Whole(data, false))
    }

    /// The same body again, when it can be had without sending this one: an empty or whole one.
    pub fn try_clone(&self) -> Option<RequestBody> {
        match &self.0 {
            Kind::Empty => Some(RequestBody::empty()),
            Kind::Whole(data, _) => Some(RequestBody::whole(data.clone())),
            Kind::Streaming(_) => None,
        }
    }

    /// A copy of the whole body, for a body still to be read from the client: it comes once the
    /// body has been sent to its end, if it was no larger than [`REPLAY_LIMIT`]; otherwise the
    /// sender is dropped. `None` for a body already in hand (see [`RequestBody::try_clone`]).
    pub fn tap(&mut self) -> Option<oneshot::Receiver<RequestBody>> {
        let Kind::Streaming(streaming) = &mut self.0 else {
            return None;
        };
        let (tx, rx) = oneshot::channel();
        streaming.tap = Some(tx);
        Some(rx)
    }

    /// Puts what was sent back in front of what is left, to send the same body again (on
    /// another connection); false when more than [`REPLAY_LIMIT`] was sent, which is gone.
    pub fn rewind(&mut self) -> bool {
        let streaming = match &mut self.0 {
            Kind::Empty => return true,
            Kind::Whole(_, taken) => {
                *taken = false;
                return true;
            }
            Kind::Streaming(streaming) => streaming,
        };
        let Some(mut chunks) = streaming.sent.take() else {
            return false;
        };
        chunks.extend(streaming.queued.by_ref());
        streaming.queued = chunks.into_iter();
        streaming.sent = Some(Vec::new());
        streaming.sent_bytes = 0;
        true
    }

    fn build(
        chunks: Vec<Chunk>,
        rest: Option<Inbound>,
    ) -> (RequestBody, Option<oneshot::Receiver<Leftover>>) {
        let (tx, rx) = oneshot::channel();
        let body = Streaming {
            queued: chunks.into_iter(),
            rest,
            sent: Some(Vec::new()),
            sent_bytes: 0,
            report: Some(tx),
            tap: None,
        };
        (RequestBody(Kind::Streaming(Box::new(body))), Some(rx))
    }
}

impl Streaming {
    fn keep(&mut self, chunk: Chunk) {
        self.sent_bytes += chunk.len();
        if self.sent_bytes > REPLAY_LIMIT {
            self.sent = None;
        } else if let Some(sent) = &mut self.sent {
            sent.push(chunk);
        }
    }

    fn finish(&mut self) {
        if let Some(tap) = self.tap.take()
            && self.is_end_stream()
            && let Some(sent) = &self.sent
        {
            let (copy, _) = RequestBody::build(sent.clone(), None);
            tap.send(copy).ok();
        }
        let Some(report) = self.report.take() else {
            return;
        };
        // Copies (of shared bytes): a body sent whole can still be rewound.
        let replay = self.sent.as_ref().map(|sent| {
            let mut chunks = sent.clone();
            chunks.extend(self.queued.clone());
            Replay {
                chunks,
                rest: self.rest.take(),
            }
        });
        // Nobody listening means the proxy already has its answer.
        report.send(Leftover { replay }).ok();
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What is left where a body was taken out of its request (`std::mem::take`).
impl Default for RequestBody {
    fn default() -> RequestBody {
        RequestBody::empty()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty | Kind::Whole(_, true) => Poll::Ready(None),
            Kind::Whole(data, taken) => {
                *taken = true;
                Poll::Ready(Some(Ok(Frame::data(data.clone()))))
            }
            Kind::Streaming(streaming) => Pin::new(&mut **streaming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Whole(_, taken) => *taken,
            Kind::Streaming(streaming) => streaming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty | Kind::Whole(_, true) => SizeHint::with_exact(0),
            Kind::Whole(data, false) => SizeHint::with_exact(data.len() as u64),
            Kind::Streaming(streaming) => streaming.size_hint(),
        }
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.queued.next() {
            this.keep(chunk.clone());
            if this.is_end_stream() {
                this.finish();
            }
            return Poll::Ready(Some(Ok(chunk.into_frame())));
        }
        let Some(rest) = &mut this.rest else {
            this.finish();
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = Chunk::of(frame) {
                    this.keep(chunk);
                }
                if this.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.queued.len() == 0 && self.rest.as_ref().is_none_or(Inbound::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self.queued.as_slice().iter().map(|c| c.len() as u64).sum();
        let rest = self
            .rest
            .as_ref()
            .map(Inbound::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint.set_lower(rest.lower() + queued);
        hint
    }
}
