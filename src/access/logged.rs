//! The response body sent to the client, with the request's access log entry riding along: it
//! counts the body bytes sent, and when the body ends (or the client goes away and it is dropped)
//! the entry is finished and queued. With the access log off it is the plain body, and a branch.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::{AccessLog, Entry};
use crate::body::ProxyBody;

/// A response body and, when the access log is on, its request's entry.
#[derive(Debug)]
pub struct Logged {
    body: ProxyBody,
    entry: Option<Box<(Entry, AccessLog)>>,
}

impl Logged {
    /// `body` with nothing to log.
    pub fn plain(body: ProxyBody) -> Logged {
        Logged { body, entry: None }
    }

    /// `body`, whose end finishes `entry` into `log`.
    pub fn new(body: ProxyBody, entry: Entry, log: AccessLog) -> Logged {
        Logged {
            body,
            entry: Some(Box::new((entry, log))),
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(pending) = self.entry.take() {
            let (entry, log) = *pending;
            log.write(entry.line(log.format()));
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(pending)) = (&polled, &mut this.entry)
            && let Some(data) = frame.data_ref()
        {
            pending.0.add_sent(data.len() as u64);
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
