//! A client's connection after a `101 Switching Protocols`: Fulcrum's HTTP/1 server promises it
//! to an upgrade request (an extension, [`OnUpgrade`]) and delivers it once the `101` is written;
//! the proxy's tunnel takes it, with what the client sent after its request's head. It crosses
//! from the server to the proxy as a request body does, so it is defined here, below both.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::stream::Prefixed;

/// A connection's byte stream, whatever is below it (TCP, TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The client's connection, switched: its stream, what had been read from it past the request's
/// head put back in front, and what it held that must live as long as it does (its place among
/// open connections).
pub struct Upgraded {
    io: Prefixed<Box<dyn Io>>,
    /// Kept, never read: it ends with the connection.
    _held: Box<dyn Send>,
}

impl Upgraded {
    pub fn new(read: Bytes, io: impl Io, held: impl Send + 'static) -> Upgraded {
        Upgraded {
            io: Prefixed::new(read, Box::new(io)),
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded").finish_non_exhaustive()
    }
}

/// An upgrade request's promise of its connection.
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The server's side of the promise: kept until the `101` is written.
pub type Promise = oneshot::Sender<Upgraded>;

impl OnUpgrade {
    /// A promise, and the extension that waits on it.
    pub fn pair() -> (Promise, OnUpgrade) {
        let (promise, receiver) = oneshot::channel();
        (promise, OnUpgrade(Arc::new(Mutex::new(Some(receiver)))))
    }

    /// The connection, once switched; `None` if it never is (the promise was dropped).
    pub async fn wait(self) -> Option<Upgraded> {
        let receiver = self.0.lock().take()?;
        receiver.await.ok()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
