//! An HTTP/2 response body whose failure resets its stream a moment late, so that what was
//! relayed before the failure reaches the client first.
//!
//! hyper answers a body's error by resetting the stream, and h2 drops the stream's frames still
//! queued for the connection's writer when it resets: a backend that fails right behind its
//! response head (a body cut short in the same read, a bad chunk) would leave the client a bare
//! `RST_STREAM`, with neither the status nor the bytes the access log counts as sent. The
//! connection's writer is another task, possibly on another worker thread, and nothing tells the
//! body when it has taken the frames; a short grace before the error lets it, as nginx sends
//! `HEADERS`, `DATA`, then `RST_STREAM`. Fulcrum's HTTP/1 server writes in the body's own task
//! and needs none.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// How long a failed body waits before its error reaches hyper: far more than a writer's turn
/// takes, and nothing to a client whose response is broken anyway.
const GRACE: Duration = Duration::from_millis(20);

pin_project_lite::pin_project! {
    /// `B`, its error held back for [`GRACE`].
    pub(super) struct LateReset<B: Body> {
        #[pin]
        body: B,
        failed: Option<Failed<B::Error>>,
    }
}

/// An error waiting for its grace to pass.
struct Failed<E> {
    error: Option<E>,
    grace: Pin<Box<Sleep>>,
}

impl<B: Body> LateReset<B> {
    pub(super) fn new(body: B) -> LateReset<B> {
        LateReset { body, failed: None }
    }
}

impl<B: Body> Body for LateReset<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if this.failed.is_none() {
            match ready!(this.body.poll_frame(cx)) {
                Some(Err(error)) => {
                    *this.failed = Some(Failed {
                        error: Some(error),
                        grace: Box::pin(tokio::time::sleep(GRACE)),
                    });
                }
                other => return Poll::Ready(other),
            }
        }
        let failed = this.failed.as_mut().expect("set above");
        ready!(failed.grace.as_mut().poll(cx));
        Poll::Ready(failed.error.take().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
