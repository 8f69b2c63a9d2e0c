//! The outbound side of TLS: one TLS client for every STARTTLS (it checks
//! the handshake's signatures, never refuses a certificate), and the
//! [`Verifier`] that checks the certificate the server sent afterwards,
//! against the trusted roots and the MX host name (webpki). Checking after
//! the handshake lets every connection say whether its certificate was
//! valid (the delivery log, TLS reports in MTA-STS `testing` mode), while
//! a policy that requires a valid certificate refuses the connection
//! before any mail goes over it.
//!
//! It owns how a TLS failure is classified ([`TlsFailure`], the result
//! types of RFC 8460); it never decides which policy applies.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// Why TLS did not give an authenticated session (RFC 8460's result
/// types, as far as the SMTP client sees them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The server does not offer STARTTLS, or refused it.
    StartTlsNotSupported,
    /// The certificate is not valid for the MX host name.
    HostMismatch,
    /// The certificate has expired (or is not yet valid).
    Expired,
    /// The certificate does not chain to a trusted root.
    NotTrusted,
    /// The handshake failed, or the certificate is otherwise invalid.
    Validation,
}

impl TlsFailure {
    /// The RFC 8460 `result-type`.
    pub fn result_type(self) -> &'static str {
        match self {
            Self::StartTlsNotSupported => "starttls-not-supported",
            Self::HostMismatch => "certificate-host-mismatch",
            Self::Expired => "certificate-expired",
            Self::NotTrusted => "certificate-not-trusted",
            Self::Validation => "validation-failure",
        }
    }

    fn of(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::HostMismatch,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Self::Expired,
                CertificateError::UnknownIssuer => Self::NotTrusted,
                _ => Self::Validation,
            },
            _ => Self::Validation,
        }
    }
}

/// Checks a server's certificate chain against the system's roots (and
/// `tls_ca_file`'s) and the MX host name. Without any trusted root (a
/// system without a CA bundle), every certificate is untrusted.
#[derive(Clone)]
pub struct Verifier(Option<Arc<WebPkiServerVerifier>>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl Verifier {
    /// The system's roots and `extra` ones.
    pub fn new(extra: &[CertificateDer<'static>]) -> Self {
        let roots = Arc::new(crate::smtp::tls::native_roots(extra));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Self(
            WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .ok(),
        )
    }

    /// Whether `chain` (end entity first) is valid for `host` now.
    pub fn check(
        &self,
        chain: &[CertificateDer<'_>],
        host: &str,
    ) -> Result<(), (TlsFailure, String)> {
        let Some((end, intermediates)) = chain.split_first() else {
            return Err((
                TlsFailure::Validation,
                "the server sent no certificate".into(),
            ));
        };
        let Some(webpki) = &self.0 else {
            return Err((
                TlsFailure::NotTrusted,
                "no trusted root is installed".into(),
            ));
        };
        let name = server_name(host).map_err(|e| (TlsFailure::HostMismatch, e))?;
        webpki
            .verify_server_cert(end, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| (TlsFailure::of(&e), format!("certificate of {host}: {e}")))
    }
}

/// The TLS name of `host` (a DNS name or an address literal).
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}")),
    }
}

/// The TLS client of every STARTTLS: the handshake's signatures are
/// checked, the certificate is not (the [`Verifier`] does that after).
pub(super) fn connector() -> TlsConnector {
    static CONNECTOR: std::sync::OnceLock<TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// The classification of a failed handshake.
pub(super) fn handshake_failure(e: &std::io::Error) -> TlsFailure {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or(TlsFailure::Validation, TlsFailure::of)
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
