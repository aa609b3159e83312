//! `Control`: the one place that changes the running proxy. Every trigger goes through it: SIGHUP,
//! a change of the config file (`watch.rs`), `POST /reload`, and the admin API's registry changes.
//!
//! A reload reads and validates the whole file first; if anything is wrong the running config
//! stays, the error is logged and kept for `/status`, and nothing else changes. A valid config
//! first gets its listeners (new ones bound before old ones close; a bind failure is a reload
//! error), then a new snapshot built from it, the registrations and the old snapshot, swapped in
//! atomically. Requests in flight finish on the snapshot they started with.
//!
//! # Layout
//! - `mod.rs`: [`Control`], reloads and registration changes.
//! - `registry.rs`: runtime registrations (the admin API's overlay), leases, persistence.
//! - `discovery/`: backends found outside the file (`dns.rs`: DNS A, AAAA and SRV records).
//! - `watch.rs`: reload when the config file changes.
//! - `admin/`: the admin API (JSON over HTTP) and `GET /metrics`, the Prometheus exposition.
//!
//! Not here: what a snapshot is and how one is built from a config (`proxy/state.rs`), nor the
//! listeners (`downstream/`): control builds and swaps, and tells the server what changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::downstream::{Listeners, Server};
use crate::proxy::state::{self as state_types, SharedState, State};
use crate::telemetry::access::{AccessLog, Sinks};
use crate::telemetry::metrics::Counter;

pub mod admin;
pub mod discovery;
pub mod etcd;
pub mod registry;
pub mod watch;

use discovery::{Discovery, Source};

use registry::{Entry, Registry, RegistryError};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    #[error("{0}")]
    AccessLog(std::io::Error),
}

/// What `/status` says about the config.
#[derive(Debug, Clone)]
pub struct ConfigStatus {
    pub path: PathBuf,
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub last_error: Option<String>,
}

/// The handle that reloads and re-registers; cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    state: SharedState,
    registry: Registry,
    /// Backends found in DNS, and registrations shared through etcd, by pool.
    discovery: Discovery,
    /// The etcd registry, with `[registry] etcd`: the admin API's registrations live there.
    shared: Option<Arc<etcd::Shared>>,
    server: OnceLock<Server>,
    /// The config in force, and what `/status` reports.
    current: Mutex<(Arc<Config>, ConfigStatus)>,
    /// One change at a time.
    changing: tokio::sync::Mutex<()>,
    reloads_succeeded: Counter,
    reloads_failed: Counter,
    /// Registry changes, by [`RegistryChange`].
    registry_changes: [Counter; RegistryChange::ALL.len()],
    /// The access log files opened so far, and the one in force.
    access_sinks: Sinks,
    access_log: Mutex<Option<AccessLog>>,
}

/// A change of the runtime registrations; the `change` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryChange {
    Registered,
    Updated,
    Deregistered,
    Expired,
}

impl RegistryChange {
    pub const ALL: [RegistryChange; 4] = [
        RegistryChange::Registered,
        RegistryChange::Updated,
        RegistryChange::Deregistered,
        RegistryChange::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RegistryChange::Registered => "registered",
            RegistryChange::Updated => "updated",
            RegistryChange::Deregistered => "deregistered",
            RegistryChange::Expired => "expired",
        }
    }
}

