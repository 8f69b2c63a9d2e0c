//! DKIM private keys: reading them from PEM files, checking them, signing
//! with them, and the public key record (`p=`) that goes in DNS.
//!
//! RSA keys of 2048 to 4096 bits and Ed25519 keys sign with ring. ring
//! refuses RSA keys under 2048 bits, which RFC 8301 still allows (down to
//! 1024), so those sign with the `rsa` crate, with blinding. This module
//! never touches the message: it signs the hash input mail-auth hands it.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use mail_auth::common::crypto::{
    Algorithm as MaAlgorithm, HashContext as _, HashImpl, Sha256, SigningKey,
};
use mail_auth::common::headers::Writable;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

/// The smallest RSA key Tern signs with (RFC 8301: signers MUST use at
/// least 1024 bits).
pub const RSA_MIN_BITS: usize = 1024;
/// The largest RSA key Tern signs with (a longer `p=` no longer fits DNS
/// comfortably).
pub const RSA_MAX_BITS: usize = 4096;
/// Below this many bits an RSA key works but is weak (RFC 8301: SHOULD use
/// at least 2048).
pub const RSA_WEAK_BITS: usize = 2048;

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `rsa-sha256` (RFC 6376).
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The name used in `a=` and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The `k=` value of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM private key.
    #[error("{0}")]
    Pem(String),
    /// The key is not of the configured algorithm.
    #[error("the key is {found}, but the algorithm is {configured}")]
    WrongAlgorithm {
        /// What the file holds.
        found: Algorithm,
        /// What the config says.
        configured: Algorithm,
    },
    /// An RSA key outside the allowed sizes.
    #[error("the RSA key has {0} bits; DKIM keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS}")]
    RsaSize(usize),
    /// The crypto library refused the key.
    #[error("the key is not valid: {0}")]
    Invalid(String),
}

/// A loaded private key, ready to sign.
pub enum PrivateKey {
    /// RSA of 2048 bits or more, signed by ring.
    Rsa {
        /// The key pair.
        pair: RsaKeyPair,
        /// Random numbers for blinding.
        rng: SystemRandom,
    },
    /// RSA under 2048 bits, signed by the `rsa` crate (ring refuses them).
    RsaSmall(Box<rsa::RsaPrivateKey>),
    /// Ed25519.
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, {} bits)", self.algorithm(), self.bits())
    }
}

