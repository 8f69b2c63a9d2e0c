//! Which tenant owns which sending domains (`[[tenant]] domains`), and
//! what a tenant's mail from a domain it does not own gets: the one place
//! that says whose a domain is. Intake asks it before signing; it never
//! signs or refuses anything itself.

use std::collections::HashMap;

use crate::config::{Config, SenderMismatch};

/// The tenants' declared domains.
#[derive(Debug, Default)]
pub struct TenantDomains {
    /// Per tenant that declares domains: its patterns (lowercase; a
    /// leading `*.` for subdomains) and its policy.
    by_tenant: HashMap<String, (Vec<String>, SenderMismatch)>,
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
                let patterns = t.domains.iter().map(|d| d.to_ascii_lowercase()).collect();
                (t.name.clone(), (patterns, t.sender_mismatch))
            })
            .collect();
        Self { by_tenant }
    }

    /// True when no tenant declares domains (nothing to check).
    pub fn is_empty(&self) -> bool {
        self.by_tenant.is_empty()
    }

    /// The tenants that declare `domain` (lowercase) as theirs.
    fn owners<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.by_tenant
            .iter()
            .filter(move |(_, (p, _))| p.iter().any(|p| matches(p, domain)))
            .map(|(t, _)| t.as_str())
    }

    /// True when mail of `tenant` may be signed with the key of
    /// `key_domain`: no tenant owns that domain, or this one does.
    pub fn may_sign(&self, tenant: Option<&str>, key_domain: &str) -> bool {
        let d = key_domain.to_ascii_lowercase();
        let mut owners = self.owners(&d).peekable();
        owners.peek().is_none() || owners.any(|o| Some(o) == tenant)
    }

    /// What may sign mail of `tenant` whose checked domain (From, or the
    /// envelope sender's, per `[dkim] signing_domain`) is `domain`.
    pub fn signing(&self, tenant: Option<&str>, domain: Option<&str>) -> Signing {
        let Some((patterns, policy)) = tenant.and_then(|t| self.by_tenant.get(t)) else {
            return Signing::Own;
        };
        let d = domain.unwrap_or("").to_ascii_lowercase();
        if patterns.iter().any(|p| matches(p, &d)) {
            return Signing::Own;
        }
        match policy {
            SenderMismatch::Reject => Signing::Refuse {
                domain: d,
                tenant: tenant.unwrap_or_default().to_owned(),
            },
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
        assert_eq!(t.signing(Some("a"), Some("News.A.example")), Signing::Own);
        assert!(matches!(
            t.signing(Some("a"), Some("b.example")),
            Signing::Refuse { .. }
        ));
        assert!(matches!(
            t.signing(Some("a"), Some("xa.example")),
            Signing::Refuse { .. }
        ));
        assert_eq!(
            t.signing(Some("b"), Some("a.example")),
            Signing::PlatformOnly
        );
        assert_eq!(t.signing(Some("c"), Some("a.example")), Signing::Own);
        assert!(
            !t.may_sign(Some("c"), "a.example"),
            "allow never lends a's key"
        );
        assert!(t.may_sign(Some("c"), "unowned.example"));
        assert!(!t.may_sign(None, "b.example"), "no tenant: no tenant's key");
        assert_eq!(t.signing(None, Some("b.example")), Signing::Own);
        assert!(t.may_sign(Some("a"), "sub.a.example"));
    }
}
