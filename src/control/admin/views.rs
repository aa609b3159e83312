//! What the admin API answers reads with: the config's status, pools and backends as JSON, and
//! the metrics.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{Reply, exposition};

use crate::clock;
use crate::config::Priority;
use crate::control::{ConfigStatus, Control, RegistryChange};
use crate::upstream::{Backend, Pool, Role};

/// `GET /status`
pub fn status(control: &Control) -> Value {
    let ConfigStatus {
        path,
        generation,
        loaded_at,
        last_error,
    } = control.status();
    let state = control.state().load_full();
    let pools: serde_json::Map<String, Value> = state
        .pools()
        .iter()
        .map(|pool| (pool.name().to_string(), self::pool(control, pool)))
        .collect();
    json!({
        "config": path.display().to_string(),
        "generation": generation,
        "loaded_at": rfc3339(loaded_at),
        "last_reload_error": last_error,
        "pools": pools,
    })
}

/// One pool: its strategy, its overload settings and queue, and every member.
pub fn pool(control: &Control, pool: &Pool) -> Value {
    json!({
        "name": pool.name().as_ref(),
        "strategy": pool.strategy().name(),
        "overload": overload(pool),
        "backends": backends(control, pool, false),
    })
}

/// A pool's `[overload]` settings and queue depth per priority; `null` without limits.
fn overload(pool: &Pool) -> Value {
    if !pool.limited() {
        return Value::Null;
    }
    let settings = pool.policy().overload;
    let queued: serde_json::Map<String, Value> = Priority::ALL
        .iter()
        .rev()
        .map(|p| (p.name().to_owned(), json!(pool.gate().queued(*p))))
        .collect();
    json!({
        "max_in_flight": settings.max_in_flight,
        "min_in_flight": settings.adaptive.then_some(settings.min_in_flight),
        "adaptive": settings.adaptive,
        "queue": settings.queue,
        "queue_timeout_ms": settings.queue_timeout.as_millis() as u64,
        "queued": queued,
    })
}

/// The members of `pool`; with `available_only`, those that would be picked now.
pub fn backends(control: &Control, pool: &Pool, available_only: bool) -> Vec<Value> {
    pool.members()
        .filter(|(backend, role)| !available_only || pool.would_pick(backend, *role))
        .map(|(backend, role)| self::backend(control, pool, backend, role))
        .collect()
}

/// One backend with its state.
pub fn backend(control: &Control, pool: &Pool, backend: &Backend, role: Role) -> Value {
    let registration = control.registry().get(pool.name(), backend.address());
    let health = backend.health();
    json!({
        "address": backend.address().as_str(),
        "weight": backend.weight(),
        "role": role.name(),
        "source": if registration.is_some() { "api" } else { "file" },
        "health": health.state().name(),
        "available": pool.would_pick(backend, role),
        "ejected_until": health
            .ejected_until_ms()
            .map(|until| rfc3339(SystemTime::now() + clock::until(until))),
        "lease_expires_at": registration.and_then(|r| r.expires_at).map(rfc3339),
        "in_flight": backend.in_flight(),
        "in_flight_limit": match backend.limit().get() {
            0 => Value::Null,
            limit => json!(limit),
        },
        "requests": backend.served(),
    })
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// `GET /metrics`: the Prometheus exposition of the live snapshot, listeners and reloads.
pub async fn metrics(control: &Control) -> Reply {
    let listeners = match control.server() {
        Some(server) => server.listener_stats().await,
        None => Vec::new(),
    };
    let (reloads_succeeded, reloads_failed) = control.reload_counts();
    let registry_changes = RegistryChange::ALL
        .iter()
        .map(|&change| (change.name(), control.registry_changes(change)))
        .collect();
    let process = exposition::Process {
        listeners,
        reloads_succeeded,
        reloads_failed,
        registry_changes,
        access_log_dropped: control.access_log_dropped(),
    };
    let text = exposition::render(control.state().load_full(), process);
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(exposition::CONTENT_TYPE),
    );
    reply
}
