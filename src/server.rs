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

use arc_swap::ArcSwapOption;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Admitted};
use crate::config::{self, Limits};
use crate::guard::{self, Watched, WriteNow};
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
    /// The TLS settings for new handshakes.
    tls: ArcSwapOption<rustls::ServerConfig>,
}

/// One listener: the address as configured (and whether it is TLS), as bound, its accept loop
/// and its counts.
struct Listening {
    configured: (SocketAddr, bool),
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

/// The addresses to accept on: plain HTTP, and TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl Listeners {
    /// The listeners `config` asks for.
    pub fn of(config: &config::Config) -> Listeners {
        Listeners {
            plain: config.server.listen.clone(),
            tls: config
                .tls
                .as_ref()
                .map(|tls| tls.listen.clone())
                .unwrap_or_default(),
        }
    }

    fn each(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        let plain = self.plain.iter().map(|&a| (a, false));
        plain.chain(self.tls.iter().map(|&a| (a, true)))
    }
}

impl Server {
    /// Binds every address and starts accepting; fails, binding nothing, if any cannot be bound.
    /// TLS listeners need [`Server::set_tls`] before they can complete a handshake.
    pub async fn bind(listeners: &Listeners, state: SharedState) -> io::Result<Server> {
        let server = Server {
            shared: Arc::new(Shared {
                proxy: Proxy::new(state),
                admission: Arc::default(),
                graceful: Mutex::new(Some(GracefulShutdown::new())),
                listeners: tokio::sync::Mutex::new(Vec::new()),
                tls: ArcSwapOption::empty(),
            }),
        };
        server.listen_on(listeners).await?;
        Ok(server)
    }

    /// The TLS settings (certificates) for handshakes from now on; connections already up keep
    /// theirs.
    pub fn set_tls(&self, tls: Option<Arc<rustls::ServerConfig>>) {
        self.shared.tls.store(tls);
    }

    /// The plain-HTTP addresses actually bound (port 0 resolved).
    pub async fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound(false).await
    }

    /// The TLS addresses actually bound.
    pub async fn local_tls_addrs(&self) -> Vec<SocketAddr> {
        self.bound(true).await
    }

    async fn bound(&self, tls: bool) -> Vec<SocketAddr> {
        self.shared
            .listeners
            .lock()
            .await
            .iter()
            .filter(|l| l.configured.1 == tls)
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

    /// Makes the listeners match `listeners`: new ones are bound first, and only if all of them
    /// bind are the ones no longer wanted closed. On error nothing changes.
    pub async fn listen_on(&self, listeners: &Listeners) -> io::Result<()> {
        let mut listening = self.shared.listeners.lock().await;
        let mut fresh = Vec::new();
        for wanted in listeners.each() {
            if listening.iter().any(|l| l.configured == wanted) {
                continue;
            }
            let address = wanted.0;
            let listener = TcpListener::bind(address).await.map_err(|err| {
                io::Error::new(err.kind(), format!("cannot listen on {address}: {err}"))
            })?;
            fresh.push((wanted, listener));
        }
        for (configured, listener) in fresh {
            let local = listener.local_addr()?;
            let tls = configured.1;
            info!(tls, address = %local, "listening");
            let stats = Arc::new(ListenerStats::new(local));
            let task = tokio::spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
                Arc::clone(&stats),
                tls,
            ));
            listening.push(Listening {
                configured,
                local,
                task,
                stats,
            });
        }
        listening.retain(|l| {
            let keep = listeners.each().any(|wanted| wanted == l.configured);
            if !keep {
                info!(address = %l.local, "no longer listening");
                l.task.abort();
            }
            keep
        });
        let https_port = listening
            .iter()
            .find(|l| l.configured.1)
            .map_or(443, |l| l.local.port());
        self.shared.proxy.set_https_port(https_port);
        Ok(())
    }

    /// Stops accepting at once and lets open connections finish their requests (idle
    /// keep-alive connections close at once), for at most `grace`.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
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
        // Upgraded connections (WebSockets) are no longer hyper's: wait for them too.
        let tunnels = self.shared.proxy.tunnels();
        if tunnels.open() > 0 {
            info!(open = tunnels.open(), "waiting for open tunnels to close");
            if tokio::time::timeout_at(deadline, tunnels.all_closed())
                .await
                .is_err()
            {
                warn!(?grace, "grace period over: closing the open tunnels");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stats: Arc<ListenerStats>,
    tls: bool,
) {
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
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            stream,
            peer,
            limits,
            timeouts,
            open: (stats.opened(), admitted),
            tls,
        };
        if tls {
            tokio::spawn(handshake(Arc::clone(&shared), connection));
        } else {
            serve_connection(&shared, connection);
        }
    }
}

/// Completes a TLS handshake, within `request_header`, then serves the connection.
async fn handshake(shared: Arc<Shared>, accepted: Connection<TcpStream>) {
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

/// An accepted client connection and what it is served with.
struct Connection<S> {
    stream: S,
    peer: SocketAddr,
    limits: Limits,
    timeouts: config::Timeouts,
    /// Held until the connection ends.
    open: (OpenConnection, Admitted),
    /// It came over TLS.
    tls: bool,
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

fn serve_connection<S>(shared: &Shared, accepted: Connection<S>)
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
            max_head: limits.max_header_bytes,
        },
    );
    let watch = Arc::clone(stream.watch());
    let proxy = shared.proxy.clone();
    let service = service_fn(move |request| {
        let (proxy, watch) = (proxy.clone(), Arc::clone(&watch));
        async move { Ok::<_, Infallible>(proxy.handle(request, peer, tls, &watch).await) }
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
