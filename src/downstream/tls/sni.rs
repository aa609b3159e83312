//! Choosing a certificate by the server name a client sends (SNI): an exact host beats a
//! wildcard (as in nginx), and the first certificate of the config serves clients that send no
//! name or a name no certificate lists.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::HostPattern;

/// Certificates by the hosts they serve.
#[derive(Debug)]
pub struct ByServerName {
    /// `(hosts, certificate)` in config order; the first is the default.
    entries: Vec<(Vec<HostPattern>, Arc<CertifiedKey>)>,
}

impl ByServerName {
    /// `entries` must not be empty (validation requires a certificate).
    pub fn new(entries: Vec<(Vec<HostPattern>, Arc<CertifiedKey>)>) -> ByServerName {
        assert!(
            !entries.is_empty(),
            "validation requires at least one certificate"
        );
        ByServerName { entries }
    }

    /// The certificate for `name` (or the default).
    pub fn choose(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let default = &self.entries[0].1;
        let Some(name) = name else {
            return default;
        };
        let with = |exact: bool| {
            self.entries.iter().find(|(hosts, _)| {
                hosts
                    .iter()
                    .any(|host| host.is_exact() == exact && host.matches(name))
            })
        };
        with(true)
            .or_else(|| with(false))
            .map_or(default, |(_, key)| key)
    }
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.choose(hello.server_name())))
    }
}
