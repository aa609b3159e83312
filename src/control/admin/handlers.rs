//! The admin endpoints that act: reload, register, deregister, drain, disable, enable, heartbeat.

use std::time::Duration;

use crate::body::ClientBody;
use http::StatusCode;
use http::uri::Authority;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::json;

use super::{Reply, error, json_reply, no_content, views};
use crate::config::{MAX_WEIGHT, parse_backend_address, parse_duration};
use crate::control::discovery::Source;
use crate::control::registry::Entry;
use crate::control::{Control, ReloadError};
use crate::upstream::Pool;
use crate::upstream::health::AdminState;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// `POST /reload`
pub async fn reload(control: &Control) -> Reply {
    match control.reload().await {
        Ok(generation) => json_reply(StatusCode::OK, json!({ "generation": generation })),
        Err(error @ ReloadError::Config(_)) => self::error(StatusCode::UNPROCESSABLE_ENTITY, error),
        Err(error @ (ReloadError::Listen(_) | ReloadError::AccessLog(_))) => {
            self::error(StatusCode::UNPROCESSABLE_ENTITY, error)
        }
    }
}

/// `GET /pools/{pool}/backends`
pub fn list(control: &Control, pool: &str, available_only: bool) -> Reply {
    let state = control.state().load_full();
    match state.pool(pool) {
        Some(pool) => json_reply(
            StatusCode::OK,
            serde_json::Value::Array(views::backends(control, pool, available_only)),
        ),
        None => unknown_pool(pool),
    }
}

/// `GET /pools/{pool}/backends/{address}`
pub fn show(control: &Control, pool: &str, address: &str) -> Reply {
    with_backend(control, pool, address, |_| {})
}

/// `POST /pools/{pool}/backends/{address}/drain`, `.../disable` and `.../enable`
pub async fn set_admin(control: &Control, pool: &str, address: &str, admin: AdminState) -> Reply {
    // A registration shared through etcd carries its state there, for every instance.
    if let (Some(shared), Ok(parsed)) = (control.shared(), parse_address(address))
        && control.discovery().source_of(pool, &parsed) == Some(Source::Etcd)
    {
        return super::shared::set_admin(control, shared, pool, &parsed, admin).await;
    }
    with_backend(control, pool, address, |backend| {
        backend.health().set_admin(admin);
        let why = match admin {
            AdminState::Enabled => "enabled by an operator",
            AdminState::Draining => "drained by an operator",
            AdminState::Disabled => "disabled by an operator",
        };
        crate::upstream::transitions::report(pool, backend, why);
    })
}

/// `PUT /pools/{pool}/backends/{address}/heartbeat`
pub async fn heartbeat(control: &Control, pool: &str, address: &str) -> Reply {
    let address = match parse_address(address) {
        Ok(address) => address,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Some(shared) = control.shared() {
        return super::shared::heartbeat(control, shared, pool, &address).await;
    }
    match control.registry().heartbeat(pool, &address) {
        Ok(entry) => {
            let reply = with_backend(control, pool, address.as_str(), |_| {});
            if reply.status() == StatusCode::OK {
                return reply;
            }
            // A registration whose pool a reload removed: renewed, but serving nothing.
            let expires = entry
                .expires_at
                .map(|at| humantime::format_rfc3339_millis(at).to_string());
            json_reply(
                StatusCode::OK,
                json!({ "address": entry.address.as_str(), "source": "api", "dormant": true, "lease_expires_at": expires }),
            )
        }
        Err(error) => self::error(StatusCode::NOT_FOUND, error),
    }
}

/// The body of `POST /pools/{pool}/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    address: String,
    weight: Option<i64>,
    #[serde(default)]
    backup: bool,
    ttl: Option<String>,
}

/// `POST /pools/{pool}/backends`
pub async fn register(control: &Control, pool: &str, body: ClientBody) -> Reply {
    let config = control.config();
    let Some(pool_config) = config.pool(pool) else {
        return unknown_pool(pool);
    };
    let limit = control.state().load().timeouts().request_body_idle;
    let body = match tokio::time::timeout(limit, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {err}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {limit:?}"),
            );
        }
    };
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(registration) => registration,
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {err}")),
    };
    let entry = match entry(pool, registration) {
        Ok(entry) => entry,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let in_file = pool_config
        .backends
        .iter()
        .chain(&pool_config.backups)
        .any(|b| b.address == entry.address);
    if in_file {
        return error(
            StatusCode::CONFLICT,
            format!(
                "backend {} is already in pool \"{pool}\" by the config file",
                entry.address
            ),
        );
    }
    if let Some(shared) = control.shared() {
        return super::shared::register(control, shared, entry).await;
    }
    let address = entry.address.clone();
    let created = control.register(entry).await;
    let mut reply = with_backend(control, pool, address.as_str(), |_| {});
    if created && reply.status() == StatusCode::OK {
        *reply.status_mut() = StatusCode::CREATED;
    }
    reply
}

