//! `[pool.NAME.dns]`: a pool's backends from DNS, resolved again and again by one task per pool.
//!
//! - A and AAAA records of `name`: every address is a backend on `port`, of weight `weight`.
//! - SRV records of `srv`: each target's addresses on its port, with its weight; the lowest
//!   priority value gives the primaries, the next one the backups, any other is ignored.
//!
//! The resolver (hickory) runs with its cache off, so that each round sees fresh answers and
//! TTLs. A round comes every `refresh`, sooner when the records' TTL runs out first (never more
//! often than once a second unless `refresh` itself is shorter).
//!
//! A failed lookup (timeout, SERVFAIL, refused, no route) keeps the last good answer, counts in
//! `fulcrum_discovery_errors_total`, and is logged once until a lookup succeeds again. An
//! authoritative empty answer (NXDOMAIN, or no records of the type) removes the DNS backends only
//! once it has lasted `hold`. A DNS that does not answer at startup leaves the pool without them
//! until it does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Weak;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use super::Source;
use crate::config::{BackendConfig, DnsDiscovery, DnsQuery, MAX_WEIGHT};
use crate::control::{Control, Inner};
use crate::proxy::state::Registered;

/// What one round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Backends by address and weight, valid for `ttl`.
    Found {
        primaries: Vec<(SocketAddr, u32)>,
        backups: Vec<(SocketAddr, u32)>,
        ttl: Duration,
    },
    /// An authoritative answer with no records.
    Empty,
}

/// Where the pool's DNS stands, for logging each change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Answering,
    /// Authoritatively empty since then.
    Empty(Instant),
    Failing,
}

/// Starts the task that keeps `pool`'s DNS backends; it ends when aborted or when the proxy is
/// gone.
pub(in crate::control) fn spawn(
    control: Weak<Inner>,
    pool: &str,
    settings: &DnsDiscovery,
) -> AbortHandle {
    let (pool, settings) = (pool.to_owned(), settings.clone());
    tokio::spawn(async move {
        let resolver = match resolver(&settings) {
            Ok(resolver) => resolver,
            Err(reason) => {
                warn!(%pool, %reason, "DNS discovery cannot start: no resolver");
                return;
            }
        };
        let mut standing = None;
        loop {
            let answer = resolve(&resolver, &settings).await;
            // Held only between lookups: the proxy's end ends this task.
            let Some(inner) = control.upgrade() else {
                return;
            };
            let control = Control { inner };
            let next = match answer {
                Ok(Answer::Found {
                    primaries,
                    backups,
                    ttl,
                }) => {
                    if standing != Some(Standing::Answering) {
                        info!(%pool, name = settings.query.name(), backends = primaries.len() + backups.len(), "DNS answers");
                    }
                    standing = Some(Standing::Answering);
                    control.inner.discovery.stand(&pool, Source::Dns, "answering", None);
                    let found = registrations(&pool, &primaries, &backups);
                    control.discovered(&pool, Source::Dns, found).await;
                    ttl
                }
                Ok(Answer::Empty) => {
                    let since = match standing {
                        Some(Standing::Empty(since)) => since,
                        _ => {
                            warn!(%pool, name = settings.query.name(), hold = ?settings.hold, "DNS has no records for the name: its backends go once that lasts the hold");
                            Instant::now()
                        }
                    };
                    standing = Some(Standing::Empty(since));
                    control.inner.discovery.stand(&pool, Source::Dns, "empty", None);
                    if since.elapsed() >= settings.hold {
                        control.discovered(&pool, Source::Dns, Vec::new()).await;
                    }
                    settings.hold.saturating_sub(since.elapsed())
                }
                Err(reason) => {
                    control.inner.discovery.errors(&pool, Source::Dns).inc();
                    if standing != Some(Standing::Failing) {
                        warn!(%pool, name = settings.query.name(), %reason, "DNS lookup failed: the last answer stays");
                    }
                    standing = Some(Standing::Failing);
                    let discovery = &control.inner.discovery;
                    discovery.stand(&pool, Source::Dns, "failing", Some(reason));
                    settings.refresh
                }
            };
            drop(control);
            tokio::time::sleep(delay(settings.refresh, next)).await;
        }
    })
    .abort_handle()
}

/// The wait before the next round: `refresh`, or `sooner` (a TTL running out, a hold ending) if
/// that comes first, though not within a second unless `refresh` is shorter.
fn delay(refresh: Duration, sooner: Duration) -> Duration {
    let floor = refresh.min(Duration::from_secs(1));
    sooner.max(floor).min(refresh)
}

/// A resolver asking `settings.nameservers` (or the system's), with no cache.
fn resolver(settings: &DnsDiscovery) -> Result<TokioResolver, String> {
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|err| err.to_string())?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|address| {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    // Every round asks anew: a cached answer would hide changes and TTLs.
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    builder.build().map_err(|err| err.to_string())
}

