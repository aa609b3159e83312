//! `State`: the immutable snapshot a request is served from, and the `ArcSwap` that holds it.
//!
//! A request loads the snapshot once and keeps that `Arc` to the end, so it sees one config
//! whole even if another is swapped in meanwhile. Nothing in a `State` changes after it is built
//! except the backends' own atomic counters.
//!
//! A new snapshot is built from a config, the runtime registrations (the admin API's overlay) and
//! the snapshot it replaces: a backend present before and after (same pool, same address) is the
//! same `Arc<Backend>`, so its health, ejection, in-flight count and drain state carry over; the
//! pooled upstream client is shared, so its idle connections carry over too.

use std::collections::HashMap;
use std::sync::Arc;

use http::uri::Authority;

use arc_swap::ArcSwap;
use tracing::debug;

use ipnet::IpNet;

use super::mirror::Mirror;
use super::rate_limit::Limiter;
use super::route::{Asked, Route, Settings, Target};
use super::route_table::RouteTable;
use super::split::Split;
use crate::config::{
    self, BackendConfig, Config, Limits, PoolConfig, PriorityRules, RouteConfig, Timeouts,
};
use crate::telemetry::access::AccessLog;
use crate::telemetry::metrics::Outcomes;
use crate::upstream::health::AdminState;
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{self, Backend, Client, Policy, Pool, checker, transitions};

/// The live snapshot, swapped whole.
pub type SharedState = Arc<ArcSwap<State>>;

/// A backend added at runtime (admin API), on top of the file's pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub pool: String,
    pub backend: BackendConfig,
    pub backup: bool,
    /// An operator's drain or disable that travels with the registration (kept in etcd, so that
    /// every instance applies it); `None`: the backend's own state is left as it is.
    pub admin: Option<AdminState>,
}

/// Routes, pools and the settings that apply to a request.
#[derive(Debug)]
pub struct State {
    generation: u64,
    timeouts: Timeouts,
    limits: Limits,
    /// Plain-HTTP requests get a redirect to https.
    redirect_https: bool,
    underscores_in_headers: bool,
    /// Who may name a request's priority.
    priority: PriorityRules,
    /// Peers whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<IpNet>,
    /// `limits` as screening applies them before a request's route is known: the largest
    /// `max_body` of any route (each route's own is applied once it is found).
    screen_limits: Limits,
    pools: Vec<Arc<Pool>>,
    routes: RouteTable,
    client: Client,
    /// Responses to requests that matched no route; shared with the snapshots before and after.
    unrouted: Arc<Outcomes>,
    access_log: Option<AccessLog>,
}

impl State {
    /// Builds the snapshot for `config`, numbered `generation`, with no runtime registrations.
    pub fn build(config: &Config, generation: u64) -> State {
        State::rebuild(config, &[], generation, None)
    }

