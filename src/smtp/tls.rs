//! Loading a listener's certificate and key into a rustls server config.
//! The ring provider is passed explicitly, so no process-wide crypto
//! provider has to be installed.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ListenerConfig;

/// Why TLS material could not be loaded: the config key at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLoadError {
    /// `tls_certificate` or `tls_key`.
    pub key: &'static str,
    /// What went wrong, naming the file.
    pub message: String,
}

fn fail(key: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsLoadError {
    TlsLoadError {
        key,
        message: format!("{}: {why}", path.display()),
    }
}

/// The system's trusted roots, and `extra` ones: what every TLS client of
/// Tern that checks certificates starts from (`tls = "verify"`, webhooks,
/// the CLI's HTTPS).
pub fn native_roots(extra: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for cert in extra {
        let _ = roots.add(cert.clone());
    }
    roots
}

/// Builds the STARTTLS configuration of a listener (which must have both
/// `tls_certificate` and `tls_key` set).
pub fn load_server_config(l: &ListenerConfig) -> Result<Arc<ServerConfig>, TlsLoadError> {
    let (Some(cert_path), Some(key_path)) = (&l.tls_certificate, &l.tls_key) else {
        return Err(TlsLoadError {
            key: "tls_certificate",
            message: "no certificate configured".into(),
        });
    };
    server_config(cert_path, key_path)
}

/// A server configuration from a certificate chain and a key (PEM files):
/// a listener's STARTTLS, the admin API's HTTPS.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsLoadError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| fail("tls_certificate", cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("tls_certificate", cert_path, e))?;
    if certs.is_empty() {
        return Err(fail(
            "tls_certificate",
            cert_path,
            "no certificate found in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| fail("tls_key", key_path, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls_certificate", cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            fail(
                "tls_key",
                key_path,
                format!("does not match the certificate or is unusable: {e}"),
            )
        })?;
    Ok(Arc::new(config))
}
