//! `[admin]`: the operations HTTP API (queue views, shaping actions,
//! metrics) that `tern` and operators talk to.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};

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
