//! A test certificate authority (rcgen): its PEM for `tls_ca_file`, and
//! TLS acceptors with certificates it issues for given names.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A CA.
pub struct Ca {
    /// Its certificate, PEM.
    pub pem: String,
    /// Its certificate, DER.
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate the CA issued, served by an acceptor.
pub struct Issued {
    /// Presents the certificate (and the CA's, if asked).
    pub acceptor: TlsAcceptor,
    /// The certificate's SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

impl Ca {
    /// A fresh CA.
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA's PEM to `dir/ca.pem`; returns the path.
    pub fn file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// An acceptor presenting a certificate this CA issued for `names`.
    pub fn acceptor(&self, names: &[&str]) -> TlsAcceptor {
        self.issue(names, false).acceptor
    }

    /// A certificate for `names`; the acceptor sends the CA's after it
    /// when `with_ca`.
    pub fn issue(&self, names: &[&str], with_ca: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut chain = vec![cert.der().clone()];
        if with_ca {
            chain.push(self.der.clone().into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, der)
            .unwrap();
        Issued {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            spki,
        }
    }
}
