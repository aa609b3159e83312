//! TLS to `https://` backends: the certificate is verified against the public web PKI roots
//! (webpki-roots) plus the pool's `ca`, for the backend's `server_name` (or its host), which is
//! also sent as SNI. A certificate that does not verify fails the connect (502, logged with the
//! reason), never a fall back to plain HTTP.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How to open TLS to one backend.
pub struct UpstreamTls {
    connector: TlsConnector,
    name: ServerName<'static>,
    /// The pool's `ca`, which the connector trusts beside the web PKI: a reload that changes it
    /// must not leave connections verified against the old roots in use.
    ca: Arc<[CertificateDer<'static>]>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("name", &self.name)
            .finish()
    }
}

/// The client settings of a pool whose `ca` is `extra_roots`, offering only `h2` by ALPN when
/// the pool speaks HTTP/2.
pub fn client_config(extra_roots: &[CertificateDer<'static>], http2: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        // A CA the config validated as PEM but rustls cannot use is left out; the handshake
        // then fails against it with a clear error.
        roots.add(root.clone()).ok();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(config)
}

impl UpstreamTls {
    /// TLS with `config`, built by [`client_config`] from `ca`, checking the certificate for
    /// `name` (validated by the config).
    pub fn new(
        config: Arc<ClientConfig>,
        ca: Arc<[CertificateDer<'static>]>,
        name: &str,
    ) -> Option<UpstreamTls> {
        Some(UpstreamTls {
            connector: TlsConnector::from(config),
            name: ServerName::try_from(name.to_owned()).ok()?,
            ca,
        })
    }

    /// Whether connections opened with `self` were verified as `other` would verify them.
    pub fn verifies_as(&self, other: &UpstreamTls) -> bool {
        self.name == other.name && self.ca == other.ca
    }

    /// Runs the handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }

    /// The name the certificate must carry.
    pub fn name(&self) -> &ServerName<'static> {
        &self.name
    }
}
