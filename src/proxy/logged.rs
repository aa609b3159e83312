//! The response body sent to the client, with what ends with it: the request's access log entry
//! (it counts the body bytes sent, and when the body ends, or the client goes away and it is
//! dropped, the entry is finished and queued) and the request's place on its connection (which
//! is idle again once no response is in progress). With the access log off the entry is `None`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
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
    active: Option<Active>,
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
        if let Poll::Ready(Some(Err(error))) = &polled {
            this.cut_short(error.as_ref());
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
