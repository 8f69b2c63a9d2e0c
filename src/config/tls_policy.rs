//! `[tls_policy]`: the TLS policies recipient domains publish, as Tern
//! honours them (MTA-STS, RFC 8461), and the TLS reports (RFC 8460) it
//! sends them about its sessions. A reload puts a changed section in force,
//! except the report sender's own settings (see `admin::reload`).

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::Duration;

/// `[tls_policy]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsPolicyConfig {
    /// Honour DANE (RFC 7672): MX hosts of a domain with signed MX records
    /// and TLSA records get mail only over TLS with a certificate those
    /// records match (DNSSEC validated by Tern, from `[dns]
    /// trust_anchor`); a failing lookup defers, never plaintext. When the
    /// name servers strip DNSSEC signatures, DANE is off (logged).
    pub dane: bool,
    /// Look up and honour MTA-STS policies: a domain in `enforce` mode
    /// gets its mail only over TLS with a certificate valid for an MX
    /// host its policy names (else the mail is deferred, never sent in
    /// plaintext). Routes set by `[[route]]` are left as configured.
    pub mta_sts: bool,
    /// How long fetching a policy (or posting a report) may take.
    pub fetch_timeout: Duration,
    /// A policy is kept at least this long, whatever its `max_age`.
    pub min_policy_age: Duration,
    /// A policy is kept at most this long (the RFC's limit is a year).
    pub max_policy_age: Duration,
    /// The HTTPS port of policy hosts and report receivers (443; another
    /// only in labs and tests).
    pub https_port: u16,
    /// Send TLS reports (RFC 8460) each day to the domains that publish
    /// a policy and a `_smtp._tls` record, about the sessions of the day
    /// before: by mail through Tern's own queue, or by HTTPS POST.
    pub reports: bool,
    /// The reports' From (default `tls-reports@` the server's hostname).
    pub report_from: Option<String>,
    /// The reports' `organization-name` (default the server's hostname).
    pub report_organization: Option<String>,
    /// The reports' `contact-info` (an address or URL), if any.
    pub report_contact: Option<String>,
}

impl Default for TlsPolicyConfig {
    fn default() -> Self {
        Self {
            dane: true,
            mta_sts: true,
            fetch_timeout: Duration::from_secs(10),
            min_policy_age: Duration::from_secs(3600),
            max_policy_age: Duration::from_secs(31_557_600),
            https_port: 443,
            reports: false,
            report_from: None,
            report_organization: None,
            report_contact: None,
        }
    }
}

impl TlsPolicyConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        let key = |k: &str| at("tls_policy").field(k);
        let timeout = self.fetch_timeout.get();
        if timeout < std::time::Duration::from_secs(1)
            || timeout > std::time::Duration::from_secs(120)
        {
            issues.push(Issue::new(
                key("fetch_timeout"),
                "must be between 1s and 2m",
            ));
        }
        if self.min_policy_age.get() > self.max_policy_age.get() {
            issues.push(Issue::new(
                key("min_policy_age"),
                "must not be above max_policy_age",
            ));
        }
        if self.max_policy_age.get() > std::time::Duration::from_secs(31_557_600) {
            issues.push(Issue::new(
                key("max_policy_age"),
                "must be at most a year (31557600s)",
            ));
        }
        if self.https_port == 0 {
            issues.push(Issue::new(key("https_port"), "must not be 0"));
        }
        if let Some(from) = &self.report_from {
            let ok = from
                .rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && super::names::is_mail_domain(d));
            if !ok {
                issues.push(Issue::new(
                    key("report_from"),
                    format!("`{from}` is not a mail address"),
                ));
            }
        }
    }
}
