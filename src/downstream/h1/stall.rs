//! A response written to a client that stops reading gives up after a while, as nginx's
//! `send_timeout` does: the write fails once it has made no progress for `client_idle`
//! ([`WriteWait`], which hyper's connections get from `proxy/guard.rs`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::pause::WriteWait;

/// The client's stream, for one response.
pub(super) struct Stall<'a> {
    stream: &'a mut TcpStream,
    writes: WriteWait,
}

impl<'a> Stall<'a> {
    pub(super) fn new(stream: &'a mut TcpStream, limit: Duration) -> Stall<'a> {
        Stall {
            stream,
            writes: WriteWait::new(limit),
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
        let polled = Pin::new(&mut *this.stream).poll_write(cx, buf);
        this.writes.count(polled, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}
