//! `tern dkim keygen` and `tern dkim record`: make a signing key and print
//! the DNS record to publish for it. Works offline; never needs the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::dkim::key::{Algorithm, PrivateKey};
use crate::dkim::keygen;

/// The DKIM verbs.
#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Generate a private key file (PKCS#8 PEM, mode 0600, never
    /// overwriting) and print the DNS TXT record to publish and the
    /// `[[dkim.key]]` entry that uses it.
    Keygen {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// The key type.
        #[arg(long, value_enum, default_value_t = KeyType::Rsa)]
        algorithm: KeyType,
        /// RSA key size (1024 to 4096; 2048 is what receivers expect).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the key (default: `<domain>.<selector>.pem`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the DNS TXT record for an existing key file.
    Record {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// The PEM private key file.
        #[arg(long)]
        key: PathBuf,
    },
}

/// A key type on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyType {
    /// rsa-sha256.
    Rsa,
    /// ed25519-sha256.
    Ed25519,
}

/// Runs a DKIM verb.
pub fn main(command: DkimCommand) -> ExitCode {
    let result = match command {
        DkimCommand::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        } => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
            keygen_to(&domain, &selector, algorithm, bits, &out)
        }
        DkimCommand::Record {
            domain,
            selector,
            key,
        } => record(&domain, &selector, &key),
    };
    match result {
        Ok(text) => {
            out_text!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_names(domain: &str, selector: &str) -> Result<(), String> {
    use crate::config::names::is_hostname;
    if !is_hostname(domain) || domain.ends_with('.') {
        return Err(format!("{domain:?} is not an ASCII domain name"));
    }
    if !is_hostname(selector) || selector.ends_with('.') {
        return Err(format!("{selector:?} is not a DNS label"));
    }
    Ok(())
}

fn keygen_to(
    domain: &str,
    selector: &str,
    kind: KeyType,
    bits: usize,
    out: &Path,
) -> Result<String, String> {
    check_names(domain, selector)?;
    let algorithm = match kind {
        KeyType::Rsa => Algorithm::RsaSha256,
        KeyType::Ed25519 => Algorithm::Ed25519Sha256,
    };
    let pem = keygen::generate(algorithm, bits).map_err(|e| e.to_string())?;
    keygen::write_new(out, &pem).map_err(|e| e.to_string())?;
    let key = PrivateKey::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let zone = keygen::zone_line(&key, domain, selector).map_err(|e| e.to_string())?;
    Ok(format!(
        "Wrote {out}.\n\nPublish this DNS record:\n\n{zone}\n\nThen add to the config:\n\n\
         [[dkim.key]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\n\
         algorithm = \"{alg}\"\nkey = \"{out}\"\n",
        out = out.display(),
        alg = algorithm.name(),
    ))
}

fn record(domain: &str, selector: &str, path: &Path) -> Result<String, String> {
    check_names(domain, selector)?;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = PrivateKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    let zone = keygen::zone_line(&key, domain, selector).map_err(|e| e.to_string())?;
    Ok(format!("{zone}\n"))
}