/// The DER `DigestInfo` prefix of a SHA-256 hash (RFC 8017 section 9.2).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl PrivateKey {
    /// Reads and checks a PEM key file: PKCS#1 (`RSA PRIVATE KEY`) or
    /// PKCS#8 (`PRIVATE KEY`, RSA or Ed25519), of the `expected` algorithm.
    pub fn load(path: &Path, expected: Algorithm) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = Self::from_pem(&pem)?;
        if key.algorithm() != expected {
            return Err(KeyError::WrongAlgorithm {
                found: key.algorithm(),
                configured: expected,
            });
        }
        Ok(key)
    }

    /// Parses a PEM private key of either algorithm.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if memchr::memmem::find(pem, b"ENCRYPTED PRIVATE KEY").is_some() {
            return Err(KeyError::Pem(
                "the key is encrypted; Tern needs it in the clear (openssl pkey -in K -out K2)"
                    .into(),
            ));
        }
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            KeyError::Pem(format!(
                "no PEM private key (PKCS#1 or PKCS#8) in the file: {e}"
            ))
        })?;
        match der {
            PrivateKeyDer::Pkcs1(k) => Self::rsa(RsaDer::Pkcs1(k.secret_pkcs1_der())),
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                match Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    Ok(pair) => Ok(PrivateKey::Ed25519(pair)),
                    Err(_) => Self::rsa(RsaDer::Pkcs8(der)),
                }
            }
            _ => Err(KeyError::Pem(
                "an EC (SEC1) key; DKIM signs with RSA or Ed25519 only".into(),
            )),
        }
    }

    fn rsa(der: RsaDer<'_>) -> Result<Self, KeyError> {
        let parsed = match der {
            RsaDer::Pkcs1(d) => RsaKeyPair::from_der(d),
            RsaDer::Pkcs8(d) => RsaKeyPair::from_pkcs8(d),
        };
        match parsed {
            Ok(pair) => {
                let bits = pair.public().modulus_len() * 8;
                if bits > RSA_MAX_BITS {
                    return Err(KeyError::RsaSize(bits));
                }
                Ok(PrivateKey::Rsa {
                    pair,
                    rng: SystemRandom::new(),
                })
            }
            // ring refuses keys under 2048 bits: try the rsa crate, which
            // takes the 1024-bit keys RFC 8301 still allows.
            Err(ring_err) => {
                let key = match der {
                    RsaDer::Pkcs1(d) => rsa::RsaPrivateKey::from_pkcs1_der(d).ok(),
                    RsaDer::Pkcs8(d) => rsa::RsaPrivateKey::from_pkcs8_der(d).ok(),
                };
                let Some(key) = key else {
                    return Err(KeyError::Invalid(ring_err.to_string()));
                };
                let bits = key.n().bits();
                if !(RSA_MIN_BITS..RSA_WEAK_BITS).contains(&bits) {
                    return Err(KeyError::RsaSize(bits));
                }
                Ok(PrivateKey::RsaSmall(Box::new(key)))
            }
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::Rsa { .. } | PrivateKey::RsaSmall(_) => Algorithm::RsaSha256,
            PrivateKey::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    /// The key's size in bits (256 for Ed25519).
    pub fn bits(&self) -> usize {
        match self {
            PrivateKey::Rsa { pair, .. } => pair.public().modulus_len() * 8,
            PrivateKey::RsaSmall(k) => k.n().bits(),
            PrivateKey::Ed25519(_) => 256,
        }
    }

    /// The `p=` value of the DNS record: base64 of the SubjectPublicKeyInfo
    /// for RSA, of the raw 32-byte key for Ed25519.
    pub fn public_key_base64(&self) -> Result<String, KeyError> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        match self {
            PrivateKey::Ed25519(pair) => Ok(b64(pair.public_key().as_ref())),
            PrivateKey::Rsa { pair, .. } => {
                // ring gives the PKCS#1 RSAPublicKey; DNS wants the SPKI.
                let public = rsa::RsaPublicKey::from_pkcs1_der(pair.public().as_ref())
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                spki_base64(&public)
            }
            PrivateKey::RsaSmall(k) => spki_base64(&k.to_public_key()),
        }
    }

    /// The whole TXT record value: `v=DKIM1; k=...; p=...`.
    pub fn dns_record(&self) -> Result<String, KeyError> {
        Ok(format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm().key_type(),
            self.public_key_base64()?
        ))
    }
}

enum RsaDer<'a> {
    Pkcs1(&'a [u8]),
    Pkcs8(&'a [u8]),
}

fn spki_base64(public: &rsa::RsaPublicKey) -> Result<String, KeyError> {
    let der = public
        .to_public_key_der()
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
}

fn crypto_error(e: impl fmt::Display) -> mail_auth::Error {
    mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
        e.to_string(),
    ))
}