impl Control {
    /// Takes `config` (loaded from its `path`) as generation 1 and starts serving it: the
    /// snapshot is built with `registry`'s registrations and its health checks start. Must run
    /// inside a tokio runtime.
    pub(crate) fn start(config: Config, registry: Registry) -> std::io::Result<Control> {
        let access_sinks = Sinks::default();
        let access_log = access_sinks.open(&config.log)?;
        let state = State::rebuild(&config, &registry.registered(), 1, None)
            .with_access_log(access_log.clone());
        warn_empty_pools(&state);
        let state = state.into_shared();
        let status = ConfigStatus {
            path: config.path.clone(),
            generation: 1,
            loaded_at: SystemTime::now(),
            last_error: None,
        };
        let control = Control {
            inner: Arc::new(Inner {
                state,
                registry,
                discovery: Discovery::default(),
                shared: config.registry.as_ref().map(etcd::Shared::new),
                server: OnceLock::new(),
                current: Mutex::new((Arc::new(config), status)),
                changing: tokio::sync::Mutex::new(()),
                reloads_succeeded: Counter::default(),
                reloads_failed: Counter::default(),
                registry_changes: Default::default(),
                access_sinks,
                access_log: Mutex::new(access_log),
            }),
        };
        tokio::spawn(expire_leases(Arc::downgrade(&control.inner)));
        control.follow_discovery(&control.config());
        if let Some(shared) = &control.inner.shared {
            tokio::spawn(etcd::shared::follow(
                Arc::downgrade(&control.inner),
                Arc::clone(shared),
            ));
        }
        Ok(control)
    }

    /// Reopens the access log file by name (SIGUSR1, for log rotation).
    pub fn reopen_access_log(&self) {
        self.inner.access_sinks.reopen();
    }

    /// Writes out the access log lines still queued (at shutdown).
    pub(crate) fn flush_access_log(&self) {
        self.inner.access_sinks.flush(Duration::from_secs(2));
    }

    /// Access log lines dropped because the writer could not keep up.
    pub(crate) fn access_log_dropped(&self) -> u64 {
        self.inner.access_sinks.dropped()
    }

    /// The live snapshot, for the server.
    pub(crate) fn state(&self) -> SharedState {
        Arc::clone(&self.inner.state)
    }

    /// The server whose listeners reloads change, once attached.
    pub(crate) fn server(&self) -> Option<&Server> {
        self.inner.server.get()
    }

    /// Reloads so far: (accepted, rejected).
    pub(crate) fn reload_counts(&self) -> (u64, u64) {
        (
            self.inner.reloads_succeeded.get(),
            self.inner.reloads_failed.get(),
        )
    }

    /// Registry changes of kind `change` so far.
    pub(crate) fn registry_changes(&self, change: RegistryChange) -> u64 {
        self.inner.registry_changes[change as usize].get()
    }

    fn count(&self, change: RegistryChange) {
        self.inner.registry_changes[change as usize].inc();
    }

    /// Lets reloads change the server's listeners.
    pub(crate) fn attach(&self, server: Server) {
        if self.inner.server.set(server).is_err() {
            warn!("a server is already attached; ignoring another");
        }
    }

