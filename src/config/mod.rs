//! Configuration: the TOML file an operator writes, turned into a checked, typed [`Config`].
//!
//! - `wire.rs`: serde types that mirror the file, unknown keys rejected, spans kept.
//! - `validate.rs`: wire types to [`Config`], every rule checked, each fault named by line.
//! - `units.rs`: durations such as `"2s"`.
//! - `error.rs`: [`ConfigError`], which names file, line and key.
//!
//! A `Config` is plain data: building the live snapshot from it is `state.rs`.

mod error;
mod units;
mod validate;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;

pub use error::ConfigError;
pub use units::parse_duration;

use crate::balance::Strategy;
use crate::route::HostPattern;

/// Default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `[timeouts] connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `[timeouts] response`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest backend `weight`.
pub const MAX_WEIGHT: u32 = 1000;

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
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// Runtime worker threads; `None` means one per available core.
    pub workers: Option<usize>,
}

/// `[timeouts]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// From the request sent to the response head received.
    pub response: Duration,
}

/// `[pool.NAME]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub strategy: Strategy,
    pub backends: Vec<BackendConfig>,
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// `host:port`
    pub address: Authority,
    pub weight: u32,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub host: Option<HostPattern>,
    pub path_prefix: Option<String>,
    pub pool: String,
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
