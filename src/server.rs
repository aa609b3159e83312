//! Listeners and connections: accept, serve HTTP/1.1 and HTTP/2 (prior knowledge) with hyper-util's
//! `auto::Builder`, and drain on shutdown.
//!
//! The server takes listeners that are already bound, so tests and the binary alike can bind
//! port 0 and learn the real address. It knows nothing of routing: each request goes to
//! [`Proxy::handle`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::proxy::Proxy;
use crate::state::SharedState;

/// How long to wait after an accept error (such as running out of file descriptors) before
/// accepting again, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Bound listeners and the proxy they serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    proxy: Proxy,
    grace: Duration,
}

impl Server {
    /// Binds every address; fails on the first that cannot be bound.
    pub async fn bind(addresses: &[SocketAddr], state: SharedState) -> io::Result<Server> {
        let mut listeners = Vec::with_capacity(addresses.len());
        for address in addresses {
            let listener = TcpListener::bind(address).await.map_err(|err| {
                io::Error::new(err.kind(), format!("cannot listen on {address}: {err}"))
            })?;
            listeners.push(listener);
        }
        Ok(Server {
            listeners,
            proxy: Proxy::new(state),
            grace: Duration::from_secs(30),
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// How long in-flight requests may take to finish once shutdown starts.
    pub fn with_grace(mut self, grace: Duration) -> Server {
        self.grace = grace;
        self
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets open connections finish
    /// their requests, for at most the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = Arc::new(GracefulShutdown::new());
        let mut accept_loops = JoinSet::new();
        for listener in self.listeners {
            if let Ok(address) = listener.local_addr() {
                info!(%address, "listening");
            }
            accept_loops.spawn(accept_loop(
                listener,
                self.proxy.clone(),
                Arc::clone(&graceful),
            ));
        }
        shutdown.await;
        // Aborting the accept loops closes the listeners and drops their handles on `graceful`.
        accept_loops.shutdown().await;
        let graceful =
            Arc::into_inner(graceful).expect("every accept loop, the only other owner, has ended");
        info!(
            open = graceful.count(),
            "shutting down: draining connections"
        );
        if tokio::time::timeout(self.grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!(grace = ?self.grace, "grace period over: closing the remaining connections");
        }
    }
}

async fn accept_loop(listener: TcpListener, proxy: Proxy, graceful: Arc<GracefulShutdown>) {
    let builder = connection_builder();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        serve_connection(&builder, stream, peer, proxy.clone(), &graceful);
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Proxy,
    graceful: &GracefulShutdown,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request, peer).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%peer, %error, "connection ended with an error");
        }
    });
}
