//! Outbound TLS policy: which policy a recipient domain's mail is held to,
//! and what its sessions achieved.
//!
//! - [`TlsPolicies::apply`] takes a domain's route (from `dns::route`) and
//!   applies the policy the domain publishes: MTA-STS ([`mta_sts`],
//!   discovery and a crash-safe cache; [`sts`], the policy's syntax).
//!   `enforce` keeps only the MX hosts the policy names and requires a
//!   certificate valid for them (`tls = "verify"`, checked by the SMTP
//!   client); `testing` changes nothing but the reports. Routes an
//!   operator chose (`[[route]]`, rebinds) are left as configured.
//! - [`TlsPolicies::session`] counts each session against the policy for
//!   TLS-RPT ([`report`]), and [`send`] mails (or posts) the daily
//!   reports through Tern's own queue.
//! - [`https`] is the HTTPS client both use, through Tern's resolver.
//!
//! It never opens SMTP connections and never decides retries: a route
//! that no host can satisfy is a transient routing error, deferred like
//! any other.

mod applied;
pub mod dane;
pub mod https;
pub mod mta_sts;
pub mod report;
pub mod send;
pub mod sts;
pub mod tlsa;

use std::net::IpAddr;
use std::sync::Arc;

pub use applied::Applied;

use crate::config::TlsPolicy;
use crate::dns::route::{Route, RouteError};
use crate::smtp::client::TlsFailure;
use mta_sts::{Found, MtaSts};
use report::{Failure, PolicyDetails, Reports};
use sts::Mode;

/// What one session (a connection to an MX host) achieved.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    /// The source address it was made from, if bound.
    pub source_ip: Option<IpAddr>,
    /// The MX host.
    pub mx_host: &'a str,
    /// The MX address.
    pub mx_ip: IpAddr,
    /// Why TLS was not authenticated, if it was not.
    pub failure: Option<(TlsFailure, &'a str)>,
}

/// The TLS policy component of a running Tern.
pub struct TlsPolicies {
    dane: Option<dane::Dane>,
    sts: Option<Arc<MtaSts>>,
    reports: Arc<Reports>,
}

impl std::fmt::Debug for TlsPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicies")
            .field("dane", &self.dane.is_some())
            .field("mta_sts", &self.sts.is_some())
            .finish()
    }
}

impl TlsPolicies {
    /// Policies from DANE lookups and MTA-STS discovery (`None`: not
    /// looked up), counting into `reports`.
    pub fn new(dane: Option<dane::Dane>, sts: Option<Arc<MtaSts>>, reports: Arc<Reports>) -> Self {
        Self { dane, sts, reports }
    }

    /// No published policy is looked up; nothing is counted to disk.
    pub fn off() -> Self {
        Self::new(None, None, Arc::new(Reports::new(None)))
    }

    /// The MTA-STS policy cached for `domain`, if any is in force.
    pub fn mta_sts(&self, domain: &str) -> Option<Arc<mta_sts::Cached>> {
        self.sts.as_ref().and_then(|m| m.cached(domain))
    }

    /// The counts of TLS reports.
    pub fn reports(&self) -> &Arc<Reports> {
        &self.reports
    }

