//! Shared helpers for the integration tests: real backends, the real proxy, clients.
#![allow(dead_code, unused_imports)] // each test file uses a different subset

pub mod admin;
pub mod backend;
pub mod client;
pub mod dns;
pub mod etcd;
pub mod load;
pub mod metrics;
pub mod proxy;
pub mod raw_client;
pub mod recorder;
pub mod tls;
pub mod wire;

pub use admin::{AdminReply, admin};
pub use backend::{
    Backend, PatternBody, blackhole, body_stalling_backend, check_pattern,
    delayed_scripted_backend, interim_flood_backend, one_request_per_connection_backend,
    pattern_byte, refusing_address, scripted_backend, stalled_backend, upgrade_echo_backend,
};
pub use client::{
    Http, RawReply, Reply, TestBody, answered_by, empty, h2c, raw, raw_exchange, until_served_by,
    wait_until,
};
pub use dns::Dnsmasq;
pub use etcd::{EtcdServer, Relay};
pub use load::Load;
pub use metrics::{Metrics, scrape};
pub use proxy::{BinaryProxy, TempDir, TestProxy, with_listen};

/// The TOML for a pool of these backends: `[pool.NAME]` with `strategy` and unit weights.
pub fn pool(name: &str, strategy: &str, backends: &[&Backend]) -> String {
    let weights: Vec<u32> = backends.iter().map(|_| 1).collect();
    weighted_pool(name, strategy, backends, &weights)
}

/// The TOML for a pool of these backends with these weights.
pub fn weighted_pool(name: &str, strategy: &str, backends: &[&Backend], weights: &[u32]) -> String {
    let entries: Vec<String> = backends
        .iter()
        .zip(weights)
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr))
        .collect();
    format!(
        "[pool.{name}]\nstrategy = \"{strategy}\"\nbackends = [{}]\n",
        entries.join(", ")
    )
}

/// The TOML for a pool of `primaries` with `backups`, unit weights.
pub fn pool_with_backups(
    name: &str,
    strategy: &str,
    primaries: &[&Backend],
    backups: &[&Backend],
) -> String {
    let entries: Vec<String> = backups
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect();
    pool(name, strategy, primaries).replace(
        "backends = [",
        &format!("backups = [{}]\nbackends = [", entries.join(", ")),
    )
}
