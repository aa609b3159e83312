//! Message bodies on their way through the proxy, streamed frame by frame, never buffered whole.
//!
//! - [`ProxyBody`], a response body: the backend's (read by hyper's client connection, or by
//!   the request's own task on a plain connection: [`UpstreamBody`]), carrying the backend's in-flight guard (so the
//!   request counts as in flight until its body is done or dropped), or a short one the proxy
//!   wrote itself. An enum rather than a boxed body: no allocation per response.
//! - [`RequestBody`], a client's body on its way to a backend. It says when it has been sent
//!   whole (the response timeout starts then), and it keeps what it sent, up to
//!   [`REPLAY_LIMIT`], so that a failed attempt can be replayed to another backend.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;
use tracing::warn;

use super::{BodyError, Inbound};
use crate::pause::Pause;
use crate::upstream::{InFlight, PlainBody, Sender};

/// A response body's error, whichever connection it was read from.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// Relayed from a backend.
    Upstream(Relayed),
    /// Written by the proxy.
    Local(Full<Bytes>),
}

/// A backend's response body, with what must happen when it ends: the request stops counting as
/// in flight, and the connection it came on goes back to its backend's idle stack, but only if
/// the body was read to its end (a connection with unread bytes cannot carry another exchange).
/// A backend that pauses mid-body for longer than `timeouts.response_body_idle` is given up on,
/// as nginx's `proxy_read_timeout` and HAProxy's `timeout server` do: the body ends in an error,
/// so the client's connection (HTTP/2: stream) is cut rather than left waiting forever.
#[derive(Debug)]
pub struct Relayed {
    body: UpstreamBody,
    in_flight: InFlight,
    /// hyper's connection the body came on, and the backend's connections' epoch when it was
    /// taken or made: one from before a reload changed its settings (TLS roots) is not taken
    /// back. A plain connection is inside its body.
    connection: Option<(Sender, u64)>,
    /// The backend's pause between two frames, against the longest allowed.
    pause: Pause,
}

/// A backend's response body: read by hyper's client connection, or by this request's task.
#[derive(Debug)]
pub enum UpstreamBody {
    Hyper(Incoming),
    Plain(PlainBody),
}

impl Relayed {
    pub fn new(
        body: UpstreamBody,
        in_flight: InFlight,
        connection: Option<(Sender, u64)>,
        idle: Duration,
    ) -> Relayed {
        Relayed {
            body,
            in_flight,
            connection,
            pause: Pause::new(idle),
        }
    }

    /// The next frame, or an error once the backend has paused longer than `idle`.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.pause.progressed();
            if let Poll::Ready(Some(Err(error))) = &polled {
                self.cut_short(error.as_ref());
            }
            return polled;
        }
        if !self.pause.over(cx) {
            return Poll::Pending;
        }
        let idle = self.pause.limit();
        let error: BoxError = format!("the backend sent nothing of the body for {idle:?}").into();
        self.cut_short(error.as_ref());
        Poll::Ready(Some(Err(error)))
    }

    /// Says that the response body ended in `error`: its status and head went to the client
    /// already (and to the access log), so this line is where a truncated response shows, as
    /// nginx's "upstream prematurely closed connection".
    fn cut_short(&self, error: &(dyn std::error::Error + 'static)) {
        warn!(
            backend = %self.in_flight.backend().address(),
            %error,
            "response body from the backend cut short: the client's response is incomplete"
        );
    }

    fn recycle(&mut self) {
        let connections = self.in_flight.backend().connections();
        if let Some((connection, epoch)) = self.connection.take() {
            connections.put(connection, epoch);
        }
        if let UpstreamBody::Plain(body) = &mut self.body
            && let Some(connection) = body.reusable()
        {
            connections.put_plain(connection);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Plain(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::Plain(body) => body.size_hint(),
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.recycle();
        }
    }
}

impl ProxyBody {
    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(relayed) => {
                let polled = relayed.poll_body(cx);
                if matches!(polled, Poll::Ready(None)) || relayed.body.is_end_stream() {
                    relayed.recycle();
                }
                polled
            }
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(relayed) => relayed.body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(relayed) => relayed.body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}

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
    /// The body was sent to its end.
    pub sent_whole: bool,
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
pub struct RequestBody(Option<Box<Streaming>>);

/// A [`RequestBody`] with something to send.
#[derive(Debug)]
struct Streaming {
    queued: std::vec::IntoIter<Chunk>,
    rest: Option<Inbound>,
    /// Everything sent so far, while it fits in the limit; `None` once it does not.
    sent: Option<Vec<Chunk>>,
    sent_bytes: usize,
    report: Option<oneshot::Sender<Leftover>>,
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
        RequestBody(None)
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
        };
        (RequestBody(Some(Box::new(body))), Some(rx))
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

    fn finish(&mut self, sent_whole: bool) {
        let Some(report) = self.report.take() else {
            return;
        };
        let replay = self.sent.take().map(|mut chunks| {
            chunks.extend(self.queued.by_ref());
            Replay {
                chunks,
                rest: self.rest.take(),
            }
        });
        // Nobody listening means the proxy already has its answer.
        report.send(Leftover { sent_whole, replay }).ok();
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.finish(false);
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
            Some(streaming) => Pin::new(&mut **streaming).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|streaming| streaming.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0.as_ref().map_or_else(
            || SizeHint::with_exact(0),
            |streaming| streaming.size_hint(),
        )
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
                this.finish(true);
            }
            return Poll::Ready(Some(Ok(chunk.into_frame())));
        }
        let Some(rest) = &mut this.rest else {
            this.finish(true);
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = Chunk::of(frame) {
                    this.keep(chunk);
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
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
