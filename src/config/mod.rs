//! Configuration: the TOML file an operator writes, turned into a checked, typed [`Config`].
//!
//! - `wire.rs`: serde types that mirror the file, unknown keys rejected, spans kept.
//! - `validate.rs`: wire types to [`Config`], every rule checked, each fault named by line.
//! - `units.rs`: durations such as `"2s"`.
//! - `error.rs`: [`ConfigError`], which names file, line and key.
//! - `strategy.rs`, `host.rs`, `affinity.rs`: the value types a config holds that the rest of
//!   the proxy acts on ([`Strategy`], [`HostPattern`], [`HashKey`] and [`Sticky`]), parsed here.
//! - `discovery.rs`: `[pool.NAME.dns]` ([`DnsDiscovery`]).
//! - `header_rules.rs`: a route's header changes and their value templates ([`HeaderRules`]).
//! - `actions.rs`: what a route does to a request's path ([`PathRewrite`]).
//! - `matching.rs`: a route's conditions besides host and prefix ([`Conditions`]).
//! - `targets.rs`: where a route sends requests: a pool, a split, a redirect or a response of
//!   its own ([`Target`]), and its `mirror` ([`Mirror`]).
//! - `rate_limit.rs`: a route's `rate_limit` ([`RateLimit`]) and `[server] trusted_proxies`.
//! - `overload.rs`: `[pool.NAME.overload]`, a route's `priority` and who may name one
//!   ([`Overload`], [`Priority`], [`PriorityRules`]).
//! - `certs.rs`: a certificate chain and its key read from PEM files and checked to match.
//!
//! A `Config` is plain data: building the live snapshot from it is `proxy/state.rs`.

mod actions;
mod affinity;
mod certs;
mod discovery;
mod error;
mod header_rules;
mod host;
mod limits;
mod matching;
mod overload;
mod pools;
mod rate_limit;
mod strategy;
mod targets;
mod tls;
mod units;
mod validate;
pub use validate::parse_backend_address;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;

pub use actions::PathRewrite;
pub use affinity::{HashKey, SameSite, Sticky};
pub use discovery::{DnsDiscovery, DnsQuery, SharedRegistry};
pub use error::ConfigError;
pub use header_rules::{HeaderRules, Part, Template};
pub use host::HostPattern;
pub use matching::Conditions;
pub use overload::{Overload, Priority, PriorityRules};
pub use rate_limit::{LimitKey, RateLimit};
pub use strategy::Strategy;
pub use targets::{Mirror, Redirect, Respond, Target};
pub use units::parse_duration;

/// Default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `[server] shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default `[timeouts] connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `[timeouts] response`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest backend `weight`.
pub const MAX_WEIGHT: u32 = 1000;
/// Default `[pool.NAME] retries`.
pub const DEFAULT_RETRIES: u32 = 2;
/// Largest `retries`.
pub const MAX_RETRIES: u32 = 10;

/// A complete, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    pub server: Server,
    pub timeouts: Timeouts,
    /// Pools in name order.
    pub pools: Vec<PoolConfig>,
    /// Routes in file order; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// The admin API; `None` when off.
    pub admin: Option<Admin>,
    pub log: Log,
    pub limits: Limits,
    /// TLS termination; `None` when off.
    pub tls: Option<TlsConfig>,
    /// Registrations shared through etcd; `None`: kept by this instance (`[admin] state_file`).
    pub registry: Option<SharedRegistry>,
}

/// `[tls]`
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub min_version: TlsVersion,
    /// In config order; the first also serves clients without SNI.
    pub certificates: Vec<Certificate>,
}

impl PartialEq for TlsConfig {
    /// Equal when the same files are configured the same way (their contents may differ).
    fn eq(&self, other: &TlsConfig) -> bool {
        self.listen == other.listen
            && self.min_version == other.min_version
            && self.certificates.len() == other.certificates.len()
            && self
                .certificates
                .iter()
                .zip(&other.certificates)
                .all(|(a, b)| a.hosts == b.hosts && a.cert == b.cert && a.key == b.key)
    }
}

/// `[tls] min_version`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// One `[[tls.certificates]]`, loaded.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Names it serves (SNI); may be empty for a default-only certificate.
    pub hosts: Vec<HostPattern>,
    /// Where the chain and key were read from (resolved against the config file's directory).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The chain and key, checked to match.
    pub key_pair: std::sync::Arc<rustls::sign::CertifiedKey>,
}