    /// Builds the snapshot for `config` plus `registered`, reusing what `previous` holds.
    pub fn rebuild(
        config: &Config,
        registered: &[Registered],
        generation: u64,
        previous: Option<&State>,
    ) -> State {
        let client = match previous {
            Some(previous) => previous.client.clone(),
            None => Client::new(config.timeouts.connect),
        };
        client.set_connect_timeout(config.timeouts.connect);
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|pool| {
                let before = previous.and_then(|p| p.pool(&pool.name));
                let extra: Vec<&Registered> =
                    registered.iter().filter(|r| r.pool == pool.name).collect();
                Arc::new(build_pool(pool, &extra, before))
            })
            .collect();
        // A pool's queue is served by its newest snapshot's pool; one the config dropped
        // answers its queued requests now. The snapshot built here is swapped in next.
        for pool in &pools {
            pool.gate().attach(pool);
        }
        let removed = previous
            .into_iter()
            .flat_map(|p| p.pools())
            .filter(|old| config.pool(old.name()).is_none());
        for pool in removed {
            pool.gate().close();
        }
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let before = previous.and_then(|p| {
                    p.routes()
                        .iter()
                        .find(|r| *r.settings().name == *route.name)
                });
                build_route(route, &pools, before)
            })
            .collect();
        let routes = RouteTable::new(routes);
        State {
            generation,
            timeouts: config.timeouts,
            limits: config.limits,
            redirect_https: config.server.redirect_https,
            underscores_in_headers: config.server.underscores_in_headers,
            priority: config.server.priority.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            screen_limits: Limits {
                max_body: config
                    .routes
                    .iter()
                    .filter_map(|route| route.max_body)
                    .fold(config.limits.max_body, u64::max),
                ..config.limits
            },
            pools,
            routes,
            client,
            unrouted: previous
                .map(|p| Arc::clone(&p.unrouted))
                .unwrap_or_default(),
            access_log: None,
        }
    }

    /// Starts the snapshot's background work (active health checks) and wraps it for sharing
    /// between the server and whoever swaps it. Must run inside a tokio runtime.
    pub fn into_shared(self) -> SharedState {
        self.start_background();
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// Starts the background work of every pool: a health checker per backend where checks
    /// are configured, the watcher that reports state changes, and the sweeper of idle
    /// connections; all end by themselves once this snapshot is retired or dropped.
    pub fn start_background(&self) {
        for pool in &self.pools {
            checker::spawn(pool);
            transitions::watch(Arc::downgrade(pool));
            upstream::sweep_idle(Arc::downgrade(pool));
        }
    }

    /// Marks this snapshot as replaced: its background work stops.
    pub fn retire(&self) {
        for pool in &self.pools {
            pool.retire();
        }
    }

    /// How many configs were loaded before this one, plus one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limits screening applies, before a request's route is known.
    pub fn screen_limits(&self) -> &Limits {
        &self.screen_limits
    }

    /// Peers whose `X-Forwarded-For` names the client.
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// Routes in config order.
    pub fn routes(&self) -> &[Route] {
        self.routes.all()
    }

    /// Whether plain-HTTP requests are redirected to https.
    pub fn redirect_https(&self) -> bool {
        self.redirect_https
    }

    /// Whether request headers with an underscore in their name are forwarded.
    pub fn underscores_in_headers(&self) -> bool {
        self.underscores_in_headers
    }

    /// Who may name a request's priority in a header.
    pub fn priority_rules(&self) -> &PriorityRules {
        &self.priority
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|pool| **pool.name() == *name)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The same snapshot writing its requests to `log` (none is written by default).
    pub fn with_access_log(mut self, log: Option<AccessLog>) -> State {
        self.access_log = log;
        self
    }

    /// Where a request's access log line goes, when the access log is on.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// What was answered to requests that matched no route.
    pub fn unrouted(&self) -> &Outcomes {
        &self.unrouted
    }

    /// The first route that takes a request for `host` (port stripped) and `path`, with what
    /// else `asked` says of it.
    pub fn route(&self, host: Option<&str>, path: &str, asked: &Asked<'_>) -> Option<&Route> {
        self.routes.find(host, path, asked)
    }
}

/// A route from its config, pointing at `pools`, keeping the rate limiter and split counts of the
/// route of the same name `before`, when its limit is unchanged.
fn build_route(config: &RouteConfig, pools: &[Arc<Pool>], before: Option<&Route>) -> Route {
    let pool = |name: &str| {
        pools
            .iter()
            .find(|pool| **pool.name() == *name)
            .map(Arc::clone)
            .expect("validation guarantees every route names a defined pool")
    };
    let target = match &config.target {
        config::Target::Pool(name) => Target::Pool(pool(name)),
        config::Target::Split(shares) => {
            let shares = shares.iter().map(|s| (pool(&s.pool), s.weight)).collect();
            let split_before = before.and_then(|b| match b.target() {
                Target::Split(split) => Some(&**split),
                _ => None,
            });
            Target::Split(Box::new(Split::new(shares, split_before)))
        }
        config::Target::Redirect(redirect) => Target::Redirect(Box::new(redirect.clone())),
        config::Target::Respond(respond) => Target::Respond(Box::new(respond.clone())),
    };
    let limiter = config.rate_limit.as_ref().map(|limit| {
        before
            .and_then(|b| b.settings().limiter.as_ref())
            .filter(|kept| kept.config() == limit)
            .map(Arc::clone)
            .unwrap_or_else(|| Arc::new(Limiter::new(limit)))
    });
    let settings = Settings {
        name: config.name.as_str().into(),
        timeout: config.timeout,
        retries: config.retries,
        max_body: config.max_body,
        limiter,
        mirror: config
            .mirror
            .as_ref()
            .map(|m| Mirror::new(pool(&m.pool), m.per_million)),
    };
    Route::new(
        config.host.clone(),
        config.path_prefix.clone(),
        target,
        config.priority,
    )
    .with_conditions(&config.conditions)
    .with_rewrite(config.rewrite.as_ref())
    .with_header_rules(&config.request_headers, &config.response_headers)
    .with_settings(settings)
}

