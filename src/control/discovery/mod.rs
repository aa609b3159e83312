//! Backends from outside the config file, kept by source (`dns.rs`: `[pool.NAME.dns]`), and
//! joined to the pools by the same rebuild as a reload: a backend that stays keeps its health,
//! ejection, in-flight count and connections; one that leaves drains.
//!
//! What each source found is kept here with its error count, so that `/status` can say where a
//! backend came from and `GET /metrics` how many each source gives.

pub mod dns;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::uri::Authority;
use parking_lot::Mutex;
use tokio::task::AbortHandle;

use crate::config::{Config, DnsDiscovery};
use crate::proxy::state::Registered;
use crate::telemetry::metrics::Counter;

/// Where a backend came from besides the file and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Dns,
    /// Registrations shared through etcd (`control/etcd/`).
    Etcd,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Dns => "dns",
            Source::Etcd => "etcd",
        }
    }
}

/// One pool's backends from one source, and that source's failures.
#[derive(Debug, Default)]
struct Found {
    backends: Vec<Registered>,
    errors: Arc<Counter>,
}

/// How a source is doing, for `/status`: DNS per pool (`answering`, `empty`: an authoritative
/// empty answer waiting out the hold, `failing`), etcd for all (`connecting`, `connected`,
/// `unreachable`).
#[derive(Debug, Clone)]
pub struct Standing {
    pub state: &'static str,
    /// Since when it is in that state.
    pub since: std::time::SystemTime,
    /// The last failure's reason, while failing.
    pub error: Option<String>,
}

impl Standing {
    pub fn new(state: &'static str) -> Standing {
        Standing {
            state,
            since: std::time::SystemTime::now(),
            error: None,
        }
    }

    /// Now in `state`, with `error`: `since` moves only when the state does.
    pub fn update(&mut self, state: &'static str, error: Option<String>) {
        if self.state != state {
            *self = Standing::new(state);
        }
        self.error = error;
    }
}

/// Every pool's discovered backends, and the tasks that discover them.
#[derive(Debug, Default)]
pub struct Discovery {
    found: Mutex<BTreeMap<(String, Source), Found>>,
    standing: Mutex<BTreeMap<(String, Source), Standing>>,
    /// Per pool, the DNS settings its running task follows.
    tasks: Mutex<BTreeMap<String, (DnsDiscovery, AbortHandle)>>,
}

impl Discovery {
    /// Every discovered backend, as the snapshot builder takes them.
    pub fn registered(&self) -> Vec<Registered> {
        let found = self.found.lock();
        found
            .values()
            .flat_map(|f| f.backends.iter().cloned())
            .collect()
    }

    /// Replaces what `source` gives `pool`; returns whether it changed.
    pub fn set(&self, pool: &str, source: Source, backends: Vec<Registered>) -> bool {
        let mut found = self.found.lock();
        let entry = found.entry((pool.to_owned(), source)).or_default();
        if entry.backends == backends {
            return false;
        }
        entry.backends = backends;
        true
    }

    /// Records how `source` is doing for `pool`.
    pub fn stand(&self, pool: &str, source: Source, state: &'static str, error: Option<String>) {
        let mut standing = self.standing.lock();
        standing
            .entry((pool.to_owned(), source))
            .or_insert_with(|| Standing::new(state))
            .update(state, error);
    }

    /// How `source` is doing for `pool`, once it has tried.
    pub fn standing(&self, pool: &str, source: Source) -> Option<Standing> {
        self.standing
            .lock()
            .get(&(pool.to_owned(), source))
            .cloned()
    }

    /// Replaces what `source` gives every pool with `by_pool` (a pool left out gets nothing);
    /// returns whether anything changed.
    pub fn set_all(
        &self,
        pools: &[String],
        source: Source,
        mut by_pool: BTreeMap<String, Vec<Registered>>,
    ) -> bool {
        let mut changed = false;
        for pool in pools {
            changed |= self.set(pool, source, by_pool.remove(pool).unwrap_or_default());
        }
        changed
    }

    /// The counter of `source`'s failures for `pool` (`""` for a source of every pool).
    pub fn errors(&self, pool: &str, source: Source) -> Arc<Counter> {
        let mut found = self.found.lock();
        Arc::clone(&found.entry((pool.to_owned(), source)).or_default().errors)
    }

    /// The source that gives `pool` the backend at `address`, if one does.
    pub fn source_of(&self, pool: &str, address: &Authority) -> Option<Source> {
        let found = self.found.lock();
        found
            .iter()
            .find(|((p, _), f)| {
                p == pool && f.backends.iter().any(|r| r.backend.address == *address)
            })
            .map(|((_, source), _)| *source)
    }

    /// Per pool and source: failures so far, for the metrics.
    pub fn errors_by_pool(&self) -> Vec<(String, Source, u64)> {
        let found = self.found.lock();
        found
            .iter()
            .map(|((pool, source), f)| (pool.clone(), *source, f.errors.get()))
            .collect()
    }

    /// Starts, keeps or stops each pool's DNS task to match `config`: a pool whose `[dns]` is
    /// unchanged keeps its task (and what it found); a removed one forgets its backends.
    /// `start` spawns the task for a pool.
    pub fn sync(
        &self,
        config: &Config,
        start: impl Fn(&str, &DnsDiscovery) -> AbortHandle,
    ) -> bool {
        let mut tasks = self.tasks.lock();
        let wanted: BTreeMap<&str, &DnsDiscovery> = config
            .pools
            .iter()
            .filter_map(|p| p.dns.as_ref().map(|dns| (p.name.as_str(), dns)))
            .collect();
        let mut forgotten = false;
        tasks.retain(|pool, (settings, task)| {
            let keep = wanted.get(pool.as_str()) == Some(&&*settings);
            if !keep {
                task.abort();
                forgotten |= self.set(pool, Source::Dns, Vec::new());
                self.standing.lock().remove(&(pool.clone(), Source::Dns));
            }
            keep
        });
        for (pool, settings) in wanted {
            if !tasks.contains_key(pool) {
                let task = start(pool, settings);
                tasks.insert(pool.to_owned(), (settings.clone(), task));
            }
        }
        forgotten
    }
}
