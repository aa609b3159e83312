//! A client connection's byte stream: plain TCP, or TLS over it (rustls's server side).

use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection.
pub(crate) type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

impl Stream {
    /// Readiness of the socket below, `cx` woken when it becomes readable. A TLS stream that
    /// last read `Pending` holds no plaintext, so the socket says when there is more.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }
}
