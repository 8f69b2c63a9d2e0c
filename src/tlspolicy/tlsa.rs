//! TLSA records (RFC 6698) as DANE for SMTP uses them (RFC 7672 3), and
//! the certificate check Tern runs against them after the handshake:
//!
//! - DANE-EE (usage 3): the server's own certificate (or its public key)
//!   matches; names and dates are not checked (RFC 7672 3.1.1).
//! - DANE-TA (usage 2): a certificate of the chain the server sent (or its
//!   public key) matches, and the server's certificate chains to it and
//!   is valid for the MX host name (webpki, with that certificate as the
//!   only root).
//!
//! PKIX usages (0, 1) and unknown selectors or matching types are
//! "unusable" (RFC 7672 3.1.3): a host with only unusable records still
//! gets mandatory TLS, unauthenticated.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};

/// One TLSA record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaRecord {
    /// Certificate usage: 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: the whole certificate; 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: exact; 1: SHA-256; 2: SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl TlsaRecord {
    /// Usable for DANE SMTP (RFC 7672 3.1.3).
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// Whether `cert` (DER) matches this record's selector and data.
    fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert.to_vec(),
            _ => match spki(cert) {
                Some(s) => s,
                None => return false,
            },
        };
        match self.matching {
            0 => selected == self.data,
            1 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref() == self.data,
            _ => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref() == self.data,
        }
    }
}

impl std::fmt::Display for TlsaRecord {
    /// As a zone file writes it: `3 1 1 <hex>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        self.data.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn spki(cert: &[u8]) -> Option<Vec<u8>> {
    let der = CertificateDer::from(cert);
    let anchor = webpki::anchor_from_trusted_cert(&der).ok()?;
    Some(webpki::spki_for_anchor(&anchor).as_ref().to_vec())
}

/// A host's secure TLSA records: DANE applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// The usable records; empty when every record was unusable (TLS is
    /// then mandatory but not authenticated).
    pub records: Vec<TlsaRecord>,
}

impl Tlsa {
    /// From a host's records, keeping the usable ones.
    pub fn new(all: Vec<TlsaRecord>) -> Self {
        Self {
            records: all.into_iter().filter(TlsaRecord::usable).collect(),
        }
    }

    /// Whether any record can authenticate the server.
    pub fn authenticates(&self) -> bool {
        !self.records.is_empty()
    }

    /// Checks `chain` (the server's certificate first) for MX host
    /// `host`: `Ok` if a record matches as its usage requires.
    pub fn check(&self, chain: &[CertificateDer<'_>], host: &str) -> Result<(), String> {
        let Some(end) = chain.first() else {
            return Err("the server sent no certificate".into());
        };
        for r in &self.records {
            match r.usage {
                3 if r.matches(end) => return Ok(()),
                2 => {
                    for ta in chain.iter().skip(1) {
                        if r.matches(ta) && chains_to(chain, ta, host) {
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
        }
        Err(format!(
            "the certificate of {host} matches none of its TLSA records"
        ))
    }
}

/// Whether the server's certificate chains to `anchor` and is valid for
/// `host` (DANE-TA).
fn chains_to(chain: &[CertificateDer<'_>], anchor: &CertificateDer<'_>, host: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(anchor.clone().into_owned()).is_err() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
    else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(host.to_owned()) else {
        return false;
    };
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dane_usages_with_known_selectors_and_matching_are_usable() {
        let r = |usage, selector, matching| TlsaRecord {
            usage,
            selector,
            matching,
            data: Vec::new(),
        };
        assert!(r(3, 1, 1).usable());
        assert!(r(2, 0, 2).usable());
        assert!(!r(1, 1, 1).usable(), "PKIX-EE");
        assert!(!r(0, 0, 1).usable(), "PKIX-TA");
        assert!(!r(3, 2, 1).usable());
        assert!(!r(3, 1, 3).usable());
        let t = Tlsa::new(vec![r(1, 1, 1)]);
        assert!(
            !t.authenticates(),
            "only unusable records: TLS without authentication"
        );
    }
}
