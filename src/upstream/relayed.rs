//! A backend's response body on its way to the client: read by the request's own task from an
//! HTTP/1.1 connection, or by hyper's HTTP/2 connection ([`UpstreamBody`]), and carrying the
//! backend's in-flight guard, so the request counts as in flight until its body is done or
//! dropped ([`Relayed`]). The proxy sends it to the client inside its own response body
//! (`proxy/body.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::InFlight;
use super::h1::ResponseBody;
use crate::body::{BoxError, strip_trailer_fields};
use crate::pause::Pause;

/// A backend's response body, with what must happen when it ends: the request stops counting as
/// in flight, and an HTTP/1.1 connection it came on goes back to its backend's idle stack, but
/// only if the body was read to its end (a connection with unread bytes cannot carry another
/// exchange).
/// A backend that pauses mid-body for longer than `timeouts.response_body_idle` is given up on,
/// as nginx's `proxy_read_timeout` and HAProxy's `timeout server` do: the body ends in an error,
/// so the client's connection (HTTP/2: stream) is cut rather than left waiting forever.
#[derive(Debug)]
pub(crate) struct Relayed {
    body: UpstreamBody,
    in_flight: InFlight,
    /// The backend's pause between two frames, against the longest allowed.
    pause: Pause,
}

/// A backend's response body: from an HTTP/1.1 connection (which it holds), or an HTTP/2 one.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    H1(ResponseBody),
    H2(Incoming),
}

impl Relayed {
    pub(crate) fn new(body: UpstreamBody, in_flight: InFlight, idle: Duration) -> Relayed {
        Relayed {
            body,
            in_flight,
            pause: Pause::new(idle),
        }
    }

    /// The next frame, or an error once the backend has paused longer than `idle`.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.pause.progressed();
            if let Poll::Ready(Some(Ok(frame))) = &mut polled
                && let Some(trailers) = frame.trailers_mut()
            {
                strip_trailer_fields(trailers);
            }
            if let Poll::Ready(Some(Err(error))) = polled {
                return Poll::Ready(Some(Err(self.cut_short(error.as_ref()))));
            }
            return polled;
        }
        if !self.pause.over(cx) {
            return Poll::Pending;
        }
        let idle = self.pause.limit();
        let error: BoxError = format!("the backend sent nothing of the body for {idle:?}").into();
        Poll::Ready(Some(Err(self.cut_short(error.as_ref()))))
    }

    /// `error`, which ended the body, naming the backend: the response's status and head went
    /// to the client already, so the line that says so (`proxy/logged.rs`, with the request's
    /// id and what the client got) is where a truncated response shows, as nginx's "upstream
    /// prematurely closed connection".
    fn cut_short(&self, error: &(dyn std::error::Error + 'static)) -> BoxError {
        format!("backend {}: {error}", self.in_flight.backend().address()).into()
    }

    fn recycle(&mut self) {
        if let UpstreamBody::H1(body) = &mut self.body
            && let Some(connection) = body.reusable()
        {
            self.in_flight.backend().connections().put(connection);
        }
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.poll_body(cx);
        if matches!(polled, Poll::Ready(None)) || this.body.is_end_stream() {
            this.recycle();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
            UpstreamBody::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(body) => body.is_end_stream(),
            UpstreamBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(body) => body.size_hint(),
            UpstreamBody::H2(body) => body.size_hint(),
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
