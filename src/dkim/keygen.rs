//! `tern dkim keygen` and `tern dkim record`: making a key file and the
//! DNS TXT record that publishes its public half. Never signs anything.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::Ed25519KeyPair;
use rsa::pkcs8::EncodePrivateKey as _;

use super::key::{Algorithm, KeyError, PrivateKey, RSA_MAX_BITS, RSA_MIN_BITS};

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// An RSA size outside 1024..=4096.
    #[error("RSA keys for DKIM have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, not {0}")]
    Bits(usize),
    /// Generating failed.
    #[error("key generation failed: {0}")]
    Generate(String),
    /// The file could not be written (it may already exist).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The new key did not load back.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The DER of an Ed25519 PKCS#8 v1 key up to its 32-byte seed:
/// SEQUENCE { version 0, AlgorithmIdentifier { id-Ed25519 },
/// OCTET STRING { OCTET STRING (32 bytes) } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new private key as PKCS#8 PEM.
pub fn generate(algorithm: Algorithm, rsa_bits: usize) -> Result<String, KeygenError> {
    let der = match algorithm {
        Algorithm::Ed25519Sha256 => {
            // PKCS#8 v1 (RFC 8410), as `openssl genpkey` writes it: ring's
            // own v2 output is one OpenSSL 3.0 cannot read.
            let mut seed = [0u8; 32];
            SystemRandom::new()
                .fill(&mut seed)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            let der = [&ED25519_PKCS8_V1_PREFIX[..], &seed].concat();
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            der
        }
        Algorithm::RsaSha256 => {
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&rsa_bits) {
                return Err(KeygenError::Bits(rsa_bits));
            }
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, rsa_bits)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            key.to_pkcs8_der()
                .map_err(|e| KeygenError::Generate(e.to_string()))?
                .as_bytes()
                .to_vec()
        }
    };
    Ok(pem("PRIVATE KEY", &der))
}

/// PEM text: base64 in 64-column lines between the BEGIN/END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `pem` to a new file readable by its owner only; an existing
/// file is never overwritten.
pub fn write_new(path: &Path, pem: &str) -> Result<(), KeygenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| KeygenError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(pem.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The zone-file line publishing `key` for `selector` and `domain`: the
/// record value split into strings of at most 255 bytes, as DNS requires.
pub fn zone_line(key: &PrivateKey, domain: &str, selector: &str) -> Result<String, KeyError> {
    let value = key.dns_record()?;
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    Ok(format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_publish() {
        for (alg, bits) in [(Algorithm::Ed25519Sha256, 0), (Algorithm::RsaSha256, 1024)] {
            let pem = generate(alg, bits).unwrap();
            let key = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(key.algorithm(), alg);
            let line = zone_line(&key, "shop.example", "s1").unwrap();
            assert!(
                line.starts_with("s1._domainkey.shop.example. IN TXT ( \"v=DKIM1; k="),
                "{line}"
            );
            assert!(line.split('"').all(|s| s.len() <= 255));
        }
        assert!(matches!(
            generate(Algorithm::RsaSha256, 512),
            Err(KeygenError::Bits(512))
        ));
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_new(&path, "x").unwrap();
        assert!(matches!(
            write_new(&path, "y"),
            Err(KeygenError::Write { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