/// A pool from its config and registrations, keeping the backends `before` already had.
fn build_pool(config: &PoolConfig, registered: &[&Registered], before: Option<&Arc<Pool>>) -> Pool {
    let start_healthy = config.health.as_ref().is_none_or(|h| h.start_healthy);
    // By address, so that matching 1,000 backends against 1,000 is not a million comparisons.
    let existing: HashMap<&Authority, &Arc<Backend>> = before
        .map(|pool| pool.members().map(|(b, _)| (b.address(), b)).collect())
        .unwrap_or_default();
    // Built only for a pool with an https:// backend: the roots take a moment to load.
    let any_tls = config
        .backends
        .iter()
        .chain(&config.backups)
        .any(|b| b.tls_name.is_some());
    let client_tls = any_tls.then(|| {
        let ca: Arc<[_]> = config.ca.clone().into();
        (upstream::tls::client_config(&ca, config.http2), ca)
    });
    let tls_for = |spec: &BackendConfig| {
        let name = spec.tls_name.as_deref()?;
        let (client, ca) = client_tls.as_ref()?;
        UpstreamTls::new(Arc::clone(client), Arc::clone(ca), name).map(Arc::new)
    };
    let backend = |spec: &BackendConfig| -> Arc<Backend> {
        let Some(existing) = existing.get(&spec.address) else {
            let backend = Backend::new(spec.address.clone(), spec.weight, start_healthy);
            backend.set_tls(tls_for(spec));
            backend.set_http2(config.http2);
            return backend;
        };
        existing.set_weight(spec.weight);
        existing.set_tls(tls_for(spec));
        existing.set_http2(config.http2);
        if config.health.is_none() {
            // No checker will ever revise an old verdict: do not keep one.
            existing.health().clear_probe_verdict();
        }
        Arc::clone(existing)
    };
    let mut primaries: Vec<Arc<Backend>> = config.backends.iter().map(backend).collect();
    let mut backups: Vec<Arc<Backend>> = config.backups.iter().map(backend).collect();
    let mut seen: std::collections::HashSet<&Authority> = config
        .backends
        .iter()
        .chain(&config.backups)
        .map(|b| &b.address)
        .collect();
    for registration in registered {
        let address = &registration.backend.address;
        // The file's own, or one an earlier source gave (the admin API's before DNS's).
        if !seen.insert(address) {
            debug!(pool = %config.name, backend = %address, "backend given twice: the first stays");
            continue;
        }
        let tier = if registration.backup {
            &mut backups
        } else {
            &mut primaries
        };
        let member = backend(&registration.backend);
        if let Some(admin) = registration.admin
            && member.health().admin() != admin
        {
            member.health().set_admin(admin);
        }
        tier.push(member);
    }
    let policy = Policy {
        retries: config.retries,
        fail_open: config.fail_open,
        balance_factor: config.hash_balance_factor,
        hash_key: config.hash_key.clone(),
        sticky: config.sticky.clone(),
        outlier: config.outlier,
        health: config.health.clone(),
        overload: config.overload,
    };
    let pool = Pool::new(&config.name, config.strategy, primaries, backups, policy);
    match before {
        Some(before) => pool.succeeding(before),
        None => pool,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::telemetry::metrics::BackendState;
    use crate::upstream::health::AdminState;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    const TWO: &str =
        "[pool.web]\nbackends = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\" }]\n";

    #[test]
    fn kept_backends_are_the_same_objects_with_their_state() {
        let first = State::build(&config(TWO), 1);
        let kept = Arc::clone(first.pools[0].members().next().unwrap().0);
        kept.health().set_admin(AdminState::Draining);
        let _request = kept.start_request();

        let changed = TWO
            .replace("127.0.0.1:2\" }", "127.0.0.1:3\", weight = 5 }")
            .replace("127.0.0.1:1\" }", "127.0.0.1:1\", weight = 4 }");
        let second = State::rebuild(&config(&changed), &[], 2, Some(&first));
        let (same, _) = second.pools[0]
            .find(&"127.0.0.1:1".parse().unwrap())
            .unwrap();
        assert!(
            Arc::ptr_eq(same, &kept),
            "same pool, same address: same backend"
        );
        assert_eq!(same.health().state(), BackendState::Draining);
        assert_eq!(same.in_flight(), 1);
        assert_eq!(same.weight(), 4, "a weight change applies");
        assert!(
            second.pools[0]
                .find(&"127.0.0.1:2".parse().unwrap())
                .is_none()
        );
        let (added, _) = second.pools[0]
            .find(&"127.0.0.1:3".parse().unwrap())
            .unwrap();
        assert_eq!(added.in_flight(), 0);
    }

    #[test]
    fn registrations_join_their_pool_unless_the_file_has_the_address() {
        let registered = [
            Registered {
                pool: "web".into(),
                backend: BackendConfig {
                    address: "127.0.0.1:9".parse().unwrap(),
                    weight: 2,
                    tls_name: None,
                },
                backup: true,
                admin: None,
            },
            Registered {
                pool: "web".into(),
                backend: BackendConfig {
                    address: "127.0.0.1:1".parse().unwrap(),
                    weight: 7,
                    tls_name: None,
                },
                backup: false,
                admin: None,
            },
        ];
        let state = State::rebuild(&config(TWO), &registered, 1, None);
        let members: Vec<_> = state.pools[0]
            .members()
            .map(|(b, role)| (b.address().to_string(), b.weight(), role.name()))
            .collect();
        assert_eq!(
            members,
            [
                ("127.0.0.1:1".to_owned(), 1, "primary"),
                ("127.0.0.1:2".to_owned(), 1, "primary"),
                ("127.0.0.1:9".to_owned(), 2, "backup"),
            ]
        );
    }
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing (proptest): the route a snapshot finds is the one a plain reading of the
    //! route list gives.

    use std::path::Path;

    use proptest::prelude::*;

    use super::State;
    use crate::config::{Config, HostPattern};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The first route whose host and prefix match takes the request, as a plain reading of
        /// the route list would say.
        #[test]
        fn routing_takes_the_first_matching_route(
            routes in prop::collection::vec((prop::option::of(prop::sample::select(vec!["a.test", "*.test", "b.test"])), prop::option::of(prop::sample::select(vec!["/", "/api", "/api/v1", "/static"]))), 1..6),
            host in prop::sample::select(vec!["a.test", "b.test", "x.a.test", "other", "A.TEST"]),
            path in prop::sample::select(vec!["/", "/api", "/api/v1/users", "/apix", "/static/x", "/none"]),
        ) {
            let mut text = String::from("[pool.p0]\nbackends = [{ address = \"127.0.0.1:1\" }]\n");
            for i in 0..routes.len() {
                text += &format!("[pool.p{}]\nbackends = [{{ address = \"127.0.0.1:{}\" }}]\n", i + 1, i + 2);
            }
            for (i, (route_host, prefix)) in routes.iter().enumerate() {
                text += "[[route]]\n";
                if let Some(h) = route_host { text += &format!("host = \"{h}\"\n"); }
                if let Some(p) = prefix { text += &format!("path_prefix = \"{p}\"\n"); }
                text += &format!("pool = \"p{}\"\n", i + 1);
            }
            let config = Config::parse(&text, Path::new("routes.toml")).unwrap();
            let state = State::build(&config, 1);
            let expected = routes.iter().position(|(route_host, prefix)| {
                let host_ok = route_host.is_none_or(|h| HostPattern::parse(h).unwrap().matches(host));
                let path_ok = prefix.is_none_or(|p| path.starts_with(p));
                host_ok && path_ok
            });
            let headers = http::HeaderMap::new();
            let asked = super::Asked { method: &http::Method::GET, headers: &headers, query: None };
            let got = state.route(Some(host), path, &asked).map(|r| match r.target() {
                super::Target::Pool(pool) => pool.name().to_string(),
                _ => unreachable!("every route names a pool"),
            });
            prop_assert_eq!(got, expected.map(|i| format!("p{}", i + 1)));
        }
    }
}
