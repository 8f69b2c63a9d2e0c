//! Which tenant owns which sending domains (`[[tenant]] domains`), and
//! what a tenant's mail from a domain it does not own gets: the one place
//! that says whose a domain is. Intake asks it before signing; it never
//! signs or refuses anything itself.

use crate::config::names;
use std::collections::HashMap;

use crate::config::{Config, SenderMismatch};

/// The tenants' declared domains.
#[derive(Debug, Default)]
pub struct TenantDomains {
    /// Per tenant that declares domains: its patterns (lowercase; a
    /// leading `*.` for subdomains), its policy, and whether its envelope
    /// senders are held to them too.
    by_tenant: HashMap<String, (Vec<String>, SenderMismatch, bool)>,
    /// Per AUTH user that declares domains: its patterns.
    by_user: HashMap<String, Vec<String>>,
}

/// What may sign a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Its own domain's key, where the domain's owner allows it.
    Own,
    /// The platform domain's key only.
    PlatformOnly,
    /// Refused: the tenant does not own the domain.
    Refuse {
        /// The domain.
        domain: String,
        /// The tenant.
        tenant: String,
    },
}

fn matches(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern == domain,
    }
}

impl TenantDomains {
    /// From a validated config.
    pub fn new(config: &Config) -> Self {
        let by_tenant = config
            .tenants
            .iter()
            .filter(|t| !t.domains.is_empty())
            .map(|t| {
                let patterns = t
                    .domains
                    .iter()
                    .map(|d| names::pattern_to_ascii(d))
                    .collect();
                (
                    t.name.clone(),
                    (patterns, t.sender_mismatch, t.restrict_sender),
                )
            })
            .collect();
        let by_user = (config.auth.users.iter())
            .filter(|u| !u.domains.is_empty())
            .map(|u| {
                (
                    u.name.clone(),
                    u.domains
                        .iter()
                        .map(|d| names::pattern_to_ascii(d))
                        .collect(),
                )
            })
            .collect();
        Self { by_tenant, by_user }
    }

    /// True when no tenant or user declares domains (nothing to check).
    pub fn is_empty(&self) -> bool {
        self.by_tenant.is_empty() && self.by_user.is_empty()
    }

    /// The tenants that declare `domain` (lowercase) as theirs.
    fn owners<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.by_tenant
            .iter()
            .filter(move |(_, (p, _, _))| p.iter().any(|p| matches(p, domain)))
            .map(|(t, _)| t.as_str())
    }

    /// True when mail of `tenant` may be signed with the key of
    /// `key_domain`: no tenant owns that domain, or this one does.
    pub fn may_sign(&self, tenant: Option<&str>, key_domain: &str) -> bool {
        let d = names::to_ascii(key_domain);
        let mut owners = self.owners(&d).peekable();
        owners.peek().is_none() || owners.any(|o| Some(o) == tenant)
    }

    /// What may sign mail of `tenant` (sent by AUTH `user`, if any)
    /// whose checked domain (From, or the envelope sender's, per `[dkim]
    /// signing_domain`) is `domain`, and whose envelope sender's domain
    /// is `sender` (`None` for `<>`). A user's own domains narrow its
    /// tenant's.
    pub fn signing(
        &self,
        tenant: Option<&str>,
        user: Option<&str>,
        domain: Option<&str>,
        sender: Option<&str>,
    ) -> Signing {
        let tenant_rules = tenant.and_then(|t| self.by_tenant.get(t));
        let user_rules = user.and_then(|u| self.by_user.get(u));
        let patterns = match (user_rules, tenant_rules) {
            (Some(u), _) => u,
            (None, Some((p, _, _))) => p,
            (None, None) => return Signing::Own,
        };
        let policy = tenant_rules.map_or(SenderMismatch::Reject, |t| t.1);
        let refuse = |d: String| Signing::Refuse {
            domain: d,
            tenant: tenant.or(user).unwrap_or_default().to_owned(),
        };
        if let (Some(s), Some((_, _, true))) = (sender, tenant_rules) {
            let s = names::to_ascii(s);
            if !patterns.iter().any(|p| matches(p, &s)) {
                return refuse(s);
            }
        }
        let d = names::to_ascii(domain.unwrap_or(""));
        if patterns.iter().any(|p| matches(p, &d)) {
            return Signing::Own;
        }
        match policy {
            SenderMismatch::Reject => refuse(d),
            SenderMismatch::Platform => Signing::PlatformOnly,
            SenderMismatch::Allow => Signing::Own,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    fn domains() -> TenantDomains {
        let mut c = Config::default();
        for (name, d, policy) in [
            (
                "a",
                vec!["a.example", "*.a.example"],
                SenderMismatch::Reject,
            ),
            ("b", vec!["b.example"], SenderMismatch::Platform),
            ("c", vec!["c.example"], SenderMismatch::Allow),
        ] {
            c.tenants.push(TenantConfig {
                name: name.into(),
                domains: d.into_iter().map(str::to_owned).collect(),
                sender_mismatch: policy,
                ..TenantConfig::default()
            });
        }
        TenantDomains::new(&c)
    }

    #[test]
    fn a_tenant_signs_only_as_itself() {
        let t = domains();
        assert_eq!(
            t.signing(Some("a"), None, Some("News.A.example"), None),
            Signing::Own
        );
        assert!(matches!(
            t.signing(Some("a"), None, Some("b.example"), None),
            Signing::Refuse { .. }
        ));
        assert!(matches!(
            t.signing(Some("a"), None, Some("xa.example"), None),
            Signing::Refuse { .. }
        ));
        assert_eq!(
            t.signing(Some("b"), None, Some("a.example"), None),
            Signing::PlatformOnly
        );
        assert_eq!(
            t.signing(Some("c"), None, Some("a.example"), None),
            Signing::Own
        );
        assert!(
            !t.may_sign(Some("c"), "a.example"),
            "allow never lends a's key"
        );
        assert!(t.may_sign(Some("c"), "unowned.example"));
        assert!(!t.may_sign(None, "b.example"), "no tenant: no tenant's key");
        assert_eq!(t.signing(None, None, Some("b.example"), None), Signing::Own);
        assert!(t.may_sign(Some("a"), "sub.a.example"));
    }

    #[test]
    fn users_narrow_their_tenant_and_senders_can_be_held_too() {
        let mut c = Config::default();
        c.tenants.push(TenantConfig {
            name: "a".into(),
            domains: vec!["a.example".into(), "*.a.example".into()],
            restrict_sender: true,
            ..TenantConfig::default()
        });
        c.auth.users.push(crate::config::UserConfig {
            name: "news".into(),
            tenant: Some("a".into()),
            domains: vec!["news.a.example".into()],
            ..crate::config::UserConfig::default()
        });
        let t = TenantDomains::new(&c);
        let own = |user, from, sender| t.signing(Some("a"), user, Some(from), sender);
        assert_eq!(own(Some("news"), "news.a.example", None), Signing::Own);
        assert!(matches!(
            own(Some("news"), "a.example", None),
            Signing::Refuse { .. }
        ));
        assert_eq!(
            own(None, "a.example", Some("bounces.a.example")),
            Signing::Own
        );
        assert!(
            matches!(own(None, "a.example", Some("other.example")), Signing::Refuse { domain, .. } if domain == "other.example"),
            "the envelope sender is held to the domains"
        );
    }
}
