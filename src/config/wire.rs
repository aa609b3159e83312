//! The config file as written: serde types that mirror the TOML one to one.
//!
//! Every table rejects unknown keys, so a typo is an error rather than a silently ignored setting.
//! Values that need checking beyond their TOML type keep their span (`Spanned`) so that
//! `validate.rs` can name the line. Nothing here interprets a value; `validate.rs` does.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub pool: BTreeMap<Spanned<String>, Pool>,
    #[serde(default)]
    pub route: Vec<Spanned<Route>>,
    pub admin: Option<Spanned<Admin>>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub limits: Limits,
    pub tls: Option<Spanned<Tls>>,
    pub registry: Option<Spanned<Registry>>,
}

/// `[registry]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default)]
    pub etcd: Vec<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
}

/// `[tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub listen: Spanned<OneOrMany>,
    pub min_version: Option<Spanned<String>>,
    #[serde(default)]
    pub certificates: Vec<Spanned<Certificate>>,
}

/// One `[[tls.certificates]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_header_bytes: Option<Spanned<String>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_uri_bytes: Option<Spanned<String>>,
    pub max_body: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub access: Option<Spanned<String>>,
    pub access_path: Option<Spanned<String>>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Spanned<String>,
    pub token: Option<Spanned<String>>,
    pub state_file: Option<Spanned<String>>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<Spanned<OneOrMany>>,
    pub workers: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub underscores_in_headers: Option<bool>,
    pub priority_header: Option<Spanned<String>>,
    #[serde(default)]
    pub priority_trusted: Vec<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

/// `[timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<Spanned<String>>,
    pub response: Option<Spanned<String>>,
    pub request_header: Option<Spanned<String>>,
    pub request_body_idle: Option<Spanned<String>>,
    pub response_body_idle: Option<Spanned<String>>,
    pub client_idle: Option<Spanned<String>>,
    pub request: Option<Spanned<String>>,
}

/// `[pool.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub strategy: Option<Spanned<String>>,
    #[serde(default)]
    pub backends: Vec<Spanned<Backend>>,
    #[serde(default)]
    pub backups: Vec<Spanned<Backend>>,
    pub retries: Option<Spanned<i64>>,
    pub fail_open: Option<bool>,
    pub health: Option<Spanned<Health>>,
    #[serde(default)]
    pub outlier: Outlier,
    pub hash_key: Option<Spanned<String>>,
    pub hash_balance_factor: Option<Spanned<f64>>,
    pub sticky: Option<Spanned<Sticky>>,
    pub ca: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub overload: Option<Spanned<Overload>>,
    pub dns: Option<Spanned<Dns>>,
}

/// `[pool.NAME.dns]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub name: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub srv: Option<Spanned<String>>,
    #[serde(default)]
    pub nameservers: Vec<Spanned<String>>,
    pub refresh: Option<Spanned<String>>,
    pub hold: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
}

/// `[pool.NAME.overload]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    pub max_in_flight: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<String>>,
    pub retry_after: Option<Spanned<String>>,
    pub adaptive: Option<Spanned<bool>>,
    pub min_in_flight: Option<Spanned<i64>>,
}

/// `[pool.NAME.sticky]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    pub cookie: Option<Spanned<String>>,
    pub max_age: Option<Spanned<String>>,
    pub secure: Option<bool>,
    pub http_only: Option<bool>,
    pub same_site: Option<Spanned<String>>,
}

/// `[pool.NAME.health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub healthy_after: Option<Spanned<i64>>,
    pub unhealthy_after: Option<Spanned<i64>>,
    pub expect_status: Option<Spanned<ExpectStatus>>,
    pub start: Option<Spanned<String>>,
}

/// `expect_status`: a class such as `"2xx"` or a list of codes.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a status class such as \"2xx\" or a list of codes such as [200, 204]"
)]
pub enum ExpectStatus {
    Class(String),
    Codes(Vec<i64>),
}

/// `[pool.NAME.outlier]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub base_ejection: Option<Spanned<String>>,
    pub max_ejection: Option<Spanned<String>>,
    pub max_ejected_percent: Option<Spanned<i64>>,
}

/// One entry of a pool's `backends` array.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub address: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    pub server_name: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub path_regex: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub query: Option<Spanned<BTreeMap<String, String>>>,
    pub strip_prefix: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<Rewrite>>,
    pub request_headers: Option<Spanned<HeaderRules>>,
    pub response_headers: Option<Spanned<HeaderRules>>,
    pub pool: Option<Spanned<String>>,
    pub split: Option<Spanned<Vec<Spanned<SplitShare>>>>,
    pub redirect: Option<Spanned<Redirect>>,
    pub respond: Option<Spanned<Respond>>,
    pub mirror: Option<Spanned<Mirror>>,
    pub rate_limit: Option<Spanned<RateLimit>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub max_body: Option<Spanned<String>>,
    pub priority: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
}

/// One entry of a route's `split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitShare {
    pub pool: Spanned<String>,
    pub weight: Spanned<i64>,
}

/// A route's `redirect = { to, status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub to: Spanned<String>,
    pub status: Option<Spanned<i64>>,
}

/// A route's `respond = { status, body, content_type }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    pub status: Option<Spanned<i64>>,
    pub body: Option<Spanned<String>>,
    pub content_type: Option<Spanned<String>>,
}

/// A route's `mirror = { pool, percent }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub pool: Spanned<String>,
    pub percent: Option<Spanned<Number>>,
}

/// A route's `rate_limit = { key, rate, burst, max_keys }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub key: Option<Spanned<String>>,
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
    pub max_keys: Option<Spanned<i64>>,
}

/// An integer or a float, where either reads naturally (`percent = 10` or `0.5`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged, expecting = "a number")]
pub enum Number {
    Integer(i64),
    Float(f64),
}

impl Number {
    pub fn value(self) -> f64 {
        match self {
            Number::Integer(n) => n as f64,
            Number::Float(f) => f,
        }
    }
}

/// A route's `request_headers` or `response_headers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A route's `rewrite = { regex, to }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub regex: Spanned<String>,
    pub to: Spanned<String>,
}

/// A string or an array of strings, as `listen` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a string or an array of strings")]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Either::deserialize(deserializer)? {
            Either::One(one) => OneOrMany(vec![one]),
            Either::Many(many) => OneOrMany(many),
        })
    }
}
