//! Runtime registrations shared through etcd (`[registry] etcd`): every instance with the same
//! prefix lists the registrations, then watches them from the listing's revision, and applies
//! each change through the same rebuild as a reload; the admin API's writes go to etcd.
//!
//! A registration is the key `{prefix}/pools/{pool}/backends/{address}` with a JSON value,
//! every field optional: `{"weight": 2, "backup": false, "admin": "draining"}` (`admin`:
//! `enabled`, `draining` or `disabled`, what the admin API's drain, disable and enable set). One
//! with a `ttl` is attached to an etcd lease of that TTL: a heartbeat keeps the lease alive, and
//! when it expires etcd deletes the key and every instance drops the backend.
//!
//! A watch that breaks, or falls behind a compaction, is listed and established again, with
//! backoff. While etcd is unreachable every instance keeps the set it knew; admin writes fail
//! (503); `/status` shows the registry's state and `fulcrum_discovery_errors_total{source="etcd"}`
//! counts failures. A key whose value is not valid JSON, or whose pool is unknown, is skipped with
//! one warning until it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::uri::Authority;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::client::{Etcd, EtcdError};
use crate::config::{BackendConfig, MAX_WEIGHT, SharedRegistry, parse_backend_address};
use crate::control::discovery::{Source, Standing};
use crate::control::registry::Entry;
use crate::control::{Control, Inner};
use crate::proxy::state::Registered;
use crate::upstream::health::AdminState;

/// Longest wait between attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A registration's value in etcd.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Value {
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<String>,
}

/// The registrations in etcd, as this instance follows and writes them.
#[derive(Debug)]
pub struct Shared {
    etcd: Etcd,
    settings: SharedRegistry,
    standing: Mutex<Standing>,
    /// A reload changed the pools: the registrations known are applied again (a key of a pool
    /// that now exists serves, one of a pool gone is skipped).
    reapply: tokio::sync::Notify,
}

impl Shared {
    pub fn new(settings: &SharedRegistry) -> Arc<Shared> {
        Arc::new(Shared {
            etcd: Etcd::new(settings.etcd.clone()),
            settings: settings.clone(),
            standing: Mutex::new(Standing::new("connecting")),
            reapply: tokio::sync::Notify::new(),
        })
    }

    /// Says that the config's pools may have changed.
    pub fn config_changed(&self) {
        self.reapply.notify_one();
    }

    pub fn settings(&self) -> &SharedRegistry {
        &self.settings
    }

    pub fn standing(&self) -> Standing {
        self.standing.lock().clone()
    }

    fn stand(&self, state: &'static str, error: Option<String>) {
        self.standing.lock().update(state, error);
    }

    fn pools_prefix(&self) -> String {
        format!("{}/pools/", self.settings.prefix)
    }

    fn key(&self, pool: &str, address: &Authority) -> String {
        format!("{}{pool}/backends/{address}", self.pools_prefix())
    }

    /// Writes `entry` (a lease of its `ttl`, if it has one); whether it is new.
    pub async fn register(&self, entry: &Entry) -> Result<bool, EtcdError> {
        let key = self.key(&entry.pool, &entry.address);
        let existed = !self.etcd.get(key.as_bytes()).await?.is_empty();
        let lease = match entry.ttl {
            Some(ttl) => self.etcd.grant(ttl).await?,
            None => 0,
        };
        let value = Value {
            weight: Some(entry.weight),
            backup: Some(entry.backup),
            admin: None,
        };
        let json = serde_json::to_vec(&value).expect("a value serializes");
        self.etcd.put(key.as_bytes(), &json, lease).await?;
        Ok(!existed)
    }

    /// Deletes a registration (revoking its lease, if it has one); whether there was one.
    pub async fn deregister(&self, pool: &str, address: &Authority) -> Result<bool, EtcdError> {
        let key = self.key(pool, address);
        match self.etcd.get(key.as_bytes()).await?.into_iter().next() {
            None => Ok(false),
            Some(kv) if kv.lease != 0 => {
                self.etcd.revoke(kv.lease).await?;
                Ok(true)
            }
            Some(_) => self.etcd.delete(key.as_bytes()).await,
        }
    }

