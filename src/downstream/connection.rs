//! One client connection: the TLS handshake when it is a TLS listener's, then the protocol it
//! speaks: HTTP/1 (Fulcrum's own server, `h1/`), or HTTP/2 (hyper's server, with the socket
//! watched for the timers hyper does not keep: `proxy/guard.rs`), served until it ends or the
//! drain closes it. A TLS client chooses HTTP/2 by ALPN; a plain one by starting with HTTP/2's
//! preface (prior knowledge), which `h1/` notices and hands over.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::admission::Admitted;
use super::stats::OpenConnection;
use super::stream::Stream;
use super::{Shared, h1};
use crate::arena;
use crate::body::ClientBody;
use crate::clock::{Fresh, FreshExecutor};
use crate::config::{self, Limits};
use crate::proxy::guard::{self, Watched};
use crate::proxy::{self, Peer};
use tower_service::Service;

/// HTTP/2 streams a client may have open at once (nginx: 128, Envoy: 100 for new configs).
const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before hyper accepts them (h2's default; CVE-2023-44487).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the proxy may reset for a client's protocol errors before the connection is closed
/// (h2's default; floods of resets provoked with malformed frames).
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// Held while a client connection is open: it counts against its listener and the admission
/// limits.
pub(super) type Open = (OpenConnection, Admitted);

/// An accepted client connection and what it is served with.
pub(super) struct Connection<S> {
    pub(super) stream: S,
    pub(super) peer: SocketAddr,
    pub(super) limits: Limits,
    pub(super) timeouts: config::Timeouts,
    /// Held until the connection ends.
    pub(super) open: Open,
    /// It came over TLS.
    pub(super) tls: bool,
}

impl<S> Connection<S> {
    /// Its stream, and the rest of it.
    fn split(self) -> (S, Connection<()>) {
        let rest = Connection {
            stream: (),
            peer: self.peer,
            limits: self.limits,
            timeouts: self.timeouts,
            open: self.open,
            tls: self.tls,
        };
        (self.stream, rest)
    }
}

impl Connection<TcpStream> {
    /// The connection as a plain stream.
    pub(super) fn on_plain(self) -> Connection<Stream> {
        let (tcp, rest) = self.split();
        rest.on(Stream::Plain(tcp))
    }
}

impl Connection<()> {
    /// The connection on `stream`.
    fn on<T>(self, stream: T) -> Connection<T> {
        Connection {
            stream,
            peer: self.peer,
            limits: self.limits,
            timeouts: self.timeouts,
            open: self.open,
            tls: self.tls,
        }
    }
}

/// Completes a TLS handshake, within `request_header`, then serves the connection in the
/// protocol its client chose.
pub(super) async fn handshake(shared: Arc<Shared>, accepted: Connection<TcpStream>) {
    let Some(config) = shared.tls.load_full() else {
        warn!(peer = %accepted.peer, "TLS connection without TLS settings: closed");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let peer = accepted.peer;
    let limit = accepted.timeouts.request_header;
    let (tcp, accepted) = accepted.split();
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if http2 {
                serve_h2(&shared, accepted.on(stream));
            } else {
                h1::serve(&shared, accepted.on(Stream::Tls(Box::new(stream))));
            }
        }
        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

/// hyper's HTTP/2 settings for a client connection, with `limits` set explicitly so that a
/// dependency update cannot change them silently.
fn h2_builder(limits: &Limits) -> hyper::server::conn::http2::Builder<FreshExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(FreshExecutor);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(limits.max_header_bytes as u32)
        // Rapid-reset (CVE-2023-44487) and reset-flood caps, at h2's current defaults.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
    builder
}

/// Serves an HTTP/2 connection with hyper, each stream a request to the proxy.
pub(super) fn serve_h2<S>(shared: &Shared, accepted: Connection<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        stream,
        peer,
        limits,
        timeouts,
        open,
        tls,
    } = accepted;
    let stream = Watched::new(
        stream,
        guard::Timeouts {
            client_idle: timeouts.client_idle,
            request_header: timeouts.request_header,
        },
    );
    let watch = Arc::clone(stream.watch());
    let idle = Arc::clone(&watch);
    let proxy = shared.proxy.clone();
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let mut request = request.map(ClientBody::H2);
        let extensions = request.extensions_mut();
        extensions.insert(Peer { addr: peer, tls });
        extensions.insert(proxy::Watched(Arc::clone(&watch)));
        Owning {
            answering: proxy.clone().call(request),
        }
    });
    let connection = h2_builder(&limits).serve_connection(TokioIo::new(stream), service);
    let watched = {
        let graceful = shared.graceful.lock();
        match graceful.as_ref() {
            Some(drain) => drain.serve(connection, idle, |connection| {
                connection.graceful_shutdown()
            }),
            // Shutting down: the connection is dropped, i.e. closed.
            None => return,
        }
    };
    tokio::spawn(Fresh::new(async move {
        let _open = open;
        if let Err(error) = watched.await {
            debug!(%peer, %error, "connection ended with an error");
        }
    }));
}

pin_project_lite::pin_project! {
    /// The proxy's answer to an HTTP/2 stream, with its header values owned ([`arena::own_all`])
    /// when it comes: HTTP/2's header compression keeps values for the connection's life. A named
    /// future, where an `async` block would have to be boxed (hyper's service future must be
    /// `Send` for every lifetime it is polled with): one allocation less per stream.
    struct Owning<F> {
        #[pin]
        answering: F,
    }
}

impl<F, B> Future for Owning<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Ok(mut response) = ready!(self.project().answering.poll(cx));
        arena::own_all(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}