    /// The route of mail for `domain` under the policy it publishes:
    /// DANE when its MX records are signed and a host has TLSA records
    /// (DANE wins over MTA-STS, RFC 8461 2), else MTA-STS.
    pub async fn apply(&self, domain: &str, mut route: Route) -> Result<Route, RouteError> {
        if route.policy != Applied::Configured {
            return Ok(route);
        }
        if let Some(dane) = &self.dane {
            match dane.apply(domain, &mut route).await {
                Ok(true) => {
                    route.policy = Applied::Dane;
                    return Ok(route);
                }
                Ok(false) => {}
                Err(e) => {
                    if let Some(result) = e.result {
                        let details = PolicyDetails::bare("tlsa", domain);
                        self.lookup_failed(&details, result, e.route.text().to_owned());
                    }
                    return Err(e.route);
                }
            }
        }
        let Some(sts) = &self.sts else {
            return Ok(route);
        };
        let cached = match sts.policy(domain).await {
            Found::None => return Ok(route),
            Found::Unavailable { result, why } => {
                tracing::warn!(domain, error = %why, "MTA-STS policy unavailable; delivering as if none were published");
                self.lookup_failed(&PolicyDetails::bare("sts", domain), result, why);
                return Ok(route);
            }
            Found::Policy(c) => c,
        };
        route.policy = Applied::MtaSts(cached.policy.mode);
        if cached.policy.mode != Mode::Enforce {
            return Ok(route);
        }
        route.tls = TlsPolicy::Verify;
        route.hosts.retain(|h| cached.policy.allows(&h.name));
        if route.hosts.is_empty() {
            let why = format!("no MX host of {domain} is named by its MTA-STS policy (enforce)");
            let details = self.details(domain, &route, Some(&cached));
            self.lookup_failed(&details, "validation-failure", why.clone());
            return Err(RouteError::Transient {
                esc: [4, 7, 5],
                text: why,
            });
        }
        Ok(route)
    }

    /// Counts a session for `domain` over `route` (only under a policy the
    /// domain publishes): a success if TLS was authenticated (and, for
    /// MTA-STS, the host is one the policy names), else a failure.
    pub fn session(&self, domain: &str, route: &Route, s: &Session<'_>) {
        if !route.policy.published() {
            return;
        }
        let cached = match route.policy {
            Applied::MtaSts(_) => self.mta_sts(domain),
            _ => None,
        };
        let details = self.details(domain, route, cached.as_deref());
        let outside = cached.is_some_and(|c| !c.policy.allows(s.mx_host));
        let failed = match (s.failure, outside) {
            (Some((f, why)), _) => Some((f.result_type(), why.to_owned())),
            (None, true) => Some((
                "validation-failure",
                format!("{} is not named by the MTA-STS policy", s.mx_host),
            )),
            (None, false) => None,
        };
        match failed {
            None => self.reports.success(&details),
            Some((result, why)) => {
                let f = failure(
                    result,
                    s.source_ip,
                    Some(s.mx_host),
                    Some(s.mx_ip),
                    Some(why),
                );
                self.reports.failure(&details, f)
            }
        }
    }

    /// Counts a failure of the policy itself (a lookup, a fetch, no MX
    /// host left), not of a session.
    fn lookup_failed(&self, details: &PolicyDetails, result: &str, why: String) {
        (self.reports).failure(details, failure(result, None, None, None, Some(why)));
    }

    /// The report's description of the policy of `domain` over `route`
    /// (its MTA-STS policy, `cached`, if it has one).
    fn details(
        &self,
        domain: &str,
        route: &Route,
        cached: Option<&mta_sts::Cached>,
    ) -> PolicyDetails {
        if route.policy == Applied::Dane {
            let records = route.hosts.iter().filter_map(|h| h.dane.as_ref());
            return PolicyDetails {
                policy_type: "tlsa".into(),
                policy_string: records
                    .flat_map(|t| t.records.iter().map(|r| r.to_string()))
                    .collect(),
                policy_domain: domain.to_owned(),
                mx_host: route.hosts.iter().map(|h| h.name.clone()).collect(),
            };
        }
        PolicyDetails {
            policy_type: "sts".into(),
            policy_string: cached
                .map(|c| {
                    c.text
                        .lines()
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            policy_domain: domain.to_owned(),
            mx_host: cached.map(|c| c.policy.mx.clone()).unwrap_or_default(),
        }
    }
}

fn failure(
    result: &str,
    sending_ip: Option<IpAddr>,
    mx_host: Option<&str>,
    receiving_ip: Option<IpAddr>,
    info: Option<String>,
) -> Failure {
    Failure {
        result_type: result.to_owned(),
        sending_ip,
        mx_host: mx_host.map(str::to_owned),
        receiving_ip,
        info,
    }
}
