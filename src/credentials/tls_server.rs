//! The API's TLS certificate and key (`[api] tls_certificate` +
//! `tls_private_key`): loaded into a rustls server config (ring provider,
//! ARCHITECTURE.md: never aws-lc). Config validation checks the files with it
//! (a bad file fails the start or the reload, naming the key); `api::tls`
//! serves with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the API's certificate or key cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The PEM file.
        path: PathBuf,
        /// The OS or PEM parser's error.
        message: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("certificate {cert} with key {key}: {message}")]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls's error.
        message: String,
    },
}

/// The rustls server config for the API: the certificate chain in `cert` (PEM,
/// leaf first) and the private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1), ring
/// provider, TLS 1.2 and 1.3, ALPN `http/1.1`.
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or rustls refuses the pair.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read { path: path.into(), message: e.to_string() };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.into()));
    }
    let private = match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key.into())),
        Err(e) => return Err(read(key, &e)),
    };
    let pair = |e: rustls::Error| TlsError::Pair { cert: cert.into(), key: key.into(), message: e.to_string() };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