/// `[log]`: the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Line format; `None` when the access log is off.
    pub access: Option<AccessFormat>,
    pub access_path: AccessPath,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            access: Some(AccessFormat::Json),
            access_path: AccessPath::Stdout,
        }
    }
}

/// `[log] access`: one line per request as...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// a JSON object (the default);
    Json,
    /// the NCSA Common Log Format, as Apache and nginx write it.
    Common,
}

/// `[log] access_path`: where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPath {
    /// `"-"`: standard output.
    Stdout,
    /// A file, appended to (created if missing), reopened on SIGUSR1.
    File(PathBuf),
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// When set, every admin request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Where runtime registrations are kept across restarts.
    pub state_file: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// Runtime worker threads; `None` means one per available core.
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Answer plain-HTTP requests with a 308 to https (needs `[tls]`).
    pub redirect_https: bool,
    /// Forward request headers whose names have an underscore (nginx's
    /// `underscores_in_headers`); dropped by default.
    pub underscores_in_headers: bool,
    /// Who may name a request's priority in a header (`priority_header`, `priority_trusted`).
    pub priority: PriorityRules,
    /// Peers whose `X-Forwarded-For` names the client (`trusted_proxies`); empty: none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[timeouts]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// From the request sent to the response head received.
    pub response: Duration,
    /// The whole request head must arrive within this from its first byte (slowloris): 408.
    pub request_header: Duration,
    /// A request body that sends no byte for this long is aborted.
    pub request_body_idle: Duration,
    /// A response body that sends no byte for this long is cut (nginx's `proxy_read_timeout`).
    pub response_body_idle: Duration,
    /// A keep-alive client connection idle this long is closed.
    pub client_idle: Duration,
    /// A deadline for the whole request up to its response head; `None` when off.
    pub request: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response: DEFAULT_RESPONSE_TIMEOUT,
            request_header: Duration::from_secs(10),
            request_body_idle: Duration::from_secs(30),
            response_body_idle: Duration::from_secs(60),
            client_idle: Duration::from_secs(60),
            request: None,
        }
    }
}

/// `[limits]`: what one client may make the proxy hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers): 431 beyond.
    pub max_header_bytes: usize,
    /// Most request headers: 431 beyond.
    pub max_headers: usize,
    /// Longest request target: 414 beyond.
    pub max_uri_bytes: usize,
    /// Largest request body, declared or streamed: 413 beyond.
    pub max_body: u64,
    /// Most client connections open at once; beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Most client connections from one IP address; `None` when off.
    pub max_connections_per_ip: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_uri_bytes: 8 << 10,
            max_body: 100 << 20,
            max_connections: 20_000,
            max_connections_per_ip: None,
        }
    }
}

/// `[pool.NAME]`
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub strategy: Strategy,
    /// Primaries: the backends normally used.
    pub backends: Vec<BackendConfig>,
    /// Used only while no primary is available.
    pub backups: Vec<BackendConfig>,
    /// Extra attempts on other backends after a failure.
    pub retries: u32,
    /// With nothing available, spread over every backend instead of answering 503.
    pub fail_open: bool,
    /// Active health checks; `None` when off.
    pub health: Option<HealthCheck>,
    pub outlier: Outlier,
    /// Where a consistent-hash pool finds a request's key.
    pub hash_key: Option<HashKey>,
    /// Bounded load for consistent hashing.
    pub hash_balance_factor: Option<f64>,
    /// Sticky sessions.
    pub sticky: Option<Sticky>,
    /// Extra roots trusted for `https://` backends (PEM), besides the public web PKI roots.
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `protocol = "http2"`: backends are spoken to in HTTP/2 (h2 by ALPN over TLS, or h2c
    /// prior knowledge).
    pub http2: bool,
    /// Per-backend limits and the pool's queue (`[pool.NAME.overload]`).
    pub overload: Overload,
    /// Backends found in DNS (`[pool.NAME.dns]`), besides `backends` and registrations.
    pub dns: Option<DnsDiscovery>,
}

/// `[pool.NAME.health]`: active checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path and query of the probe request.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that mark a down backend up.
    pub healthy_after: u32,
    /// Consecutive failures that mark an up backend down.
    pub unhealthy_after: u32,
    pub expect: ExpectStatus,
    /// Whether backends start healthy (`start = "healthy"`, the default) or must pass first.
    pub start_healthy: bool,
}

