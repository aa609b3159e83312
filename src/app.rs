//! `App`: a whole running proxy, assembled from a config: the snapshot and its control, the
//! proxy listeners, the admin API and the config file watch. The binary, the demo and the
//! integration tests all start the proxy through it, so they run the same thing.

use std::future::Future;
use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::Control;
use crate::control::registry::Registry;
use crate::downstream::{Listeners, Server};
use crate::proxy::Proxy;

/// How to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Reload when the config file changes.
    pub watch_config: bool,
    /// Embedded in a server of its own ([`App::proxy`] answers its requests): no proxy
    /// listener is bound, on start or reload; the admin API still runs when configured.
    pub embedded: bool,
}

/// A running proxy.
pub struct App {
    control: Control,
    server: Server,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl App {
    /// Starts serving `config`. Must run inside a tokio runtime.
    pub async fn start(config: Config, options: Options) -> Result<App, StartError> {
        let registry = match config.admin.as_ref().and_then(|a| a.state_file.as_deref()) {
            Some(path) => Registry::load(path).map_err(StartError::Registry)?,
            None => Registry::in_memory(),
        };
        let admin = config.admin.clone();
        let listeners = if options.embedded {
            Listeners::default()
        } else {
            Listeners::of(&config)
        };
        let tls = config
            .tls
            .as_ref()
            .map(crate::downstream::tls::server_config);
        let control = Control::start(config, registry)?;
        let server = Server::bind(&listeners, control.state()).await?;
        server.set_tls(tls);
        if !options.embedded {
            control.attach(server.clone());
        }
        let admin = match admin {
            None => None,
            Some(admin) => {
                let listener = crate::control::admin::bind(admin.listen).await?;
                let address = listener.local_addr()?;
                let task = tokio::spawn(crate::control::admin::serve(
                    listener,
                    control.clone(),
                    admin.token,
                ));
                Some((address, task))
            }
        };
        let watcher = if options.watch_config {
            Some(crate::control::watch::watch_config(control.clone()).map_err(StartError::Watch)?)
        } else {
            None
        };
        Ok(App {
            control,
            server,
            admin,
            _watcher: watcher,
        })
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The proxy, to call from a server of one's own (a `tower::Service`): see
    /// `examples/embed.rs`.
    pub fn proxy(&self) -> Proxy {
        self.server.proxy()
    }

    /// The proxy's bound plain-HTTP addresses.
    pub async fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server.local_addrs().await
    }

    /// The proxy's bound TLS addresses.
    pub async fn local_tls_addrs(&self) -> Vec<SocketAddr> {
        self.server.local_tls_addrs().await
    }

    /// The admin API's bound address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(address, _)| *address)
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains for the grace period
    /// of the config in force at that moment.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        let grace = self.control.config().server.shutdown_grace;
        self.server.drain(grace).await;
        self.control.flush_access_log();
        if let Some((_, task)) = self.admin {
            task.abort();
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("registrations state file: {0}")]
    Registry(String),
    #[error("cannot watch the config file: {0}")]
    Watch(notify::Error),
}
