//! Certificates and keys read from PEM files, for the client's and the server's TLS and the
//! registry crates' alike. Every error is an [`Error::Config`] naming the key the file was
//! configured under (`clients.greeter.tls.ca`, `servers.greeter.tls.key`,
//! `registry.tls.cert`), what it takes and what was there.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// The bytes of the PEM file at `path`, configured as `key`.
///
/// ```
/// let error = jovian::config::read_pem("registry.tls.ca", "/nonexistent/ca.pem".as_ref()).unwrap_err();
/// assert!(matches!(error, jovian::Error::Config { key, .. } if key == "registry.tls.ca"));
/// ```
pub fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| invalid(key, "a readable PEM file", path, e))
}

/// The certificates in the PEM file at `path` (at least one), configured as `key`.
pub(crate) fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, "PEM certificates", path, e))?;
    if certificates.is_empty() {
        return Err(invalid(key, "PEM certificates", path, "none"));
    }
    Ok(certificates)
}

/// The certificates in the PEM file at `path` as a store of trusted roots.
pub(crate) fn roots(key: &str, path: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(key, path)? {
        roots
            .add(certificate)
            .map_err(|e| invalid(key, "CA certificates", path, e))?;
    }
    Ok(roots)
}

/// The private key in the PEM file at `path`, configured as `key`.
pub(crate) fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(&read_pem(key, path)?).map_err(|e| invalid(key, "a PEM private key", path, e))
}

/// The crypto provider: the process default if one is installed, else *ring*'s.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(ring_provider()))
}

/// rustls' *ring* provider, for processes that installed no default of their own.
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange, which only its aws-lc-rs
/// provider has. jovian keeps *ring* (the provider tonic's `tls-ring` and etcd-client use too,
/// and no C toolchain to build aws-lc): an application that wants post-quantum key exchange
/// installs aws-lc-rs as the process default (`CryptoProvider::install_default`), which jovian
/// uses first.
#[allow(deprecated)]
fn ring_provider() -> tokio_rustls::rustls::crypto::CryptoProvider {
    tokio_rustls::rustls::crypto::ring::default_provider()
}

/// The error for a file at `path`, configured as `key`, that is not what `expected` says.
pub(crate) fn invalid(key: &str, expected: &str, path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config {
        key: key.to_owned(),
        expected: expected.to_owned(),
        found: format!("{}: {what}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wrong_file_is_reported_under_its_key() {
        let dir = std::env::temp_dir().join(format!(
            "jovian-tls-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap();
        let missing = dir.join("missing.pem");
        let key_of = |error: Error| match error {
            Error::Config { key, expected, found } => (key, expected, found),
            other => panic!("{other:?}"),
        };

        let (key, expected, found) = key_of(read_pem("servers.s.tls.cert", &missing).unwrap_err());
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("servers.s.tls.cert", "a readable PEM file")
        );
        assert!(found.contains("missing.pem"), "{found}");
        let (key, expected, found) = key_of(certificates("clients.c.tls.ca", &junk).unwrap_err());
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("clients.c.tls.ca", "PEM certificates")
        );
        assert!(found.ends_with(": none"), "{found}");
        let (key, expected, _) = key_of(private_key("registry.tls.key", &junk).unwrap_err());
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("registry.tls.key", "a PEM private key")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