/// Which probe statuses count as a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectStatus {
    /// `"2xx"`: every status whose first digit is this.
    Class(u16),
    /// `[200, 204]`
    Codes(Vec<u16>),
}

impl ExpectStatus {
    pub fn matches(&self, status: http::StatusCode) -> bool {
        match self {
            ExpectStatus::Class(class) => status.as_u16() / 100 == *class,
            ExpectStatus::Codes(codes) => codes.contains(&status.as_u16()),
        }
    }
}

/// `[pool.NAME.outlier]`: passive ejection of backends that fail real requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Failures in a row that eject a backend; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// First ejection period; each repeat ejection doubles it.
    pub base_ejection: Duration,
    /// Cap on the doubled period.
    pub max_ejection: Duration,
    /// Never eject more than this share of a tier's backends.
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Outlier {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// `host:port`
    pub address: Authority,
    pub weight: u32,
    /// For an `https://` backend: the name its certificate is checked against (and sent as SNI).
    pub tls_name: Option<String>,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub host: Option<HostPattern>,
    pub path_prefix: Option<String>,
    /// Exact path, path regex, methods, headers, query: all must hold.
    pub conditions: Conditions,
    /// `strip_prefix` or `rewrite`: the path the backend receives.
    pub rewrite: Option<PathRewrite>,
    /// `request_headers`: changes to the request the backend receives.
    pub request_headers: HeaderRules,
    /// `response_headers`: changes to the backend's response the client receives.
    pub response_headers: HeaderRules,
    /// `pool`, `split`, `redirect` or `respond`.
    pub target: Target,
    /// `mirror`: a share of requests copied to another pool.
    pub mirror: Option<Mirror>,
    /// `rate_limit`: requests per client.
    pub rate_limit: Option<RateLimit>,
    /// `timeout`: this route's `[timeouts] request`.
    pub timeout: Option<Duration>,
    /// `retries`: this route's, instead of its pool's.
    pub retries: Option<u32>,
    /// `max_body`: this route's `[limits] max_body`.
    pub max_body: Option<u64>,
    pub priority: Priority,
    /// `name`, or `route-N` (N counting from 1 in file order): metrics and rate limit headers
    /// name the route by it.
    pub name: String,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::whole_file(path, format!("cannot read: {err}")))?;
        Config::parse(&text, path)
    }

    /// Validates `text`, naming `path` in any error.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::validate(text, path)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|pool| pool.name == name)
    }
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing (proptest, a fixed number of cases each): any text is a valid config or
    //! an error naming the file, never a panic. The one failure found so far is kept as a unit
    //! test of its own (`validate.rs`).

    use std::path::Path;

    use proptest::prelude::*;

    use super::Config;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any text is a valid config or an error naming the file; never a panic.
        #[test]
        fn config_parse_never_panics(text in "\\PC{0,300}") {
            if let Err(error) = Config::parse(&text, Path::new("fuzz.toml")) {
                prop_assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
            }
        }

        /// Config-shaped text: tables and keys the proxy knows, values of any kind.
        #[test]
        fn config_shaped_text_never_panics(
            lines in prop::collection::vec(
                prop_oneof![
                    Just("[pool.web]".to_owned()),
                    Just("[pool.web.health]".to_owned()),
                    Just("[pool.web.outlier]".to_owned()),
                    Just("[[route]]".to_owned()),
                    Just("[limits]".to_owned()),
                    Just("[timeouts]".to_owned()),
                    Just("[log]".to_owned()),
                    Just("[admin]".to_owned()),
                    (
                        prop::sample::select(vec![
                            "strategy", "backends", "retries", "weight", "address", "pool", "host",
                            "path_prefix", "max_body", "request_header", "access", "listen",
                            "hash_key", "interval", "consecutive_failures", "fail_open",
                        ]),
                        prop_oneof![
                            "-?[0-9]{1,12}".prop_map(|v| v),
                            "\"[ -~&&[^\"\\\\]]{0,20}\"".prop_map(|v| v),
                            Just("[{ address = \"127.0.0.1:1\", weight = 0 }]".to_owned()),
                            Just("true".to_owned()),
                        ],
                    )
                        .prop_map(|(key, value)| format!("{key} = {value}")),
                ],
                0..16,
            )
        ) {
            let text = lines.join("\n");
            if let Err(error) = Config::parse(&text, Path::new("fuzz.toml")) {
                prop_assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
            }
        }
    }
}
