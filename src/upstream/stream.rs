//! A backend connection's byte stream: plain TCP, or TLS over it (rustls's client side).

use std::task::{Context, Waker};

use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to a backend.
pub(crate) type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

impl Stream {
    /// Whether the backend has sent nothing and not closed since the last read: a connection
    /// that sat idle can carry another exchange only then. Costs no system call unless the
    /// socket became readable (a close, stray bytes), and then a peek, which leaves TLS records
    /// where they are.
    pub(crate) fn is_quiet(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        self.tcp().poll_peek(&mut cx, &mut probe).is_pending()
    }
}