/// One round: what DNS says now.
async fn resolve(resolver: &TokioResolver, settings: &DnsDiscovery) -> Result<Answer, String> {
    match &settings.query {
        DnsQuery::Address { name, port } => {
            let (addresses, ttl) = match addresses(resolver, name).await? {
                Some(found) => found,
                None => return Ok(Answer::Empty),
            };
            let primaries = addresses
                .into_iter()
                .map(|ip| (SocketAddr::new(ip, *port), settings.weight))
                .collect();
            Ok(Answer::Found {
                primaries,
                backups: Vec::new(),
                ttl,
            })
        }
        DnsQuery::Srv { name } => {
            let lookup = match resolver.srv_lookup(name.as_str()).await {
                Ok(lookup) => lookup,
                Err(err) if err.is_no_records_found() => return Ok(Answer::Empty),
                Err(err) => return Err(err.to_string()),
            };
            let mut ttl = remaining(lookup.valid_until());
            let mut targets = Vec::new();
            for record in lookup.answers() {
                if let RData::SRV(srv) = &record.data {
                    targets.push((srv.priority, srv.weight, srv.port, srv.target.to_ascii()));
                }
            }
            let mut by_target = BTreeMap::new();
            for (_, _, _, target) in &targets {
                if by_target.contains_key(target) {
                    continue;
                }
                // A target without addresses serves nothing; the others still do.
                let found = addresses(resolver, target).await?;
                if let Some((_, target_ttl)) = &found {
                    ttl = ttl.min(*target_ttl);
                }
                by_target.insert(
                    target.clone(),
                    found.map(|(ips, _)| ips).unwrap_or_default(),
                );
            }
            let records = targets
                .iter()
                .flat_map(|(priority, weight, port, target)| {
                    by_target[target]
                        .iter()
                        .map(move |ip| (*priority, SocketAddr::new(*ip, *port), *weight))
                })
                .collect::<Vec<_>>();
            Ok(tiers(&records, ttl))
        }
    }
}

/// The addresses of `name` and how long they stay valid; `None` for an authoritative "none".
async fn addresses(
    resolver: &TokioResolver,
    name: &str,
) -> Result<Option<(Vec<IpAddr>, Duration)>, String> {
    match resolver.lookup_ip(name).await {
        Ok(lookup) => {
            let mut ips: Vec<IpAddr> = lookup.iter().collect();
            ips.sort_unstable();
            ips.dedup();
            Ok((!ips.is_empty()).then(|| (ips, remaining(lookup.valid_until()))))
        }
        Err(err) if err.is_no_records_found() => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

fn remaining(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now())
}

/// SRV records `(priority, address, weight)` as tiers: the lowest priority value the primaries,
/// the next one the backups. A weight of 0 counts as 1 (RFC 2782: rarely chosen, still used),
/// and weights above Fulcrum's largest are capped.
pub fn tiers(records: &[(u16, SocketAddr, u16)], ttl: Duration) -> Answer {
    let mut priorities: Vec<u16> = records.iter().map(|(p, _, _)| *p).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let tier = |priority: Option<&u16>| -> Vec<(SocketAddr, u32)> {
        let Some(priority) = priority else {
            return Vec::new();
        };
        let mut backends: Vec<(SocketAddr, u32)> = records
            .iter()
            .filter(|(p, _, _)| p == priority)
            .map(|(_, address, weight)| (*address, u32::from(*weight).clamp(1, MAX_WEIGHT)))
            .collect();
        backends.sort_unstable();
        backends.dedup_by_key(|(address, _)| *address);
        backends
    };
    if records.is_empty() {
        return Answer::Empty;
    }
    Answer::Found {
        primaries: tier(priorities.first()),
        backups: tier(priorities.get(1)),
        ttl,
    }
}

/// The backends found, as registrations of `pool`.
fn registrations(
    pool: &str,
    primaries: &[(SocketAddr, u32)],
    backups: &[(SocketAddr, u32)],
) -> Vec<Registered> {
    let entry = |backup: bool| {
        move |(address, weight): &(SocketAddr, u32)| Registered {
            pool: pool.to_owned(),
            backend: BackendConfig {
                address: address
                    .to_string()
                    .parse()
                    .expect("a socket address is an authority"),
                weight: *weight,
                tls_name: None,
            },
            backup,
            admin: None,
        }
    };
    primaries
        .iter()
        .map(entry(false))
        .chain(backups.iter().map(entry(true)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn srv_priorities_make_primaries_and_backups() {
        let ttl = Duration::from_secs(30);
        let answer = tiers(
            &[
                (20, at(3), 1),
                (10, at(1), 5),
                (10, at(2), 0),
                (30, at(4), 1),
                (20, at(5), 65535),
            ],
            ttl,
        );
        assert_eq!(
            answer,
            Answer::Found {
                primaries: vec![(at(1), 5), (at(2), 1)],
                backups: vec![(at(3), 1), (at(5), MAX_WEIGHT)],
                ttl,
            }
        );
        assert_eq!(tiers(&[], ttl), Answer::Empty);
    }

    #[test]
    fn rounds_follow_the_ttl_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(delay(s(5), s(30)), s(5), "refresh at least this often");
        assert_eq!(delay(s(5), s(2)), s(2), "sooner when the TTL says so");
        assert_eq!(delay(s(5), Duration::ZERO), s(1), "but not in a loop");
        let short = Duration::from_millis(200);
        assert_eq!(delay(short, Duration::ZERO), short);
    }
}
