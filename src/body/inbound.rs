//! The client's request body as the proxy reads it: counted for the access log, held to
//! `max_body` (413), timed out when it stops sending (`request_body_idle`, 408), and with its
//! trailers screened so they cannot carry framing or routing fields to a backend.
//!
//! An error here fails the upstream request mid-body: the backend never receives a complete
//! request, and the attempt ends as a client fault (never retried).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{ClientBody, strip_trailer_fields};
use crate::clock;

/// Why a request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's connection failed or its body was malformed (bad chunk, cut short).
    #[error("{0}")]
    Client(super::BoxError),
    /// More than `max_body` bytes.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// No data for `request_body_idle`.
    #[error("no request body data for {0:?}")]
    Idle(Duration),
}

/// What a body must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRules {
    pub max_body: u64,
    pub idle: Duration,
}

/// A client's request body being read.
#[derive(Debug)]
pub struct Inbound {
    body: ClientBody,
    rules: BodyRules,
    read: u64,
    last_data: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// Where to count bytes read, for the access log.
    received: Option<Arc<AtomicU64>>,
}

impl Inbound {
    pub fn new(body: ClientBody, rules: BodyRules, received: Option<Arc<AtomicU64>>) -> Inbound {
        Inbound {
            body,
            rules,
            read: 0,
            last_data: clock::now(),
            timer: None,
            received,
        }
    }

    /// Whether what was read, and what the body has declared is still to come (the rest of a
    /// chunk), passes `max_body`.
    fn declared_too_much(&self) -> bool {
        self.read.saturating_add(self.body.size_hint().lower()) > self.rules.max_body
    }

    /// Whether the client has gone quiet for longer than allowed; arms the timer otherwise.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last_data + self.rules.idle;
        if Instant::now() >= deadline {
            return true;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Armed for an earlier deadline, it fires early and is moved once then: not on every
        // frame of a long upload.
        if timer.is_elapsed() {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        false
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.declared_too_much() {
                        let limit = this.rules.max_body;
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
                    }
                    if let Some(received) = &this.received {
                        received.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    this.last_data = Instant::now();
                } else if let Some(trailers) = frame.trailers_mut() {
                    strip_trailer_fields(trailers);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(BodyError::Client(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            // A chunk whose size alone passes the limit, before its bytes come (as nginx).
            Poll::Pending if this.declared_too_much() => {
                let limit = this.rules.max_body;
                Poll::Ready(Some(Err(BodyError::TooLarge { limit })))
            }
            Poll::Pending if this.idle_too_long(cx) => {
                Poll::Ready(Some(Err(BodyError::Idle(this.rules.idle))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
