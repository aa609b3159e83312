//! `[tls]`: listeners, minimum version and certificates. Certificate files are read here, so
//! `--check`, startup and reloads all refuse a missing file, an empty chain or a key that does not
//! match, naming the config line.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::HostPattern;
use super::certs::{Faulty, load_certified_key};
use super::validate::Source;
use super::{Certificate, ConfigError, TlsConfig, TlsVersion, wire};

impl Source<'_> {
    pub(super) fn tls(&self, tls: &Spanned<wire::Tls>) -> Result<TlsConfig, ConfigError> {
        let table = tls.get_ref();
        let listen = self.listen("tls.listen", &table.listen)?;
        let min_version = match &table.min_version {
            None => TlsVersion::V1_2,
            Some(v) => match v.get_ref().as_str() {
                "1.2" => TlsVersion::V1_2,
                "1.3" => TlsVersion::V1_3,
                other => {
                    return Err(self.error_at(
                        v,
                        format!("tls.min_version = {other:?}: expected \"1.2\" or \"1.3\""),
                    ));
                }
            },
        };
        if table.certificates.is_empty() {
            return Err(self.error_at(
                tls,
                "[tls] has no [[tls.certificates]]: give at least one cert and key",
            ));
        }
        let certificates = table
            .certificates
            .iter()
            .map(|entry| self.certificate(entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TlsConfig {
            listen,
            min_version,
            certificates,
        })
    }

    fn certificate(&self, entry: &Spanned<wire::Certificate>) -> Result<Certificate, ConfigError> {
        let table = entry.get_ref();
        let hosts = table
            .hosts
            .iter()
            .map(|host| {
                HostPattern::parse(host).map_err(|reason| {
                    self.error_at(entry, format!("tls.certificates hosts: {reason}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cert = self.beside_config(table.cert.get_ref());
        let key = self.beside_config(table.key.get_ref());
        let key_pair = load_certified_key(&cert, &key).map_err(|fault| match fault {
            Faulty::Cert(reason) => {
                self.error_at(&table.cert, format!("tls.certificates cert: {reason}"))
            }
            Faulty::Key(reason) => {
                self.error_at(&table.key, format!("tls.certificates key: {reason}"))
            }
        })?;
        Ok(Certificate {
            hosts,
            cert,
            key,
            key_pair,
        })
    }

    /// `path` as written, resolved against the config file's directory when relative.
    pub(super) fn beside_config(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}
