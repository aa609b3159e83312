//! Listeners and connections: accept, serve HTTP/1.1 and HTTP/2 (prior knowledge) with hyper-util's
//! `auto::Builder`, change listeners on reload, and drain on shutdown.
//!
//! The server binds its listeners itself (so port 0 works and the real address can be asked) and
//! starts accepting at once. It knows nothing of routing: each request goes to [`Proxy::handle`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Admitted};
use crate::config::{self, Limits};
use crate::guard::{self, Watched};
use crate::proxy::Proxy;
use crate::state::SharedState;

/// How long to wait after an accept error (such as running out of file descriptors) before
/// accepting again, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

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

/// The proxy's listeners and open connections; cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    proxy: Proxy,
    admission: Arc<Admission>,
    /// `None` once shutdown has started.
    graceful: Mutex<Option<GracefulShutdown>>,
    listeners: tokio::sync::Mutex<Vec<Listening>>,
}

/// One listener: the address as configured, as bound, its accept loop and its counts.
struct Listening {
    configured: SocketAddr,
    local: SocketAddr,
    task: JoinHandle<()>,
    stats: Arc<ListenerStats>,
}

/// A listener's client connections: open now, and accepted in all.
#[derive(Debug)]
pub struct ListenerStats {
    address: String,
    open: AtomicI64,
    accepted: crate::metrics::Counter,
    /// Connections closed at once because a connection limit was reached.
    rejected: crate::metrics::Counter,
}

impl ListenerStats {
    fn new(address: SocketAddr) -> ListenerStats {
        ListenerStats {
            address: address.to_string(),
            open: AtomicI64::new(0),
            accepted: Default::default(),
            rejected: Default::default(),
        }
    }

    /// The bound address, the `listener` label.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.get()
    }

    /// Counts a connection as open until the guard drops.
    fn opened(self: &Arc<Self>) -> OpenConnection {
        self.accepted.inc();
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }
}

/// One open client connection of a listener.
struct OpenConnection(Arc<ListenerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    /// Binds every address and starts accepting; fails, binding nothing, if any cannot be bound.
    pub async fn bind(addresses: &[SocketAddr], state: SharedState) -> io::Result<Server> {
        let server = Server {
            shared: Arc::new(Shared {
                proxy: Proxy::new(state),
                admission: Arc::default(),
                graceful: Mutex::new(Some(GracefulShutdown::new())),
                listeners: tokio::sync::Mutex::new(Vec::new()),
            }),
        };
        server.listen_on(addresses).await?;
        Ok(server)
    }

    /// The addresses actually bound (port 0 resolved).
    pub async fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .listeners
            .lock()
            .await
            .iter()
            .map(|l| l.local)
            .collect()
    }

    /// Every listener's connection counts.
    pub async fn listener_stats(&self) -> Vec<Arc<ListenerStats>> {
        self.shared
            .listeners
            .lock()
            .await
            .iter()
            .map(|l| Arc::clone(&l.stats))
            .collect()
    }

    /// Makes the listeners match `addresses`: new ones are bound first, and only if all of them
    /// bind are the ones no longer wanted closed. On error nothing changes.
    pub async fn listen_on(&self, addresses: &[SocketAddr]) -> io::Result<()> {
        let mut listening = self.shared.listeners.lock().await;
        let mut fresh = Vec::new();
        for &address in addresses {
            if listening.iter().any(|l| l.configured == address) {
                continue;
            }
            let listener = TcpListener::bind(address).await.map_err(|err| {
                io::Error::new(err.kind(), format!("cannot listen on {address}: {err}"))
            })?;
            fresh.push((address, listener));
        }
        for (configured, listener) in fresh {
            let local = listener.local_addr()?;
            info!(address = %local, "listening");
            let stats = Arc::new(ListenerStats::new(local));
            let task = tokio::spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
                Arc::clone(&stats),
            ));
            listening.push(Listening {
                configured,
                local,
                task,
                stats,
            });
        }
        listening.retain(|l| {
            let keep = addresses.contains(&l.configured);
            if !keep {
                info!(address = %l.local, "no longer listening");
                l.task.abort();
            }
            keep
        });
        Ok(())
    }

    /// Stops accepting at once and lets open connections finish their requests (idle
    /// keep-alive connections close at once), for at most `grace`.
    pub async fn drain(&self, grace: Duration) {
        for listening in self.shared.listeners.lock().await.drain(..) {
            listening.task.abort();
        }
        let graceful = self
            .shared
            .graceful
            .lock()
            .expect("the graceful lock is never held across a panic")
            .take();
        let Some(graceful) = graceful else {
            return;
        };
        info!(
            open = graceful.count(),
            "shutting down: draining connections"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "grace period over: closing the remaining connections"
            );
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stats: Arc<ListenerStats>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let (limits, timeouts) = shared.proxy.settings();
        let admitted = match shared.admission.admit(peer.ip(), &limits) {
            Ok(admitted) => admitted,
            Err(refused) => {
                stats.rejected.inc();
                debug!(%peer, limit = refused.name(), "connection refused: limit reached");
                continue; // dropping the stream closes it
            }
        };
        let connection = Connection {
            stream,
            peer,
            limits,
            timeouts,
            open: (stats.opened(), admitted),
        };
        serve_connection(&shared, connection);
    }
}

/// An accepted client connection and what it is served with.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    timeouts: config::Timeouts,
    /// Held until the connection ends.
    open: (OpenConnection, Admitted),
}

/// hyper's settings for a client connection, with `limits` set explicitly so that a dependency
/// update cannot change them silently.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        // `guard.rs` does the header and idle timeouts: hyper's would also cut idle keep-alive.
        .header_read_timeout(None)
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

fn serve_connection(shared: &Shared, accepted: Connection) {
    let Connection {
        stream,
        peer,
        limits,
        timeouts,
        open,
    } = accepted;
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let stream = Watched::new(
        stream,
        guard::Timeouts {
            client_idle: timeouts.client_idle,
            request_header: timeouts.request_header,
            max_head: limits.max_header_bytes,
        },
    );
    let watch = Arc::clone(stream.watch());
    let proxy = shared.proxy.clone();
    let service = service_fn(move |request| {
        let (proxy, watch) = (proxy.clone(), Arc::clone(&watch));
        async move { Ok::<_, Infallible>(proxy.handle(request, peer, &watch).await) }
    });
    let connection = connection_builder(&limits)
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let watched = {
        let graceful = shared
            .graceful
            .lock()
            .expect("the graceful lock is never held across a panic");
        match graceful.as_ref() {
            Some(graceful) => graceful.watch(connection),
            // Shutting down: the connection is dropped, i.e. closed.
            None => return,
        }
    };
    tokio::spawn(async move {
        let _open = open;
        if let Err(error) = watched.await {
            debug!(%peer, %error, "connection ended with an error");
        }
    });
}
