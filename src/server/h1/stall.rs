//! A response written to a client that stops reading gives up after a while, as nginx's
//! `send_timeout` does: the write fails once it has made no progress for `client_idle`.
//!
//! The timer is made only when a write has to wait, so a response that goes out at once, as
//! almost all do, costs none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The client's stream, for one response.
pub(super) struct Stall<'a> {
    stream: &'a mut TcpStream,
    limit: Duration,
    /// Since the last progress, while a write waits.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<'a> Stall<'a> {
    pub(super) fn new(stream: &'a mut TcpStream, limit: Duration) -> Stall<'a> {
        Stall {
            stream,
            limit,
            timer: None,
        }
    }

    /// `Pending` until the limit passes without progress, then an error.
    fn waited(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response for client_idle",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed(&mut self) {
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(Instant::now() + self.limit);
        }
    }
}

impl AsyncWrite for Stall<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut *this.stream).poll_write(cx, buf) {
            Poll::Ready(written) => {
                this.progressed();
                Poll::Ready(written)
            }
            Poll::Pending => this.waited(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}