impl SigningKey for PrivateKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            PrivateKey::Rsa { pair, rng } => {
                // ring hashes the input itself.
                let mut data = Vec::with_capacity(1024);
                input.write(&mut data);
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, rng, &data, &mut sig)
                    .map_err(crypto_error)?;
                Ok(sig)
            }
            PrivateKey::Ed25519(pair) => {
                // RFC 8463: Ed25519 signs the SHA-256 hash of the input.
                let mut hasher = Sha256::hasher();
                input.write(&mut hasher);
                Ok(pair.sign(hasher.complete().as_ref()).as_ref().to_vec())
            }
            PrivateKey::RsaSmall(k) => {
                let mut hasher = Sha256::hasher();
                input.write(&mut hasher);
                let mut info = Vec::with_capacity(SHA256_DIGEST_INFO.len() + 32);
                info.extend_from_slice(&SHA256_DIGEST_INFO);
                info.extend_from_slice(hasher.complete().as_ref());
                k.sign_with_rng(
                    &mut rand_core::OsRng,
                    rsa::Pkcs1v15Sign::new_unprefixed(),
                    &info,
                )
                .map_err(crypto_error)
            }
        }
    }

    fn algorithm(&self) -> MaAlgorithm {
        match self.algorithm() {
            Algorithm::RsaSha256 => MaAlgorithm::RsaSha256,
            Algorithm::Ed25519Sha256 => MaAlgorithm::Ed25519Sha256,
        }
    }
}

impl From<crate::config::KeyAlgorithm> for Algorithm {
    fn from(a: crate::config::KeyAlgorithm) -> Self {
        match a {
            crate::config::KeyAlgorithm::RsaSha256 => Algorithm::RsaSha256,
            crate::config::KeyAlgorithm::Ed25519Sha256 => Algorithm::Ed25519Sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dkim")
            .join(name)
    }

    #[test]
    fn keys_load_in_the_formats_operators_bring() {
        let rsa = Algorithm::RsaSha256;
        for (file, alg, bits) in [
            ("rsa2048.pkcs8.pem", rsa, 2048),
            ("rsa1024.pkcs1.pem", rsa, 1024),
            ("rsa4096.pkcs1.pem", rsa, 4096),
            ("ed25519.pem", Algorithm::Ed25519Sha256, 256),
        ] {
            let k = PrivateKey::load(&fixture(file), alg).unwrap();
            assert_eq!((k.algorithm(), k.bits()), (alg, bits), "{file}");
            assert!(
                matches!(k, PrivateKey::RsaSmall(_)) == (bits == 1024),
                "{file}"
            );
            let record = k.dns_record().unwrap();
            assert!(record.starts_with(&format!("v=DKIM1; k={}; p=", alg.key_type())));
        }
    }

    #[test]
    fn unusable_keys_are_refused_with_the_reason() {
        let rsa = Algorithm::RsaSha256;
        let err = |file: &str, alg| PrivateKey::load(&fixture(file), alg).unwrap_err();
        assert!(matches!(
            err("rsa512.pkcs1.pem", rsa),
            KeyError::RsaSize(512)
        ));
        assert!(err("ec.pem", rsa).to_string().contains("EC (SEC1)"));
        assert!(err("encrypted.pem", rsa).to_string().contains("encrypted"));
        assert!(matches!(
            err("ed25519.pem", rsa),
            KeyError::WrongAlgorithm {
                found: Algorithm::Ed25519Sha256,
                ..
            }
        ));
        assert!(matches!(err("nope.pem", rsa), KeyError::Read { .. }));
        assert!(matches!(
            PrivateKey::from_pem(b"not a key"),
            Err(KeyError::Pem(_))
        ));
        let garbage = b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(garbage),
            Err(KeyError::Invalid(_))
        ));
    }

    #[test]
    fn the_1024_bit_path_signs_like_ring_would() {
        // PKCS#1 v1.5 signatures are deterministic: the rsa crate's output
        // (with our DigestInfo prefix) must verify with ring.
        let k = PrivateKey::load(&fixture("rsa1024.pkcs1.pem"), Algorithm::RsaSha256).unwrap();
        let sig = SigningKey::sign(&k, &b"message"[..]).unwrap();
        let PrivateKey::RsaSmall(small) = &k else {
            panic!("not the small-key path")
        };
        let public = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&small.to_public_key()).unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            public.as_bytes(),
        )
        .verify(b"message", &sig)
        .expect("a valid RSASSA-PKCS1-v1_5 SHA-256 signature");
    }
}