/// A registration's fields, checked as the config file's would be.
fn entry(pool: &str, registration: Registration) -> Result<Entry, String> {
    let address = parse_backend_address(&registration.address)
        .map_err(|reason| format!("address {reason}"))?;
    let weight = match registration.weight {
        None => 1,
        Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(&w) => w as u32,
        Some(w) => return Err(format!("weight {w} is invalid, expected 1 to {MAX_WEIGHT}")),
    };
    let ttl = match registration.ttl {
        None => None,
        Some(text) => match parse_duration(&text) {
            Ok(ttl) if ttl > Duration::ZERO => Some(ttl),
            Ok(_) => return Err("ttl must be greater than zero".to_owned()),
            Err(reason) => return Err(format!("ttl: {reason}")),
        },
    };
    Ok(Entry {
        pool: pool.to_owned(),
        address,
        weight,
        backup: registration.backup,
        ttl,
        expires_at: None,
    })
}

/// `DELETE /pools/{pool}/backends/{address}`
pub async fn deregister(control: &Control, pool: &str, address: &str) -> Reply {
    let address = match parse_address(address) {
        Ok(address) => address,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let config = control.config();
    let in_file = config.pool(pool).map(|p| {
        p.backends
            .iter()
            .chain(&p.backups)
            .any(|b| b.address == address)
    });
    let deregistered = match control.shared() {
        Some(shared) => match super::shared::deregister(control, shared, pool, &address).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::control::registry::RegistryError::NotRegistered {
                pool: pool.to_owned(),
                address: address.to_string(),
            }),
            Err(reply) => return reply,
        },
        None => control.deregister(pool, &address).await,
    };
    match deregistered {
        Ok(()) => no_content(),
        Err(_) if in_file == Some(true) => error(
            StatusCode::CONFLICT,
            format!(
                "backend {address} comes from the config file: drain it, or remove it from the file"
            ),
        ),
        Err(_) if in_file.is_none() => unknown_pool(pool),
        Err(error) => self::error(StatusCode::NOT_FOUND, error),
    }
}

/// Runs `act` on the backend at `address` in `pool` and answers with its view.
fn with_backend(
    control: &Control,
    pool: &str,
    address: &str,
    act: impl FnOnce(&crate::upstream::Backend),
) -> Reply {
    let address = match parse_address(address) {
        Ok(address) => address,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let state = control.state().load_full();
    let Some(found) = state.pool(pool) else {
        return unknown_pool(pool);
    };
    let found: &Pool = found;
    match found.find(&address) {
        Some((backend, role)) => {
            act(backend);
            json_reply(
                StatusCode::OK,
                views::backend(control, found, backend, role),
            )
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no backend {address} in pool \"{pool}\""),
        ),
    }
}

/// A backend address from a path segment, or why it is not one.
fn parse_address(text: &str) -> Result<Authority, String> {
    parse_backend_address(text).map_err(|reason| format!("address {reason}"))
}

fn unknown_pool(pool: &str) -> Reply {
    error(StatusCode::NOT_FOUND, format!("no pool \"{pool}\""))
}

/// `GET /pools/{pool}/route?key=K[&n=N]`: a key's preference list (consistent hashing), and the
/// backend that would serve it now.
pub fn route(control: &Control, pool: &str, query: &str) -> Reply {
    let state = control.state().load_full();
    let Some(found) = state.pool(pool) else {
        return unknown_pool(pool);
    };
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| crate::upstream::affinity::percent_decode(value))
    };
    let Some(key) = param("key") else {
        return error(StatusCode::BAD_REQUEST, "give the key: ?key=...");
    };
    let n = match param("n").map(|n| n.parse::<usize>()) {
        None => 3,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "n must be 1 to 100"),
    };
    let Some(hash) = crate::upstream::affinity::key_hash(&key) else {
        return error(
            StatusCode::BAD_REQUEST,
            "an empty key places nothing: requests carrying one are spread at random",
        );
    };
    let Some(replicas) = found.replicas_of_hash(hash, n) else {
        return error(
            StatusCode::CONFLICT,
            format!("pool \"{pool}\" does not use consistent_hash"),
        );
    };
    let serving = found.pick(&[], Some(hash)).map(|b| b.address().to_string());
    json_reply(
        StatusCode::OK,
        json!({
            "pool": pool,
            "key": key,
            "backend": serving,
            "replicas": replicas.iter().map(|b| json!({
                "address": b.address().as_str(),
                "health": b.health().state().name(),
            })).collect::<Vec<_>>(),
        }),
    )
}
