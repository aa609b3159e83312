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
use crate::control::discovery::Source;
use crate::control::{ConfigStatus, Control, RegistryChange};
use crate::proxy::route::{Route, Target};
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
        "registry": registry(control),
        "pools": pools,
        "routes": state.routes().iter().map(route).collect::<Vec<_>>(),
    })
}

/// A route: its name, what serves it and with what counts, its rate limit and mirror.
fn route(route: &Route) -> Value {
    let settings = route.settings();
    let mut view = match route.target() {
        Target::Pool(pool) => json!({ "pool": &**pool.name() }),
        Target::Split(split) => json!({
            "split": split
                .counts()
                .map(|(pool, weight, requests)| {
                    json!({ "pool": pool, "weight": weight, "requests": requests })
                })
                .collect::<Vec<_>>(),
        }),
        Target::Redirect(redirect) => json!({ "redirect": redirect.status.as_u16() }),
        Target::Respond(respond) => json!({ "respond": respond.status.as_u16() }),
    };
    view["name"] = json!(&*settings.name);
    if let Some(limiter) = &settings.limiter {
        let limit = limiter.config();
        view["rate_limit"] = json!({
            "rate": format!("{}/{}s", limit.count, limit.per.as_secs_f64()),
            "burst": limit.burst,
            "max_keys": limit.max_keys,
            "clients": limiter.clients(),
            "refused": limiter.refused(),
        });
    }
    if let Some(mirror) = &settings.mirror {
        view["mirror"] = json!({
            "pool": &**mirror.pool().name(),
            "percent": f64::from(mirror.per_million()) / 10_000.0,
        });
    }
    view
}

/// Where runtime registrations live: etcd (and how it stands), or this instance.
fn registry(control: &Control) -> Value {
    match control.shared() {
        Some(shared) => {
            let settings = shared.settings();
            let standing = shared.standing();
            json!({
                "kind": "etcd",
                "endpoints": settings.etcd.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "prefix": settings.prefix,
                "state": standing.state,
                "since": rfc3339(standing.since),
                "last_error": standing.error,
            })
        }
        None => json!({
            "kind": "local",
            "state_file": control.config().admin.as_ref()
                .and_then(|a| a.state_file.as_ref())
                .map(|p| p.display().to_string()),
        }),
    }
}

/// One pool: its strategy, its overload settings and queue, and every member.
pub fn pool(control: &Control, pool: &Pool) -> Value {
    json!({
        "name": pool.name().as_ref(),
        "strategy": pool.strategy().name(),
        "overload": overload(pool),
        "dns": dns(control, pool),
        "backends": backends(control, pool, false),
    })
}

/// How the pool's DNS discovery is doing; `null` without `[pool.NAME.dns]`.
fn dns(control: &Control, pool: &Pool) -> Value {
    let config = control.config();
    let Some(settings) = config.pool(pool.name()).and_then(|p| p.dns.as_ref()) else {
        return Value::Null;
    };
    let standing = control.discovery().standing(pool.name(), Source::Dns);
    json!({
        "name": settings.query.name(),
        "state": standing.as_ref().map_or("starting", |s| s.state),
        "since": standing.as_ref().map(|s| rfc3339(s.since)),
        "last_error": standing.and_then(|s| s.error),
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
        "source": source(control, pool, backend),
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

/// Per pool: how many of its backends come from the file, the admin API and DNS.
fn discovered(control: &Control) -> Vec<(String, &'static str, u64)> {
    let state = control.state().load_full();
    let mut counts = Vec::new();
    for pool in state.pools() {
        let mut by_source = [("file", 0), ("api", 0), ("dns", 0), ("etcd", 0)];
        for (backend, _) in pool.members() {
            let source = source(control, pool, backend);
            if let Some(count) = by_source.iter_mut().find(|(name, _)| *name == source) {
                count.1 += 1;
            }
        }
        counts.extend(
            by_source
                .into_iter()
                .map(|(source, count)| (pool.name().to_string(), source, count)),
        );
    }
    counts
}

/// Where a member came from: `api` (a registration), `dns`, or `file`.
fn source(control: &Control, pool: &Pool, backend: &Backend) -> &'static str {
    if control
        .registry()
        .get(pool.name(), backend.address())
        .is_some()
    {
        return "api";
    }
    match control
        .discovery()
        .source_of(pool.name(), backend.address())
    {
        Some(source) => source.name(),
        None => "file",
    }
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
        discovered: discovered(control),
        discovery_errors: control
            .discovery()
            .errors_by_pool()
            .into_iter()
            .map(|(pool, source, count)| (pool, source.name(), count))
            .collect(),
    };
    let text = exposition::render(control.state().load_full(), process);
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(exposition::CONTENT_TYPE),
    );
    reply
}
