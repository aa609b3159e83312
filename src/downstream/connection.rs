//! One client connection: the TLS handshake when it is a TLS listener's, the watched socket,
//! hyper's settings, and serving it until it ends or the drain closes it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Version;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Shared;
use super::admission::Admitted;
use super::stats::OpenConnection;
use crate::arena;
use crate::body::ClientBody;
use crate::config::{self, Limits};
use crate::proxy::guard::{self, Watched, WriteNow};

/// hyper's smallest read buffer.
const MIN_BUF_SIZE: usize = 8192;
/// hyper's default header count: setting it explicitly costs an allocation per request.
const DEFAULT_MAX_HEADERS: usize = 100;
/// HTTP/2 streams a client may have open at once (nginx: 128, Envoy: 100 for new configs).
const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before hyper accepts them (h2's default; CVE-2023-44487).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the proxy may reset for a client's protocol errors before the connection is closed
/// (h2's default; floods of resets provoked with malformed frames).
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// Completes a TLS handshake, within `request_header`, then serves the connection.
pub(super) async fn handshake(shared: Arc<Shared>, accepted: Connection<TcpStream>) {
    let Some(config) = shared.tls.load_full() else {
        warn!(peer = %accepted.peer, "TLS connection without TLS settings: closed");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let peer = accepted.peer;
    let limit = accepted.timeouts.request_header;
    match tokio::time::timeout(limit, acceptor.accept(accepted.stream)).await {
        Ok(Ok(stream)) => serve_connection(
            &shared,
            Connection {
                stream,
                peer,
                limits: accepted.limits,
                timeouts: accepted.timeouts,
                open: accepted.open,
                tls: true,
            },
        ),
        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

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

/// hyper's settings for a client connection, with `limits` set explicitly so that a dependency
/// update cannot change them silently.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        // `proxy/guard.rs` does the header and idle timeouts: hyper's would also cut idle
        // keep-alive.
        .header_read_timeout(None)
        // One buffer, one write(2), per response: bodies are small, and copying them beats
        // the kernel's cost of gathering a vector.
        .writev(false)
        // A head beyond the read buffer is answered 431.
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE));
    if limits.max_headers != DEFAULT_MAX_HEADERS {
        // Only when changed: a custom count makes hyper allocate the header array per request.
        http1.max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(limits.max_header_bytes as u32)
        // Rapid-reset (CVE-2023-44487) and reset-flood caps, at h2's current defaults.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
    builder
}

pub(super) fn serve_connection<S>(shared: &Shared, accepted: Connection<S>)
where
    S: AsyncRead + AsyncWrite + WriteNow + Unpin + Send + 'static,
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
            // Twice hyper's read buffer: a read may fill the buffer's spare capacity past it.
            max_head: 2 * limits.max_header_bytes.max(MIN_BUF_SIZE),
            max_uri_bytes: limits.max_uri_bytes,
        },
    );
    let watch = Arc::clone(stream.watch());
    let idle = Arc::clone(&watch);
    let refusals = (shared.proxy.clone(), Arc::clone(&watch));
    let proxy = shared.proxy.clone();
    let service = service_fn(move |request| {
        let (proxy, watch) = (proxy.clone(), Arc::clone(&watch));
        // Boxed: the request's future is large, and hyper moves it about; a box moves as a pointer.
        let request = request.map(ClientBody::Hyper);
        let http2 = request.version() == Version::HTTP_2;
        Box::pin(async move {
            let mut response = proxy.handle(request, peer, tls, Some(&watch)).await;
            if http2 {
                // HTTP/2's header compression keeps values for the connection's life.
                arena::own_all(response.headers_mut());
            }
            Ok::<_, Infallible>(response)
        })
    });
    let connection = connection_builder(&limits)
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let watched = {
        let graceful = shared
            .graceful
            .lock()
            .expect("the graceful lock is never held across a panic");
        match graceful.as_ref() {
            Some(drain) => drain.serve(connection, idle, |connection| {
                connection.graceful_shutdown()
            }),
            // Shutting down: the connection is dropped, i.e. closed.
            None => return,
        }
    };
    tokio::spawn(async move {
        let _open = open;
        let ended = watched.await;
        let (proxy, watch) = refusals;
        if let Some(status) = watch.refused() {
            let took = if status == 408 {
                timeouts.request_header
            } else {
                Duration::ZERO
            };
            proxy.refused(peer, status, took);
        } else if let Err(error) = &ended
            && let Some(status) = answered_by_hyper(error.as_ref())
        {
            proxy.refused(peer, status, Duration::ZERO);
        }
        if let Err(error) = ended {
            debug!(%peer, %error, "connection ended with an error");
        }
    });
}

/// The status hyper answered a connection's error with by itself: a request head it could not
/// parse (400), or one past its limits (414 for the target, else 431). `None` for an error it
/// answers nothing to (the client went away, a protocol error in HTTP/2).
fn answered_by_hyper(error: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let error = crate::upstream::innermost::<hyper::Error>(error)?;
    if error.is_parse_too_large() {
        // hyper says which only in its message.
        return Some(if error.to_string().contains("URI too long") {
            414
        } else {
            431
        });
    }
    // hyper answers a bad method, target, version or header; not its own internal error.
    let refused = error.is_parse()
        && !error.is_parse_status()
        && !error.is_parse_version_h2()
        && !error.to_string().starts_with("internal error");
    refused.then_some(400)
}
