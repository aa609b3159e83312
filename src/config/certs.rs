//! A certificate chain and its private key from PEM files, checked before use: a missing file,
//! an empty chain, an unreadable key or a key that does not match its certificate is an error
//! that names the file, never a handshake failure later.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Loads the chain at `cert` and the key at `key` (PKCS#8, PKCS#1 or SEC1).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Faulty> {
    let chain = read_chain(cert).map_err(Faulty::Cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| match err {
            rustls_pki_types::pem::Error::NoItemsFound => {
                format!(
                    "{}: no private key found (PKCS#8, PKCS#1 or SEC1 PEM)",
                    key.display()
                )
            }
            other => format!("{}: {}", key.display(), describe(&other)),
        })
        .map_err(Faulty::Key)?;
    let signing_key = ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| Faulty::Key(format!("{}: unusable private key: {err}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        Faulty::Key(format!(
            "{} does not match the certificate in {}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// Which of a certificate entry's files is at fault, and why: `--check` names that key's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Faulty {
    Cert(String),
    Key(String),
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|err| format!("{}: {}", cert.display(), describe(&err)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{}: {}", cert.display(), describe(&err)))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate found (empty chain)",
            cert.display()
        ));
    }
    Ok(chain)
}

/// A PEM file's error as an operator reads it: unreadable, or not PEM.
pub fn describe(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        other => format!("not valid PEM: {other}"),
    }
}
