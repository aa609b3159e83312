//! TLS termination with rustls (the `ring` provider: no C toolchain needed).
//!
//! - `sni.rs`: which certificate a handshake gets, by its server name (SNI).
//!
//! The certificates themselves are read and checked with the config (`config/certs.rs`).
//!
//! The rustls `ServerConfig` is built from the config at start and on every reload, and swapped
//! in for new handshakes; connections already up keep the certificate they started with. ALPN
//! offers `h2` and `http/1.1`.

mod sni;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::ring;

pub use sni::ByServerName;

use crate::config::{TlsConfig, TlsVersion};

/// The rustls configuration for `tls`: its certificates chosen by SNI, its minimum version,
/// ALPN `h2` then `http/1.1`.
pub fn server_config(tls: &TlsConfig) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let resolver = ByServerName::new(
        tls.certificates
            .iter()
            .map(|c| (c.hosts.clone(), Arc::clone(&c.key_pair)))
            .collect(),
    );
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