    /// Sets an operator's state on a registration, keeping its lease; whether there was one.
    pub async fn set_admin(
        &self,
        pool: &str,
        address: &Authority,
        admin: AdminState,
    ) -> Result<bool, EtcdError> {
        let key = self.key(pool, address);
        let Some(kv) = self.etcd.get(key.as_bytes()).await?.into_iter().next() else {
            return Ok(false);
        };
        let mut value: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        value.admin = match admin {
            AdminState::Enabled => None,
            AdminState::Draining => Some("draining".to_owned()),
            AdminState::Disabled => Some("disabled".to_owned()),
        };
        let json = serde_json::to_vec(&value).expect("a value serializes");
        self.etcd.put(key.as_bytes(), &json, kv.lease).await?;
        Ok(true)
    }

    /// Renews a registration's lease; whether the registration is still there.
    pub async fn heartbeat(&self, pool: &str, address: &Authority) -> Result<bool, EtcdError> {
        let key = self.key(pool, address);
        let Some(kv) = self.etcd.get(key.as_bytes()).await?.into_iter().next() else {
            return Ok(false);
        };
        if kv.lease == 0 {
            return Ok(true);
        }
        self.etcd.keep_alive(kv.lease).await
    }

    /// The registrations under the prefix, by pool, from keys and values; `warned` holds the keys
    /// already warned about, so that each bad one is said once until it changes.
    fn registrations(
        &self,
        keys: &BTreeMap<Vec<u8>, Vec<u8>>,
        pools: &BTreeSet<String>,
        warned: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> BTreeMap<String, Vec<Registered>> {
        let mut by_pool: BTreeMap<String, Vec<Registered>> = BTreeMap::new();
        let prefix = self.pools_prefix();
        warned.retain(|key, value| keys.get(key) == Some(value));
        for (key, value) in keys {
            match parse(&prefix, key, value, pools) {
                Ok(registered) => {
                    by_pool
                        .entry(registered.pool.clone())
                        .or_default()
                        .push(registered);
                }
                Err(reason) => {
                    if warned.insert(key.clone(), value.clone()).is_none() {
                        let key = String::from_utf8_lossy(key);
                        warn!(%key, %reason, "etcd registration skipped");
                    }
                }
            }
        }
        by_pool
    }
}

/// One key and value as a registration, or why not.
fn parse(
    prefix: &str,
    key: &[u8],
    value: &[u8],
    pools: &BTreeSet<String>,
) -> Result<Registered, String> {
    let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
    let rest = key
        .strip_prefix(prefix)
        .ok_or("the key is outside the prefix")?;
    let (pool, address) = rest
        .split_once("/backends/")
        .ok_or("expected {prefix}/pools/{pool}/backends/{address}")?;
    if !pools.contains(pool) {
        return Err(format!("no pool \"{pool}\" in the config"));
    }
    let address = parse_backend_address(address).map_err(|reason| format!("address {reason}"))?;
    let value: Value = if value.is_empty() {
        Value::default()
    } else {
        serde_json::from_slice(value)
            .map_err(|err| format!("the value is not valid JSON: {err}"))?
    };
    let weight = value.weight.unwrap_or(1);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        return Err(format!(
            "weight {weight} is invalid, expected 1 to {MAX_WEIGHT}"
        ));
    }
    let admin = match value.admin.as_deref() {
        None | Some("enabled") => AdminState::Enabled,
        Some("draining") => AdminState::Draining,
        Some("disabled") => AdminState::Disabled,
        Some(other) => {
            return Err(format!(
                "admin {other:?}: expected enabled, draining or disabled"
            ));
        }
    };
    Ok(Registered {
        pool: pool.to_owned(),
        backend: BackendConfig {
            address,
            weight,
            tls_name: None,
        },
        backup: value.backup.unwrap_or(false),
        admin: Some(admin),
    })
}

