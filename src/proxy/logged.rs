//! The response body sent to the client, with what ends with it: the request's access log entry
//! (it counts the body bytes sent, and when the body ends, or the client goes away and it is
//! dropped, the entry is finished and queued) and the request's place on its connection (which
//! is idle again once no response is in progress). With the access log off the entry is `None`.
//!
//! On an HTTP/2 connection a body's failure reaches the server a moment late ([`GRACE`]). hyper
//! answers a body's error by resetting the stream, and h2 drops the stream's frames still
//! queued for the connection's writer when it resets: a backend that fails right behind its
//! response head (a body cut short in the same read, a bad chunk) would leave the client a bare
//! `RST_STREAM`, with neither the status nor the bytes the access log counts as sent. The
//! writer is another task, possibly on another worker thread, and nothing tells the body when
//! it has taken the frames; the grace lets it, as nginx sends `HEADERS`, `DATA`, then
//! `RST_STREAM`. Fulcrum's HTTP/1 server writes in the body's own task and needs none.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tracing::warn;

use super::ProxyBody;
use super::guard::Active;
use crate::body::BoxError;
use crate::telemetry::access::{AccessLog, Entry};

/// A response body, its request's access log entry (when the access log is on), and the
/// request's activity on its connection.
#[derive(Debug)]
pub struct Logged {
    body: ProxyBody,
    entry: Option<(Box<Entry>, AccessLog)>,
    /// Present on an HTTP/2 connection.
    active: Option<Active>,
    /// A failure held back for its grace (HTTP/2). Boxed: only a failure needs it.
    held: Option<Pin<Box<Held>>>,
}

/// How long an HTTP/2 body's failure is held back: far more than a writer's turn takes, and
/// nothing to a client whose response is broken anyway.
const GRACE: Duration = Duration::from_millis(20);

pin_project_lite::pin_project! {
    /// An error waiting for its grace to pass.
    #[derive(Debug)]
    struct Held {
        error: Option<BoxError>,
        #[pin]
        grace: Sleep,
    }
}

impl Logged {
    /// `body`, whose end finishes `entry` into its log, and ends `active`.
    pub(crate) fn new(
        body: ProxyBody,
        entry: Option<(Box<Entry>, AccessLog)>,
        active: Option<Active>,
    ) -> Logged {
        Logged {
            body,
            entry,
            active,
            held: None,
        }
    }
}

impl Logged {
    /// Says that the body ended in `error` after the response's status and head went out (and
    /// to the access log, as they were): this line is where a truncated response shows, with
    /// the request's id and the body bytes the client got, which join it to the access log's.
    fn cut_short(&self, error: &(dyn std::error::Error + 'static)) {
        let (request_id, sent) = match &self.entry {
            Some((entry, _)) => (
                entry.request_id().to_str().unwrap_or(""),
                Some(entry.sent()),
            ),
            None => ("", None),
        };
        warn!(
            request_id,
            sent,
            %error,
            "response body from the backend cut short: the client's response is incomplete"
        );
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some((entry, log)) = self.entry.take() {
            log.write(entry.line(log.format()));
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(held) = &mut this.held {
            let held = held.as_mut().project();
            ready!(held.grace.poll(cx));
            return Poll::Ready(held.error.take().map(Err));
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let data = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.data_ref().map(|data| data.len() as u64),
            _ => None,
        };
        if let (Some(sent), Some(pending)) = (data, &mut this.entry) {
            pending.0.add_sent(sent);
        }
        if let Some(active) = &mut this.active {
            active.polled(data.is_some());
        }
        let Poll::Ready(Some(Err(error))) = polled else {
            return polled;
        };
        this.cut_short(error.as_ref());
        if this.active.is_none() {
            return Poll::Ready(Some(Err(error)));
        }
        this.held = Some(Box::pin(Held {
            error: Some(error),
            grace: tokio::time::sleep(GRACE),
        }));
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
