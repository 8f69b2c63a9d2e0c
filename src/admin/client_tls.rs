//! The CLI's side of the admin API's HTTPS: a rustls client that trusts
//! the certificate the config names (`[admin] tls_certificate`, the very
//! file the daemon serves: pinned), else the system's roots with the
//! address checked. Blocking, like the rest of the client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::AdminConfig;

/// Trusts one certificate exactly, else what `roots` verifies.
#[derive(Debug)]
struct Pinned {
    pinned: Option<CertificateDer<'static>>,
    roots: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .as_ref()
            .is_some_and(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.roots
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    // The handshake's signatures are checked as webpki checks them.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

/// A stream to the admin API: plain, or TLS when the config serves HTTPS.
pub enum Stream {
    /// HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Wraps `tcp` as the config says; the error says why TLS cannot start.
pub fn wrap(admin: &AdminConfig, tcp: TcpStream) -> Result<Stream, String> {
    if !admin.tls() {
        return Ok(Stream::Plain(tcp));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = admin
        .tls_certificate
        .as_ref()
        .and_then(|p| CertificateDer::pem_file_iter(p).ok()?.next()?.ok());
    let roots = crate::smtp::tls::native_roots(&[]);
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build();
    // With no system roots at all, only the pinned certificate is trusted.
    let roots = match webpki {
        Ok(v) => v,
        Err(_) if pinned.is_some() => {
            let mut one = rustls::RootCertStore::empty();
            if let Some(p) = &pinned {
                let _ = one.add(p.clone());
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(one),
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let verifier = Arc::new(Pinned { pinned, roots });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::IpAddress(admin.address.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}
