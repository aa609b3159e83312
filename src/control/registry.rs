//! Runtime registrations: backends that a deploy system adds and removes through the admin API,
//! as an overlay on the config file's pools.
//!
//! Registrations survive file reloads (every snapshot is built from the file plus this overlay)
//! and restarts (each change is written to `[admin] state_file`, atomically: a temporary file then
//! a rename). A registration may carry a lease (`ttl`): unless renewed by a heartbeat it expires,
//! so a crashed service disappears by itself. This module keeps the list; `Control` (`mod.rs`)
//! turns a change into a new snapshot. It is never touched by the request path.

use parking_lot::{Mutex, MutexGuard};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::Authority;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::BackendConfig;
use crate::proxy::state::Registered;

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pool: String,
    pub address: Authority,
    pub weight: u32,
    pub backup: bool,
    /// The lease, when there is one.
    pub ttl: Option<Duration>,
    /// When the lease runs out unless renewed.
    pub expires_at: Option<SystemTime>,
}

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no registered backend {address} in pool \"{pool}\"")]
    NotRegistered { pool: String, address: String },
}

/// The registrations, and where they are persisted.
#[derive(Debug)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
    state_file: Option<PathBuf>,
}

impl Registry {
    /// An empty registry that persists nothing.
    pub fn in_memory() -> Registry {
        Registry {
            entries: Mutex::new(Vec::new()),
            state_file: None,
        }
    }

    /// Loads the registrations kept in `state_file` (a missing file is an empty registry);
    /// expired leases are dropped.
    pub fn load(state_file: &Path) -> Result<Registry, String> {
        let entries = match std::fs::read_to_string(state_file) {
            Ok(text) => parse(&text).map_err(|err| format!("{}: {err}", state_file.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(format!("{}: cannot read: {err}", state_file.display())),
        };
        let now = SystemTime::now();
        let live = entries
            .into_iter()
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
            .collect();
        Ok(Registry {
            entries: Mutex::new(live),
            state_file: Some(state_file.to_path_buf()),
        })
    }

    /// Adds a registration, starting its lease.
    /// Adds a registration, starting its lease; registering the same pool and address again
    /// replaces it (new weight, role and lease), as a service re-registering after a restart
    /// expects. Returns whether it was new.
    pub fn register(&self, mut entry: Entry) -> bool {
        let mut entries = self.lock();
        entry.expires_at = entry.ttl.map(|ttl| SystemTime::now() + ttl);
        let existing = entries
            .iter_mut()
            .find(|e| e.pool == entry.pool && e.address == entry.address);
        let created = match existing {
            Some(existing) => {
                *existing = entry;
                false
            }
            None => {
                entries.push(entry);
                true
            }
        };
        self.persist(&entries);
        created
    }

    /// Removes a registration.
    pub fn deregister(&self, pool: &str, address: &Authority) -> Result<Entry, RegistryError> {
        let mut entries = self.lock();
        let index = entries
            .iter()
            .position(|e| e.pool == pool && e.address == *address)
            .ok_or_else(|| RegistryError::NotRegistered {
                pool: pool.to_owned(),
                address: address.to_string(),
            })?;
        let removed = entries.remove(index);
        self.persist(&entries);
        Ok(removed)
    }

    /// Renews a registration's lease; a registration without one is left as it is.
    pub fn heartbeat(&self, pool: &str, address: &Authority) -> Result<Entry, RegistryError> {
        let mut entries = self.lock();
        let entry = entries
            .iter_mut()
            .find(|e| e.pool == pool && e.address == *address)
            .ok_or_else(|| RegistryError::NotRegistered {
                pool: pool.to_owned(),
                address: address.to_string(),
            })?;
        entry.expires_at = entry.ttl.map(|ttl| SystemTime::now() + ttl);
        let renewed = entry.clone();
        self.persist(&entries);
        Ok(renewed)
    }

    /// Removes and returns the registrations whose lease has run out.
    pub fn expire(&self) -> Vec<Entry> {
        let now = SystemTime::now();
        let mut entries = self.lock();
        let (expired, live): (Vec<Entry>, Vec<Entry>) = entries
            .drain(..)
            .partition(|e| e.expires_at.is_some_and(|at| at <= now));
        *entries = live;
        if !expired.is_empty() {
            self.persist(&entries);
        }
        expired
    }

    /// The earliest lease end, if any lease is running.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.lock().iter().filter_map(|e| e.expires_at).min()
    }

    /// The registration for this pool and address, if any.
    pub fn get(&self, pool: &str, address: &Authority) -> Option<Entry> {
        self.lock()
            .iter()
            .find(|e| e.pool == pool && e.address == *address)
            .cloned()
    }

    /// Every registration, as the snapshot builder takes them.
    pub fn registered(&self) -> Vec<Registered> {
        self.lock()
            .iter()
            .map(|e| Registered {
                pool: e.pool.clone(),
                backend: BackendConfig {
                    address: e.address.clone(),
                    weight: e.weight,
                    tls_name: None,
                },
                backup: e.backup,
                admin: None,
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock()
    }

    /// Writes the registrations to the state file: a temporary file, then a rename, so a crash
    /// leaves the old file or the new one, never half of one.
    fn persist(&self, entries: &[Entry]) {
        let Some(path) = &self.state_file else {
            return;
        };
        let stored: Vec<Stored> = entries.iter().map(Stored::from).collect();
        let text = serde_json::to_string_pretty(&StateFile {
            registrations: stored,
        })
        .expect("registrations serialize");
        let temporary = path.with_extension("tmp");
        let written =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            warn!(file = %path.display(), %error, "cannot write the registrations state file");
        }
    }
}

/// The state file's layout.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    registrations: Vec<Stored>,
}

/// A registration as stored: times as Unix milliseconds.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    pool: String,
    address: String,
    weight: u32,
    backup: bool,
    ttl_ms: Option<u64>,
    expires_at_ms: Option<u64>,
}

