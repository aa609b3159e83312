//! `[pool.NAME.dns]`: backends found in DNS ([`DnsDiscovery`]), and `[registry]`: runtime
//! registrations shared through etcd ([`SharedRegistry`]), with their validation. Resolving and
//! watching are `control/`'s business; `--check` reads only the syntax, never the network.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::validate::Source;
use super::{ConfigError, MAX_WEIGHT, wire};

/// What a pool asks DNS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// A and AAAA records of `name`: every address is a backend on `port`.
    Address { name: String, port: u16 },
    /// SRV records of `name`: target, port and weight each; the lowest priority value gives the
    /// primaries, the next one the backups.
    Srv { name: String },
}

/// `[pool.NAME.dns]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    pub query: DnsQuery,
    /// Where to ask; empty: the system's resolver configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Resolve again at least this often (sooner when the records' TTL says so).
    pub refresh: Duration,
    /// How long an authoritative empty answer must last before the DNS backends are removed.
    pub hold: Duration,
    /// The weight of A/AAAA backends (SRV records carry their own).
    pub weight: u32,
}

/// Default `[registry] prefix`.
pub const DEFAULT_PREFIX: &str = "/fulcrum";

/// `[registry]`: runtime registrations kept in etcd, shared by every instance with the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRegistry {
    pub etcd: Vec<SocketAddr>,
    /// Keys are `{prefix}/pools/{pool}/backends/{address}`.
    pub prefix: String,
}

impl DnsQuery {
    /// The name asked for.
    pub fn name(&self) -> &str {
        match self {
            DnsQuery::Address { name, .. } | DnsQuery::Srv { name } => name,
        }
    }
}

