//! `[auth]` and `[[auth.user]]`: SMTP AUTH users (offered only after
//! STARTTLS) and the limits on failed attempts.

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::Rate;

/// `[auth]`: who may authenticate, and how many failures are tolerated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed AUTH attempts allowed per client address (a rate with a
    /// burst); beyond it AUTH answers `454 4.7.0` and the session closes.
    pub failure_rate: Rate,
    /// Failed attempts in one session before it is closed (`421 4.7.0`).
    pub max_failures_per_session: u32,
    /// The users. Generate a hash with `tern auth hash-password`.
    #[serde(rename = "user")]
    pub users: Vec<UserConfig>,
}

/// One AUTH user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// The user name, as sent in AUTH PLAIN or LOGIN.
    pub name: String,
    /// Argon2 password hash in PHC format (`$argon2id$v=19$...`), never the
    /// password itself.
    pub password_hash: String,
    /// The pool this user's mail is sent from (default: the listener's).
    pub pool: Option<String>,
    /// The tenant this user's mail belongs to (default: the listener's).
    pub tenant: Option<String>,
    /// The priority class of this user's mail (default: its tenant's, else
    /// the listener's).
    pub priority: Option<super::Priority>,
    /// The domains this user may send as (as `[[tenant]] domains`,
    /// narrower than its tenant's); its mail from another domain follows
    /// its tenant's `sender_mismatch` (reject without a tenant). Default:
    /// its tenant's.
    #[serde(default)]
    pub domains: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            failure_rate: "10/h,burst=5".parse().expect("valid rate"),
            max_failures_per_session: 3,
            users: Vec::new(),
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if self.max_failures_per_session == 0 {
            issues.push(Issue::new(
                at("auth").field("max_failures_per_session"),
                "must be at least 1",
            ));
        }
        for (i, u) in self.users.iter().enumerate() {
            let key = |f: &str| at("auth").field("user").index(i).field(f);
            super::egress::check_domain_patterns(&u.domains, key("domains"), issues);
            if u.name.is_empty() || u.name.chars().any(|c| c.is_control()) {
                issues.push(Issue::new(
                    key("name"),
                    "must be set, without control characters",
                ));
            } else if self.users[..i].iter().any(|o| o.name == u.name) {
                issues.push(Issue::new(
                    key("name"),
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            match argon2::PasswordHash::new(&u.password_hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                Ok(h) => issues.push(Issue::new(
                    key("password_hash"),
                    format!(
                        "{} hashes are not supported; use argon2 (tern auth hash-password)",
                        h.algorithm
                    ),
                )),
                Err(e) => issues.push(Issue::new(
                    key("password_hash"),
                    format!(
                        "not a PHC password hash ({e}); generate one with `tern auth hash-password`"
                    ),
                )),
            }
        }
    }
}