    /// The config in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        Arc::clone(&self.lock_current().0)
    }

    /// What `/status` reports about the config.
    pub fn status(&self) -> ConfigStatus {
        self.lock_current().1.clone()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The etcd registry, when registrations are shared through etcd.
    pub(crate) fn shared(&self) -> Option<&Arc<etcd::Shared>> {
        self.inner.shared.as_ref()
    }

    /// What `source` gives every pool now, as `find` says from the config's pool names (a pool
    /// left out gets nothing): served at once if it changed, through the same rebuild as a
    /// reload. `find` runs after any reload under way, so it sees the pools in force.
    pub(crate) async fn discovered_all(
        &self,
        source: Source,
        find: impl FnOnce(
            &std::collections::BTreeSet<String>,
        ) -> std::collections::BTreeMap<String, Vec<state_types::Registered>>,
    ) {
        let _one_at_a_time = self.inner.changing.lock().await;
        let pools: std::collections::BTreeSet<String> =
            self.config().pools.iter().map(|p| p.name.clone()).collect();
        let by_pool = find(&pools);
        let pools: Vec<String> = pools.into_iter().collect();
        if !self.inner.discovery.set_all(&pools, source, by_pool) {
            return;
        }
        let previous = self.inner.state.load_full();
        self.rebuild();
        log_membership_changes(&previous, &self.inner.state.load(), source.name());
    }

    /// The backends found outside the file, by source.
    pub(crate) fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// Starts, keeps or stops each pool's discovery to match `config`; returns whether backends
    /// were forgotten (a pool's `[dns]` removed or changed).
    fn follow_discovery(&self, config: &Config) -> bool {
        let inner = Arc::downgrade(&self.inner);
        self.inner.discovery.sync(config, |pool, settings| {
            discovery::dns::spawn(Weak::clone(&inner), pool, settings)
        })
    }

    /// What `source` finds for `pool` now: served at once if it changed, through the same
    /// rebuild as a reload.
    pub(crate) async fn discovered(
        &self,
        pool: &str,
        source: Source,
        backends: Vec<state_types::Registered>,
    ) {
        let _one_at_a_time = self.inner.changing.lock().await;
        if !self.config().pools.iter().any(|p| p.name == pool) {
            return;
        }
        if !self.inner.discovery.set(pool, source, backends) {
            return;
        }
        let previous = self.inner.state.load_full();
        self.rebuild();
        log_membership_changes(&previous, &self.inner.state.load(), source.name());
    }

    /// Reloads the config file; returns the new generation.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.inner.changing.lock().await;
        let path = self.status().path;
        match self.try_reload(&path).await {
            Ok(generation) => {
                self.inner.reloads_succeeded.inc();
                Ok(generation)
            }
            Err(error) => {
                self.inner.reloads_failed.inc();
                warn!(file = %path.display(), %error, "reload rejected: the running config stays");
                self.lock_current().1.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    async fn try_reload(&self, path: &Path) -> Result<u64, ReloadError> {
        let config = Config::load(path)?;
        let before = self.config();
        let access_log = self
            .inner
            .access_sinks
            .open(&config.log)
            .map_err(ReloadError::AccessLog)?;
        if let Some(server) = self.inner.server.get() {
            let listeners = Listeners::of(&config);
            if listeners != Listeners::of(&before) {
                server.listen_on(&listeners).await?;
            }
            // Certificates are read anew on every reload: renewed files are picked up.
            server.set_tls(
                config
                    .tls
                    .as_ref()
                    .map(crate::downstream::tls::server_config),
            );
        }
        *self.inner.access_log.lock() = access_log;
        warn_on_restart_only_changes(&before, &config);
        let generation = self.status().generation + 1;
        self.follow_discovery(&config);
        let previous = self.inner.state.load_full();
        self.swap(&config, generation);
        if let Some(shared) = &self.inner.shared {
            shared.config_changed();
        }
        log_membership_changes(&previous, &self.inner.state.load(), "the config");
        let changes = PoolChanges::between(&before, &config);
        info!(
            file = %path.display(),
            generation,
            pools = config.pools.len(),
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            "config reloaded"
        );
        let mut current = self.lock_current();
        current.1 = ConfigStatus {
            path: path.to_path_buf(),
            generation,
            loaded_at: SystemTime::now(),
            last_error: None,
        };
        current.0 = Arc::new(config);
        Ok(generation)
    }

    /// Adds (or updates) a runtime registration and serves it at once; returns whether it was new.
    pub(crate) async fn register(&self, entry: Entry) -> bool {
        let _one_at_a_time = self.inner.changing.lock().await;
        let (pool, address) = (entry.pool.clone(), entry.address.clone());
        let created = self.inner.registry.register(entry);
        self.rebuild();
        if created {
            self.count(RegistryChange::Registered);
            info!(%pool, backend = %address, "backend registered");
        } else {
            self.count(RegistryChange::Updated);
            info!(%pool, backend = %address, "backend registration updated");
        }
        created
    }

    /// Removes a runtime registration; its in-flight requests finish.
    pub(crate) async fn deregister(
        &self,
        pool: &str,
        address: &http::uri::Authority,
    ) -> Result<(), RegistryError> {
        let _one_at_a_time = self.inner.changing.lock().await;
        self.inner.registry.deregister(pool, address)?;
        self.rebuild();
        self.count(RegistryChange::Deregistered);
        info!(%pool, backend = %address, "backend deregistered");
        Ok(())
    }

    /// Rebuilds the snapshot from the config in force and the registrations.
    fn rebuild(&self) {
        let config = self.config();
        self.swap(&config, self.status().generation);
    }

    fn swap(&self, config: &Config, generation: u64) {
        let previous = self.inner.state.load_full();
        let access_log = self.inner.access_log.lock().clone();
        let mut registered = self.inner.registry.registered();
        registered.extend(self.inner.discovery.registered());
        let next = State::rebuild(config, &registered, generation, Some(&previous))
            .with_access_log(access_log);
        next.start_background();
        warn_empty_pools(&next);
        self.inner.state.store(Arc::new(next));
        previous.retire();
    }

    fn lock_current(&self) -> MutexGuard<'_, (Arc<Config>, ConfigStatus)> {
        self.inner.current.lock()
    }
}

/// Logs each backend a reload (or discovery) added to or removed from a pool, naming `by` (admin
/// API registrations log their own changes).
fn log_membership_changes(before: &State, after: &State, by: &str) {
    let members = |state: &State| -> Vec<(String, String)> {
        state
            .pools()
            .iter()
            .flat_map(|pool| {
                pool.members()
                    .map(|(b, _)| (pool.name().to_string(), b.address().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (old, new) = (members(before), members(after));
    for (pool, backend) in new.iter().filter(|m| !old.contains(m)) {
        info!(%pool, %backend, by, "backend added");
    }
    for (pool, backend) in old.iter().filter(|m| !new.contains(m)) {
        info!(%pool, %backend, by, "backend removed");
    }
}

/// Which pools a reload added, removed or changed, by name.
#[derive(Debug, Default, PartialEq, Eq)]
struct PoolChanges<'a> {
    added: Vec<&'a str>,
    removed: Vec<&'a str>,
    changed: Vec<&'a str>,
}

impl<'a> PoolChanges<'a> {
    fn between(before: &'a Config, after: &'a Config) -> PoolChanges<'a> {
        let mut changes = PoolChanges::default();
        for pool in &after.pools {
            match before.pools.iter().find(|p| p.name == pool.name) {
                None => changes.added.push(&pool.name),
                Some(old) if old != pool => changes.changed.push(&pool.name),
                Some(_) => {}
            }
        }
        for pool in &before.pools {
            if !after.pools.iter().any(|p| p.name == pool.name) {
                changes.removed.push(&pool.name);
            }
        }
        changes
    }
}

/// A pool with no backend answers every request with 503: legal (registrations may fill it),
/// but worth a word.
fn warn_empty_pools(state: &State) {
    for pool in state.pools() {
        if pool.members().next().is_none() {
            warn!(pool = %pool.name(), "pool has no backends: its requests get 503 until one is registered");
        }
    }
}

/// Settings read once at startup: a reload cannot apply them, so say so.
fn warn_on_restart_only_changes(before: &Config, after: &Config) {
    if before.server.workers != after.server.workers {
        warn!("server.workers changed: it takes effect at the next restart");
    }
    if before.admin != after.admin {
        warn!("[admin] changed: it takes effect at the next restart");
    }
}

/// Removes registrations whose lease ran out, as they run out.
async fn expire_leases(inner: Weak<Inner>) {
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let control = Control { inner };
            let expired = {
                let _one_at_a_time = control.inner.changing.lock().await;
                let expired = control.inner.registry.expire();
                if !expired.is_empty() {
                    control.rebuild();
                }
                expired
            };
            for entry in &expired {
                control.count(RegistryChange::Expired);
                info!(pool = %entry.pool, backend = %entry.address, "registration expired: no heartbeat within its ttl");
            }
            control
                .inner
                .registry
                .next_expiry()
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1))
        };
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
    }
}