impl Source<'_> {
    /// `[pool.NAME.dns]`.
    pub(super) fn dns(
        &self,
        pool: &str,
        dns: &Spanned<wire::Dns>,
    ) -> Result<DnsDiscovery, ConfigError> {
        let table = dns.get_ref();
        let key = |name: &str| format!("pool.{pool}.dns.{name}");
        let query = match (&table.name, &table.port, &table.srv) {
            (Some(name), Some(port), None) => DnsQuery::Address {
                name: self.dns_name(&key("name"), name)?,
                port: self.int_in(&key("port"), &Some(port.clone()), 1..=65535, 0)? as u16,
            },
            (None, None, Some(srv)) => DnsQuery::Srv {
                name: self.dns_name(&key("srv"), srv)?,
            },
            (Some(_), None, None) => {
                return Err(self.error_at(dns, format!("{} needs port", key("name"))));
            }
            (None, Some(port), None) => {
                return Err(self.error_at(port, format!("{} needs name", key("port"))));
            }
            (_, _, Some(srv)) if table.name.is_some() || table.port.is_some() => {
                return Err(self.error_at(
                    srv,
                    format!("{}: give srv, or name and port, not both", key("srv")),
                ));
            }
            _ => {
                return Err(self.error_at(
                    dns,
                    format!("[pool.{pool}.dns] needs name and port, or srv"),
                ));
            }
        };
        let nameservers = table
            .nameservers
            .iter()
            .map(|server| {
                let text = server.get_ref();
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        self.error_at(
                            server,
                            format!(
                                "{}: {text:?} is not an address such as \"127.0.0.1:53\"",
                                key("nameservers")
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DnsDiscovery {
            query,
            nameservers,
            refresh: self.duration(&key("refresh"), &table.refresh, Duration::from_secs(5))?,
            hold: self.duration_or_zero(&key("hold"), &table.hold, Duration::from_secs(30))?,
            weight: self.int_in(&key("weight"), &table.weight, 1..=i64::from(MAX_WEIGHT), 1)?
                as u32,
        })
    }

    /// `[registry]`; `None` without etcd endpoints.
    pub(super) fn registry(
        &self,
        registry: &Spanned<wire::Registry>,
    ) -> Result<Option<SharedRegistry>, ConfigError> {
        let table = registry.get_ref();
        let etcd = table
            .etcd
            .iter()
            .map(|endpoint| {
                let text = endpoint.get_ref();
                let bare = text
                    .strip_prefix("http://")
                    .unwrap_or(text)
                    .trim_end_matches('/');
                bare.parse::<SocketAddr>().map_err(|_| {
                    self.error_at(
                        endpoint,
                        format!(
                            "registry.etcd: {text:?} is not an address such as \"127.0.0.1:2379\" \
                             (plain http; TLS to etcd is not supported)"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = match &table.prefix {
            None => DEFAULT_PREFIX.to_owned(),
            Some(prefix) => {
                let text = prefix.get_ref().trim_end_matches('/');
                if !text.starts_with('/') {
                    return Err(self.error_at(
                        prefix,
                        format!("registry.prefix = {text:?} must start with '/'"),
                    ));
                }
                text.to_owned()
            }
        };
        if etcd.is_empty() {
            if let Some(prefix) = &table.prefix {
                return Err(self.error_at(prefix, "registry.prefix needs registry.etcd"));
            }
            return Ok(None);
        }
        Ok(Some(SharedRegistry { etcd, prefix }))
    }

    fn dns_name(&self, key: &str, name: &Spanned<String>) -> Result<String, ConfigError> {
        let text = name.get_ref().trim();
        let valid = !text.is_empty()
            && text.len() <= 253
            && text.trim_end_matches('.').split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(self.error_at(name, format!("{key} = {text:?} is not a DNS name")));
        }
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn check(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("d.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_both_kinds_of_query() {
        let config = check(
            "[pool.api.dns]\nname = \"api.internal\"\nport = 8080\nnameservers = [\"127.0.0.1:5353\"]\n\
             refresh = \"2s\"\nhold = \"10s\"\nweight = 3\n",
        )
        .unwrap();
        assert_eq!(
            config.pools[0].dns,
            Some(DnsDiscovery {
                query: DnsQuery::Address {
                    name: "api.internal".into(),
                    port: 8080
                },
                nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
                refresh: Duration::from_secs(2),
                hold: Duration::from_secs(10),
                weight: 3,
            })
        );
        let config = check("[pool.api.dns]\nsrv = \"_http._tcp.api.internal\"\n").unwrap();
        let dns = config.pools[0].dns.as_ref().unwrap();
        assert_eq!(
            dns.query,
            DnsQuery::Srv {
                name: "_http._tcp.api.internal".into()
            }
        );
        assert!(dns.nameservers.is_empty(), "the system's by default");
        assert_eq!(
            (dns.refresh, dns.hold),
            (Duration::from_secs(5), Duration::from_secs(30))
        );
    }

    #[test]
    fn registry_in_etcd() {
        let config = check(
            "[registry]\netcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:22379\"]\nprefix = \"/lb/\"\n\
             [pool.api]\n",
        )
        .unwrap();
        assert_eq!(
            config.registry,
            Some(SharedRegistry {
                etcd: vec![
                    "127.0.0.1:2379".parse().unwrap(),
                    "127.0.0.1:22379".parse().unwrap()
                ],
                prefix: "/lb".into(),
            })
        );
        let defaults = check("[registry]\netcd = [\"127.0.0.1:2379\"]\n[pool.api]\n").unwrap();
        assert_eq!(defaults.registry.unwrap().prefix, DEFAULT_PREFIX);
        for (text, expected) in [
            (
                "[registry]\netcd = [\"etcd:2379\"]\n",
                "d.toml:2: registry.etcd: \"etcd:2379\" is not an address",
            ),
            (
                "[registry]\netcd = [\"127.0.0.1:2379\"]\nprefix = \"lb\"\n",
                "d.toml:3: registry.prefix = \"lb\" must start with '/'",
            ),
            (
                "[registry]\nprefix = \"/lb\"\n",
                "d.toml:2: registry.prefix needs registry.etcd",
            ),
            (
                "[registry]\netcd = [\"127.0.0.1:2379\"]\n[admin]\nlisten = \"127.0.0.1:9901\"\nstate_file = \"/tmp/s.json\"\n",
                "d.toml:5: admin.state_file and registry.etcd",
            ),
        ] {
            let error = check(&format!("{text}[pool.api]\n")).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: got {error}");
        }
    }

    #[test]
    fn faults_name_their_line_and_key() {
        for (table, expected) in [
            ("name = \"a.b\"\n", "d.toml:1: pool.api.dns.name needs port"),
            ("port = 80\n", "d.toml:2: pool.api.dns.port needs name"),
            (
                "name = \"a.b\"\nport = 80\nsrv = \"_x._tcp.a.b\"\n",
                "d.toml:4: pool.api.dns.srv: give srv, or name and port, not both",
            ),
            ("", "d.toml:1: [pool.api.dns] needs name and port, or srv"),
            (
                "name = \"a b\"\nport = 80\n",
                "d.toml:2: pool.api.dns.name = \"a b\" is not a DNS name",
            ),
            (
                "name = \"a.b\"\nport = 0\n",
                "d.toml:3: pool.api.dns.port = 0 is out of range",
            ),
            (
                "srv = \"_x._tcp.a.b\"\nnameservers = [\"dns.local\"]\n",
                "d.toml:3: pool.api.dns.nameservers: \"dns.local\" is not an address",
            ),
            (
                "srv = \"_x._tcp.a.b\"\nrefresh = \"0s\"\n",
                "d.toml:3: pool.api.dns.refresh must be greater than zero",
            ),
            (
                "srv = \"_x._tcp.a.b\"\nttl = 5\n",
                "d.toml:3: unknown field `ttl`",
            ),
        ] {
            let error = check(&format!("[pool.api.dns]\n{table}")).unwrap_err();
            assert!(error.starts_with(expected), "{table:?}: got {error}");
        }
    }
}
