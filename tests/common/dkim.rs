//! DKIM verification for the tests, by two implementations: Python's
//! dkimpy (independent of Tern; installed from PyPI into the target
//! directory on first use) and mail-auth's verifier. Both read the public
//! keys from the test's own DNS server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use tern::config::{DkimKeyConfig, KeyAlgorithm};
use tern::dkim::key::PrivateKey;

/// A test key file.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dkim")
        .join(name)
}

/// A `[[dkim.key]]` for a fixture file.
pub fn key(domain: &str, selector: &str, file: &str) -> DkimKeyConfig {
    let pem = std::fs::read(fixture(file)).unwrap();
    let algorithm = match PrivateKey::from_pem(&pem).unwrap().algorithm() {
        tern::dkim::key::Algorithm::RsaSha256 => KeyAlgorithm::RsaSha256,
        tern::dkim::key::Algorithm::Ed25519Sha256 => KeyAlgorithm::Ed25519Sha256,
    };
    DkimKeyConfig {
        domain: domain.into(),
        selector: selector.into(),
        algorithm,
        key: fixture(file),
    }
}

/// Zone-file lines (origin `test.`) publishing each key's record.
pub fn zone_records(keys: &[DkimKeyConfig]) -> String {
    let mut out = String::new();
    for k in keys {
        let pem = std::fs::read(&k.key).unwrap();
        let record = PrivateKey::from_pem(&pem).unwrap().dns_record().unwrap();
        let strings: Vec<String> = record
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap()))
            .collect();
        let owner = k.domain.strip_suffix(".test").unwrap();
        out.push_str(&format!(
            "{}._domainkey.{owner} IN TXT {}\n",
            k.selector,
            strings.join(" ")
        ));
    }
    out
}

/// `(d=, a=)` of each DKIM-Signature field, top to bottom.
pub fn signatures(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ");
    let tag = |field: &str, t: &str| -> String {
        field
            .split(';')
            .filter_map(|p| p.trim().strip_prefix(t))
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    unfolded
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .map(|l| (tag(l, "d="), tag(l, "a=")))
        .collect()
}

/// Where dkimpy is installed, or `None` when this machine has no Python.
/// Installs it on first use; a failed install with Python present panics
/// (the verification must not be skipped silently).
fn dkimpy_path() -> Option<&'static PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let python = std::process::Command::new("python3")
            .arg("--version")
            .output();
        if !python.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED: python3 is not installed; dkimpy verification not run");
            return None;
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dkimpy-1.1.8");
        let importable = |dir: &Path| {
            std::process::Command::new("python3")
                .args(["-c", "import dkim, nacl.signing, dns.resolver"])
                .env("PYTHONPATH", dir)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !importable(&dir) {
            let out = std::process::Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-input", "--root-user-action=ignore", "--target"])
                .arg(&dir)
                .args(["dkimpy==1.1.8", "dnspython==2.7.0", "pynacl==1.5.0"])
                .output()
                .expect("run pip");
            assert!(
                out.status.success() && importable(&dir),
                "installing dkimpy from PyPI failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(dir)
    })
    .as_ref()
}

/// Verifies every signature of each message with dkimpy: per message, one
/// result per signature. `None` when Python is absent.
pub async fn dkimpy_verify(dns: SocketAddr, messages: &[Vec<u8>]) -> Option<Vec<Vec<bool>>> {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = dir.path().join(format!("{i}.eml"));
            std::fs::write(&p, m).unwrap();
            p
        })
        .collect();
    // Blocking work off this runtime's thread: the DNS server dkimpy asks
    // runs on it.
    let out = tokio::task::spawn_blocking(move || {
        let path = dkimpy_path()?.clone();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/dkim_verify.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(dns.ip().to_string())
            .arg(dns.port().to_string())
            .args(&files)
            .env("PYTHONPATH", path)
            .output()
            .expect("run python3");
        Some(out)
    })
    .await
    .unwrap()?;
    assert!(
        out.status.success(),
        "dkim_verify.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_bool().unwrap())
                .collect()
        })
        .collect();
    drop(dir);
    Some(results)
}

/// Verifies every signature with mail-auth: `(d=, passed)` each.
pub async fn mail_auth_verify(dns: SocketAddr, message: &[u8]) -> Vec<(String, bool)> {
    let mut ns = NameServerConfig::udp_and_tcp(dns.ip());
    for c in ns.connections.iter_mut() {
        c.port = dns.port();
    }
    let mut opts = ResolverOpts::default();
    opts.attempts = 1;
    let auth = MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![ns]), opts)
        .expect("resolver");
    let msg = AuthenticatedMessage::parse(message).expect("a parsable message");
    auth.verify_dkim(&msg)
        .await
        .iter()
        .map(|o| {
            let d = o.signature().map(|s| s.d.clone()).unwrap_or_default();
            (d, *o.result() == DkimResult::Pass)
        })
        .collect()
}
