//! Message bodies on their way through the proxy, streamed frame by frame, never buffered whole.
//!
//! - [`ProxyBody`], a response body: the backend's, carrying the backend's in-flight guard (so the
//!   request counts as in flight until its body is done or dropped), or a short one the proxy
//!   wrote itself. An enum rather than a boxed body: no allocation per response.
//! - [`RequestBody`], a client's body on its way to a backend, which says when it is all sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use crate::upstream::InFlight;

/// A response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// Relayed from a backend.
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
    },
    /// Written by the proxy.
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}

/// A request body on its way to a backend, which reports when its last byte has been handed to
/// the connection: the response timeout runs from then, so a large upload is not cut short by a
/// timer meant for a backend that has stopped answering.
#[derive(Debug)]
pub struct RequestBody {
    body: Incoming,
    sent: Option<oneshot::Sender<()>>,
}

impl RequestBody {
    /// Wraps `body`; the receiver resolves once it is fully sent (or dropped unsent). `None`
    /// when there is no body to wait for.
    pub fn track(body: Incoming) -> (RequestBody, Option<oneshot::Receiver<()>>) {
        if body.is_end_stream() {
            return (RequestBody { body, sent: None }, None);
        }
        let (tx, rx) = oneshot::channel();
        (
            RequestBody {
                body,
                sent: Some(tx),
            },
            Some(rx),
        )
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let finished = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if finished && let Some(sent) = this.sent.take() {
            // The receiver may be gone if the response already arrived; nothing waits then.
            sent.send(()).ok();
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