impl From<&Entry> for Stored {
    fn from(entry: &Entry) -> Stored {
        Stored {
            pool: entry.pool.clone(),
            address: entry.address.to_string(),
            weight: entry.weight,
            backup: entry.backup,
            ttl_ms: entry.ttl.map(|t| t.as_millis() as u64),
            expires_at_ms: entry.expires_at.map(|at| {
                at.duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64
            }),
        }
    }
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let file: StateFile = serde_json::from_str(text).map_err(|err| err.to_string())?;
    file.registrations
        .into_iter()
        .map(|stored| {
            Ok(Entry {
                address: stored
                    .address
                    .parse()
                    .map_err(|_| format!("bad address {:?}", stored.address))?,
                pool: stored.pool,
                weight: stored.weight.max(1),
                backup: stored.backup,
                ttl: stored.ttl_ms.map(Duration::from_millis),
                expires_at: stored
                    .expires_at_ms
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, ttl: Option<Duration>) -> Entry {
        Entry {
            pool: "web".into(),
            address: address.parse().unwrap(),
            weight: 2,
            backup: false,
            ttl,
            expires_at: None,
        }
    }

    #[test]
    fn registering_again_updates_and_deregister_unknown_is_not_found() {
        let registry = Registry::in_memory();
        assert!(registry.register(entry("127.0.0.1:1", None)));
        let mut heavier = entry("127.0.0.1:1", None);
        heavier.weight = 9;
        assert!(
            !registry.register(heavier),
            "the same address again is an update"
        );
        assert_eq!(registry.registered()[0].backend.weight, 9);
        let address = "127.0.0.1:2".parse().unwrap();
        assert!(registry.deregister("web", &address).is_err());
        assert_eq!(registry.registered().len(), 1);
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let registry = Registry::in_memory();
        registry.register(entry("127.0.0.1:1", Some(Duration::ZERO)));
        registry.register(entry("127.0.0.1:2", None));
        let expired = registry.expire();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].address.as_str(), "127.0.0.1:1");
        assert_eq!(registry.registered().len(), 1, "no lease: no expiry");
    }

    #[test]
    fn registrations_survive_a_restart_through_the_state_file() {
        let dir = std::env::temp_dir().join(format!("fulcrum-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        std::fs::remove_file(&path).ok();
        let registry = Registry::load(&path).unwrap();
        registry.register(entry("127.0.0.1:1", Some(Duration::from_secs(60))));
        registry.register(entry("127.0.0.1:2", None));
        let address = "127.0.0.1:2".parse().unwrap();
        registry.deregister("web", &address).unwrap();

        let restarted = Registry::load(&path).unwrap();
        let entries = restarted.lock().clone();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].address.as_str(), "127.0.0.1:1");
        assert_eq!(entries[0].weight, 2);
        assert_eq!(entries[0].ttl, Some(Duration::from_secs(60)));
        assert!(entries[0].expires_at.is_some());
        assert!(
            !path.with_extension("tmp").exists(),
            "the temporary file was renamed"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