/// Follows the registrations in etcd until the proxy is gone: lists them, applies them, watches
/// from the listing's revision, and starts over (with backoff) when the watch breaks.
pub(in crate::control) async fn follow(control: Weak<Inner>, shared: Arc<Shared>) {
    let prefix = shared.pools_prefix().into_bytes();
    let mut backoff = Duration::from_millis(100);
    let mut warned = BTreeMap::new();
    loop {
        let broken = match shared.etcd.list(&prefix).await {
            Ok((revision, kvs)) => {
                let mut keys: BTreeMap<Vec<u8>, Vec<u8>> =
                    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                if !apply(&control, &shared, &keys, &mut warned).await {
                    return;
                }
                if shared.standing().state != "connected" {
                    info!(prefix = %shared.settings.prefix, keys = keys.len(), "etcd registry connected");
                }
                shared.stand("connected", None);
                backoff = Duration::from_millis(100);
                watch(&control, &shared, &prefix, revision, &mut keys, &mut warned).await
            }
            Err(error) => error,
        };
        let Some(inner) = control.upgrade() else {
            return;
        };
        let control_now = Control { inner };
        control_now.discovery().errors("", Source::Etcd).inc();
        if shared.standing().state != "unreachable" {
            warn!(%broken, "etcd registry unreachable: the registrations known stay in force");
        }
        shared.stand("unreachable", Some(broken.to_string()));
        drop(control_now);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies the watch's events to `keys` until it breaks; why it broke.
async fn watch(
    control: &Weak<Inner>,
    shared: &Shared,
    prefix: &[u8],
    revision: i64,
    keys: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    warned: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> EtcdError {
    let mut watch = match shared.etcd.watch(prefix, revision + 1).await {
        Ok(watch) => watch,
        Err(error) => return error,
    };
    loop {
        let next = tokio::select! {
            next = watch.next() => next,
            () = shared.reapply.notified() => {
                if !apply(control, shared, keys, warned).await {
                    return EtcdError::Refused("the proxy stopped".to_owned());
                }
                continue;
            }
        };
        let response = match next {
            Ok(response) => response,
            Err(error) => return error,
        };
        if response.canceled || response.compact_revision > 0 {
            return EtcdError::Refused(format!(
                "the watch was canceled ({}): listing again",
                if response.cancel_reason.is_empty() {
                    "compacted"
                } else {
                    &response.cancel_reason
                }
            ));
        }
        if response.events.is_empty() {
            continue;
        }
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            if event.kind == 1 {
                keys.remove(&kv.key);
            } else {
                keys.insert(kv.key, kv.value);
            }
        }
        if !apply(control, shared, keys, warned).await {
            return EtcdError::Refused("the proxy stopped".to_owned());
        }
    }
}

/// Serves `keys`' registrations; false once the proxy is gone.
async fn apply(
    control: &Weak<Inner>,
    shared: &Shared,
    keys: &BTreeMap<Vec<u8>, Vec<u8>>,
    warned: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> bool {
    let Some(inner) = control.upgrade() else {
        return false;
    };
    let control = Control { inner };
    control
        .discovered_all(Source::Etcd, |pools| {
            shared.registrations(keys, pools, warned)
        })
        .await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> BTreeSet<String> {
        ["api".to_owned()].into()
    }

    #[test]
    fn keys_and_values_as_registrations() {
        let parsed = parse(
            "/f/pools/",
            b"/f/pools/api/backends/10.0.0.5:8080",
            br#"{"weight": 2, "backup": true, "admin": "draining"}"#,
            &pools(),
        )
        .unwrap();
        assert_eq!(parsed.pool, "api");
        assert_eq!(parsed.backend.address, "10.0.0.5:8080");
        assert_eq!(parsed.backend.weight, 2);
        assert!(parsed.backup);
        assert_eq!(parsed.admin, Some(AdminState::Draining));
        let plain = parse(
            "/f/pools/",
            b"/f/pools/api/backends/10.0.0.5:80",
            b"",
            &pools(),
        )
        .unwrap();
        assert_eq!((plain.backend.weight, plain.backup), (1, false));
    }

    #[test]
    fn bad_keys_and_values_say_why() {
        for (key, value, expected) in [
            (
                &b"/f/pools/web/backends/10.0.0.5:80"[..],
                &b"{}"[..],
                "no pool \"web\"",
            ),
            (
                b"/f/pools/api/backends/10.0.0.5:80",
                b"{weight",
                "not valid JSON",
            ),
            (
                b"/f/pools/api/backends/10.0.0.5:80",
                br#"{"weight": 0}"#,
                "weight 0",
            ),
            (
                b"/f/pools/api/backends/10.0.0.5:80",
                br#"{"colour": 1}"#,
                "not valid JSON",
            ),
            (b"/f/pools/api/members/10.0.0.5:80", b"{}", "expected"),
        ] {
            let error = parse("/f/pools/", key, value, &pools()).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
