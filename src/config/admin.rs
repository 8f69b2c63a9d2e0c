//! `[admin]`: the operations HTTP API (queue views, shaping actions,
//! metrics) that `tern` and operators talk to.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::load::{self, Issue, KeyPath, at};
use super::{ConfigErrors, read_text};

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the API (`false`: no admin listener; the `tern` verbs that
    /// need the daemon then say so).
    pub enabled: bool,
    /// Where it listens. Anywhere but loopback needs a `token`.
    pub address: SocketAddr,
    /// A bearer token every request must carry (`Authorization: Bearer
    /// ...`); unset: none (allowed on loopback only).
    pub token: Option<String>,
    /// A token that may only read (GET: views, `/metrics`, the status
    /// page), for dashboards; at least 16 printable characters.
    pub read_token: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key`; the
    /// `tern` CLI trusts this very certificate (it reads the same file).
    pub tls_certificate: Option<std::path::PathBuf>,
    /// The private key (PEM) of `tls_certificate`.
    pub tls_key: Option<std::path::PathBuf>,
    /// Beyond loopback without TLS the token would cross the network in
    /// clear: refused unless this is true.
    pub allow_plaintext: bool,
}

impl AdminConfig {
    /// HTTPS is configured.
    pub fn tls(&self) -> bool {
        self.tls_certificate.is_some() && self.tls_key.is_some()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 8025)),
            token: None,
            read_token: None,
            tls_certificate: None,
            tls_key: None,
            allow_plaintext: false,
        }
    }
}

impl AdminConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if !self.enabled {
            return;
        }
        if !self.address.ip().is_loopback() && self.token.is_none() {
            issues.push(Issue::new(
                at("admin").field("token"),
                format!(
                    "the API listens on {}, beyond loopback: set a token",
                    self.address
                ),
            ));
        }
        if self.tls_certificate.is_some() != self.tls_key.is_some() {
            issues.push(Issue::new(
                at("admin").field("tls_key"),
                "set both tls_certificate and tls_key, or neither",
            ));
        }
        if !self.address.ip().is_loopback() && !self.tls() && !self.allow_plaintext {
            issues.push(Issue::new(
                at("admin").field("tls_certificate"),
                format!(
                    "the API listens on {} beyond loopback in plaintext (the token would cross the network in clear): set tls_certificate and tls_key, or allow_plaintext = true",
                    self.address
                ),
            ));
        }
        for (field, t) in [("token", &self.token), ("read_token", &self.read_token)] {
            check_token(t.as_deref(), at("admin").field(field), issues);
        }
        if self.read_token.is_some() && self.token.is_none() {
            issues.push(Issue::new(
                at("admin").field("read_token"),
                "a read-only token needs a full token too (without one, everyone may do everything)",
            ));
        }
    }
}

/// A bearer token, if set, is at least 16 printable characters.
pub(super) fn check_token(
    token: Option<&str>,
    key: Vec<super::load::Key>,
    issues: &mut Vec<Issue>,
) {
    if let Some(t) = token
        && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        issues.push(Issue::new(key, "must be at least 16 printable characters"));
    }
}

/// Only `[admin]`, for [`load_admin`]: other sections are ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AdminOnly {
    admin: AdminConfig,
}

/// Reads only `[admin]` of the config file at `path` (what the `tern`
/// verbs need to reach the daemon), passing over every other section and
/// its errors, a syntax error included: a half-edited config never locks
/// the operator out of the running daemon. Errors in `[admin]` itself
/// are reported with their line.
pub fn load_admin(path: &std::path::Path) -> Result<AdminConfig, ConfigErrors> {
    let mut text = read_text(path)?;
    if load::parse::<AdminOnly>(path, &text).is_err() {
        // A syntax error somewhere: read the `[admin]` table's own lines
        // (the others blanked, so that line numbers hold).
        text = only_table(&text, "admin");
    }
    let parsed = load::parse::<AdminOnly>(path, &text)?;
    let mut issues = Vec::new();
    parsed.value.admin.validate(&mut issues);
    parsed.finish(issues).map(|a| a.admin)
}

/// `text` with every line outside the `[name]` table blanked.
fn only_table(text: &str, name: &str) -> String {
    let header = format!("[{name}]");
    let mut inside = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            inside = t.split('#').next().unwrap_or("").trim() == header;
        }
        if inside {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_table_is_read_and_lines_hold() {
        let text = "[queue]\npath = 5\n[admin] # the API\naddress = \"127.0.0.1:9\"\n[delivery\n";
        let kept = only_table(text, "admin");
        assert_eq!(kept, "\n\n[admin] # the API\naddress = \"127.0.0.1:9\"\n\n");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, text).unwrap();
        let a = load_admin(&file).expect("the [admin] table is valid");
        assert_eq!(a.address.port(), 9);
        std::fs::write(&file, "[admin]\naddress = \"nowhere\"\n").unwrap();
        let e = load_admin(&file).unwrap_err().to_string();
        assert!(e.contains("t.toml:2") && e.contains("admin.address"), "{e}");
    }
}
