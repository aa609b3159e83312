//! A request body read by the connection it came on, on demand: the request (whichever task
//! forwards it) asks for the next frame, and the connection's task, which alone reads the
//! client's stream, reads and decodes just enough to give it one. One frame at a time is the
//! backpressure: nothing more is read from the client than the backend has taken.
//!
//! Both sides usually run in the same task (an HTTP/1 backend is written to by the request's
//! own task), so a wake is the task waking itself; an HTTP/2 backend's connection takes the
//! body from its own task, and the wakes then cross over.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

/// Why a request body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FeedError {
    /// The client closed, or its connection failed, before the body ended.
    #[error("the client's connection ended before the request body did: {0}")]
    Closed(String),
    /// The body's framing was malformed (a bad chunk).
    #[error("{0}")]
    Malformed(String),
}

/// The shared state of one request body.
#[derive(Debug, Default)]
struct State {
    /// The next frame, read and waiting to be taken.
    ready: Option<Frame<Bytes>>,
    /// The request has asked for a frame it has not got yet.
    wanted: bool,
    /// Every frame has been read (the last may still wait in `ready`).
    ended: bool,
    failed: Option<FeedError>,
    /// The request let go of its body: no frame will be asked for again.
    abandoned: bool,
    /// Bytes a `Content-Length` body has not yet read (`None`: chunked).
    left: Option<u64>,
    /// Bytes a chunked body's current chunk has declared and not yet given.
    promised: u64,
    request: Option<Waker>,
    connection: Option<Waker>,
}

/// The connection's side.
#[derive(Debug)]
pub(crate) struct Feed(Arc<Mutex<State>>);

/// The request's side: the body it forwards.
#[derive(Debug)]
pub(crate) struct Fed(Arc<Mutex<State>>);

/// A body fed by its connection, of `length` bytes (`None`: chunked).
pub(crate) fn channel(length: Option<u64>) -> (Feed, Fed) {
    let state = Arc::new(Mutex::new(State {
        left: length,
        ..State::default()
    }));
    (Feed(Arc::clone(&state)), Fed(state))
}

/// What the connection has to do for the body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wants {
    /// Read the next frame.
    Frame,
    /// Nothing until the request asks (the connection's waker is kept to be told).
    Nothing,
    /// Nothing ever again: the body ended, failed, or was let go.
    Over,
}

impl Feed {
    /// What the request wants now; `cx` is woken when that changes.
    pub(crate) fn wants(&self, cx: &mut Context<'_>) -> Wants {
        let mut state = self.0.lock();
        if state.ended || state.failed.is_some() || state.abandoned {
            return Wants::Over;
        }
        if state.wanted && state.ready.is_none() {
            return Wants::Frame;
        }
        if !state
            .connection
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            state.connection = Some(cx.waker().clone());
        }
        Wants::Nothing
    }

    /// Whether the request has let go of its body before it ended.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.0.lock().abandoned
    }

    /// Whether every frame has been read.
    pub(crate) fn is_ended(&self) -> bool {
        self.0.lock().ended
    }

    /// Tells the request that `n` more bytes are declared (the rest of a chunk), so that a body
    /// bound to a limit is refused when a chunk's size passes it, not after its bytes came.
    pub(crate) fn promise(&self, n: u64) {
        let mut state = self.0.lock();
        state.promised = n;
        let request = state.request.take();
        drop(state);
        wake(request);
    }

    /// Gives the request its next data; `last` when the body ends with it. `promised`: what a
    /// chunked body's current chunk still declares after it (see [`Feed::promise`]; 0 for a
    /// `Content-Length` body), told under the same lock.
    pub(crate) fn data(&self, data: Bytes, last: bool, promised: u64) {
        let mut state = self.0.lock();
        if let Some(left) = &mut state.left {
            *left = left.saturating_sub(data.len() as u64);
        }
        state.ended = last;
        state.promised = promised;
        give(state, Frame::data(data));
    }

    /// Ends the body with `trailers`.
    pub(crate) fn trailers(&self, trailers: HeaderMap) {
        let mut state = self.0.lock();
        state.ended = true;
        give(state, Frame::trailers(trailers));
    }

    /// Ends the body (with no more frames).
    pub(crate) fn end(&self) {
        let mut state = self.0.lock();
        state.ended = true;
        wake(state.request.take());
    }

    /// Fails the body.
    pub(crate) fn fail(&self, error: FeedError) {
        let mut state = self.0.lock();
        state.failed = Some(error);
        wake(state.request.take());
    }
}

fn give(mut state: parking_lot::MutexGuard<'_, State>, frame: Frame<Bytes>) {
    state.ready = Some(frame);
    state.wanted = false;
    let request = state.request.take();
    drop(state);
    wake(request);
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Body for Fed {
    type Data = Bytes;
    type Error = FeedError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FeedError>>> {
        let mut state = self.0.lock();
        if let Some(frame) = state.ready.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = state.failed.clone() {
            return Poll::Ready(Some(Err(error)));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        state.wanted = true;
        if !state
            .request
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            state.request = Some(cx.waker().clone());
        }
        let connection = state.connection.take();
        drop(state);
        wake(connection);
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let state = self.0.lock();
        state.ended && state.ready.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.0.lock();
        let ready = state
            .ready
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        match state.left {
            Some(left) => SizeHint::with_exact(left + ready),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready + state.promised);
                hint
            }
        }
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.abandoned = true;
        wake(state.connection.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_are_read_only_when_asked_for() {
        let (feed, mut fed) = channel(Some(5));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(
            feed.wants(&mut cx),
            Wants::Nothing,
            "nothing read before it is asked"
        );
        assert_eq!(fed.size_hint().exact(), Some(5));
        let reader = tokio::spawn(async move {
            let first = fed.frame().await.unwrap().unwrap().into_data().unwrap();
            let second = fed.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(fed.is_end_stream());
            assert!(fed.frame().await.is_none());
            (first, second)
        });
        for (data, last) in [(&b"hel"[..], false), (b"lo", true)] {
            loop {
                match feed.wants(&mut cx) {
                    Wants::Frame => break,
                    _ => tokio::task::yield_now().await,
                }
            }
            feed.data(Bytes::from_static(data), last, 0);
        }
        assert_eq!(
            reader.await.unwrap(),
            (Bytes::from_static(b"hel"), Bytes::from_static(b"lo"))
        );
        assert_eq!(feed.wants(&mut cx), Wants::Over);
    }

    #[test]
    fn a_body_let_go_is_over_and_a_failure_reaches_the_request() {
        let (feed, fed) = channel(None);
        let mut cx = Context::from_waker(Waker::noop());
        drop(fed);
        assert_eq!(feed.wants(&mut cx), Wants::Over);
        assert!(feed.is_abandoned());
        let (feed, mut fed) = channel(None);
        feed.fail(FeedError::Malformed("invalid chunk size".into()));
        let polled = std::pin::Pin::new(&mut fed).poll_frame(&mut cx);
        assert!(matches!(
            polled,
            Poll::Ready(Some(Err(FeedError::Malformed(_))))
        ));
    }
}
