//! Downstream, the client side: listeners and connections. Accept (plain and TLS), serve HTTP/1
//! with Fulcrum's own server (`h1/`) and HTTP/2 with hyper's, change listeners on reload, and
//! drain on shutdown.
//!
//! - `mod.rs`: the listeners, their accept loops, admission, drain.
//! - `admission.rs`: how many client connections may be open, in all and per IP.
//! - `tls/`: TLS termination with rustls: the `ServerConfig`, certificates chosen by SNI.
//! - `connection.rs`: one connection: TLS handshake, then HTTP/1 (`h1/`) or HTTP/2 (hyper's,
//!   its socket watched).
//! - `stream.rs`: a client connection's bytes, plain or TLS (`crate::stream`'s, on rustls's
//!   server side).
//! - `h1/`: Fulcrum's HTTP/1 server, on the codec (`http1/`).
//! - `drain.rs`: HTTP/2 connections finishing gracefully, on shutdown or idle.
//! - `stats.rs`: each listener's connection counts.
//!
//! The server binds its listeners itself (so port 0 works and the real address can be asked) and
//! starts accepting at once. It knows nothing of routing: each request goes to the proxy through
//! its `tower::Service` interface.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config;
use crate::proxy::Proxy;

mod admission;
mod connection;
mod drain;
mod h1;
mod stats;
mod stream;
pub mod tls;

use admission::Admission;

use crate::proxy::state::SharedState;
use connection::{Connection, handshake};
pub(crate) use h1::serve_alone;
pub use stats::ListenerStats;

/// How long to wait after an accept error (such as running out of file descriptors) before
/// accepting again, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The proxy's listeners and open connections; cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    proxy: Proxy,
    admission: Arc<Admission>,
    /// hyper's connections; `None` once shutdown has started.
    graceful: Mutex<Option<drain::Drain>>,
    /// Fulcrum's own connections (`h1/`).
    roster: h1::Roster,
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
                graceful: Mutex::new(Some(drain::Drain::new())),
                roster: h1::Roster::new(),
                listeners: tokio::sync::Mutex::new(Vec::new()),
                tls: ArcSwapOption::empty(),
            }),
        };
        // These hold a `Weak`: they end with the server.
        tokio::spawn(h1::sweep(Arc::downgrade(&server.shared)));
        server
            .shared
            .roster
            .open_sink(Arc::downgrade(&server.shared));
        server.listen_on(listeners).await?;
        Ok(server)
    }

    /// The proxy its connections call.
    pub fn proxy(&self) -> Proxy {
        self.shared.proxy.clone()
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
            delay_first_ack(&listener);
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
        let graceful = self.shared.graceful.lock().take();
        let Some(graceful) = graceful else {
            return;
        };
        info!(
            open = graceful.count() + self.shared.roster.len(),
            "shutting down: draining connections"
        );
        let drained = async {
            tokio::join!(graceful.shutdown(), self.shared.roster.drain());
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            warn!(
                ?grace,
                "grace period over: closing the remaining connections"
            );
        }
        // Upgraded connections (WebSockets) are no server connection's: wait for them too.
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

/// Lets the kernel hold back the ACK of a new connection's first request, to send it with the
/// answer (as HAProxy does on its HTTP listeners): one segment fewer per connection, for the proxy
/// and for the client. Accepted sockets take the setting from the listener. Only delayed, never
/// withheld: the kernel's delayed-ACK timer still sends it when the answer is slow.
fn delay_first_ack(listener: &TcpListener) {
    #[cfg(target_os = "linux")]
    if let Err(error) = socket2::SockRef::from(listener).set_tcp_quickack(false) {
        debug!(%error, "cannot clear TCP_QUICKACK on a listener");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
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
            h1::serve(&shared, connection.on_plain());
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_hold_back_the_first_ack() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = socket2::SockRef::from(&listener);
        assert!(
            socket.tcp_quickack().unwrap(),
            "a fresh socket acks at once"
        );
        delay_first_ack(&listener);
        assert!(!socket.tcp_quickack().unwrap());
    }
}
