//! TLS material from PEM files: a server configuration (a listener's
//! STARTTLS, the admin API's HTTPS), CA certificates, the system's roots.
//! Called by the prepare step ([`crate::prepare`]), never by the config.
//! The ring provider is passed explicitly, so no process-wide crypto
//! provider has to be installed.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
    // The system's bundle is read from disk once per process, however many
    // clients are built from it.
    static SYSTEM: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    let system = SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs);
    let mut roots = rustls::RootCertStore::empty();
    for cert in system {
        let _ = roots.add(cert.clone());
    }
    for cert in extra {
        let _ = roots.add(cert.clone());
    }
    roots
}

/// A TLS client checking certificates against [`native_roots`] with
/// `extra` and the host name (webpki): the HTTPS of webhooks, MTA-STS
/// policy hosts and TLS-report receivers.
pub fn verifying_client(extra: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(native_roots(extra))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The certificates of a PEM file (`tls_ca_file`): at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(format!("{}: no certificate in it", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
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
