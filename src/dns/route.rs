//! Routing a recipient domain: to its MX hosts (RFC 5321 5.1, RFC 7505),
//! or to the hosts a `[[route]]` names, as an ordered list of hosts with
//! addresses plus the **site**, the key that groups domains served by the
//! same MX hosts so they share egress paths and limits.
//!
//! - MX records are sorted by preference; equal preferences are shuffled.
//! - No MX but the domain exists: the domain itself is the host (implicit MX).
//! - A null MX: permanent failure `556 5.1.10`, no connection.
//! - NXDOMAIN: permanent `550 5.1.2`. SERVFAIL or timeout: transient `4.4.3`.
//! - MX hosts whose addresses are all prohibited (loopback, unspecified,
//!   configured networks, Tern's own listeners): permanent `550 5.4.6`, a
//!   mail loop. Addresses a `smarthost` names explicitly are trusted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::resolver::{LookupError, MxAnswer, Resolver};
use crate::config::values::Cidr;
use crate::config::{Config, RouteConfig, TlsPolicy};
use crate::tlspolicy::Applied;

/// MX hosts tried per attempt, at most (RFC 5321 5.1 allows a limit).
const MAX_HOSTS: usize = 10;

/// One host to try, with its addresses (port included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host name (or the address, for a literal smarthost).
    pub name: String,
    /// Its addresses, in the order to try them.
    pub addrs: Vec<SocketAddr>,
    /// Its TLSA records, when DANE applies to it: TLS is then required and
    /// the certificate checked against them.
    pub dane: Option<Arc<crate::tlspolicy::tlsa::Tlsa>>,
}

/// Where a domain's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination site: the sorted MX host names (or the smarthosts).
    pub site: Arc<str>,
    /// The hosts, in the order to try them.
    pub hosts: Vec<Host>,
    /// STARTTLS policy for this destination.
    pub tls: TlsPolicy,
    /// Where `tls` comes from (the config, an operator's route, or a
    /// policy the domain publishes).
    pub policy: Applied,
}

/// Why a domain cannot be routed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Never deliverable as things stand: the recipients fail.
    Permanent {
        /// SMTP-style code for logs and bounces.
        code: u16,
        /// Enhanced status code.
        esc: [u8; 3],
        /// What happened.
        text: String,
    },
    /// Try again later: the recipients are deferred.
    Transient {
        /// Enhanced status code.
        esc: [u8; 3],
        /// What happened.
        text: String,
    },
}

/// A site's name: its MX host names, lower-cased, sorted, without
/// repeats, comma-separated (as delivery, the views and `--mx` name it).
pub fn site_name<'a>(hosts: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<String> = hosts
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

impl RouteError {
    /// What happened, for people.
    pub fn text(&self) -> &str {
        match self {
            Self::Permanent { text, .. } | Self::Transient { text, .. } => text,
        }
    }
}

/// Routes domains, applying the `[[route]]` overrides.
pub struct Router {
    resolver: Arc<dyn Resolver>,
    overrides: HashMap<String, RouteConfig>,
    port: u16,
    tls: TlsPolicy,
    prohibited: Vec<Cidr>,
    own: Vec<SocketAddr>,
}

impl Router {
    /// A router for `config`, resolving through `resolver`.
    pub fn new(config: &Config, resolver: Arc<dyn Resolver>) -> Self {
        Self {
            resolver,
            overrides: config
                .routes
                .iter()
                .map(|r| (crate::config::names::to_ascii(&r.domain), r.clone()))
                .collect(),
            port: config.delivery.port,
            tls: config.delivery.tls,
            prohibited: config.dns.prohibited_targets.clone(),
            own: config.listeners.iter().map(|l| l.address).collect(),
        }
    }

    /// A router for a reloaded `config`, on the same resolver (and so the
    /// same DNS cache).
    pub fn reloaded(&self, config: &Config) -> Self {
        Self::new(config, self.resolver.clone())
    }

    /// A route through these relay hosts ("host:port" or "host"), for mail
    /// an operator rebound there.
    pub async fn via(&self, hosts: &[String]) -> Result<Route, RouteError> {
        self.smarthost(hosts, self.tls).await
    }

    /// Where mail for `domain` goes now.
    pub async fn route(&self, domain: &str) -> Result<Route, RouteError> {
        let domain = crate::config::names::to_ascii(domain.trim_end_matches('.'));
        if let Some(r) = self.overrides.get(&domain) {
            let tls = r.tls.unwrap_or(self.tls);
            return if r.smarthost.is_empty() {
                self.fixed_mx(&domain, &r.mx, tls).await
            } else {
                self.smarthost(&r.smarthost, tls).await
            };
        }
        let names = match self.resolver.mx(&domain).await {
            Ok(MxAnswer::Records(mut records)) => {
                records.sort_by_key(|(pref, _)| *pref);
                shuffle_equal_preferences(&mut records);
                records.into_iter().map(|(_, h)| h).collect()
            }
            Ok(MxAnswer::NoMx) => vec![domain.clone()], // implicit MX
            Ok(MxAnswer::NullMx) => {
                return Err(permanent(
                    556,
                    [5, 1, 10],
                    format!("{domain} accepts no mail (null MX)"),
                ));
            }
            Err(LookupError::NxDomain(_)) => {
                return Err(permanent(
                    550,
                    [5, 1, 2],
                    format!("domain {domain} does not exist"),
                ));
            }
            Err(e) => return Err(transient([4, 4, 3], e.to_string())),
        };
        (self.resolve_hosts(&domain, names, self.tls, Applied::Configured)).await
    }

    async fn fixed_mx(
        &self,
        domain: &str,
        mx: &[String],
        tls: TlsPolicy,
    ) -> Result<Route, RouteError> {
        self.resolve_hosts(
            domain,
            mx.iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            tls,
            Applied::Operator,
        )
        .await
    }

    /// Resolves MX host names to addresses, dropping prohibited ones.
    async fn resolve_hosts(
        &self,
        domain: &str,
        names: Vec<String>,
        tls: TlsPolicy,
        policy: Applied,
    ) -> Result<Route, RouteError> {
        let site: Arc<str> = site_name(names.iter().map(String::as_str)).into();
        let (mut hosts, mut temporary, mut prohibited) = (Vec::new(), None, false);
        for name in names.iter().take(MAX_HOSTS) {
            let ips = match self.resolver.addresses(name).await {
                Ok(ips) => ips,
                Err(e @ LookupError::Temporary { .. }) => {
                    temporary = Some(e.to_string());
                    continue;
                }
                Err(_) => continue, // a host without addresses is skipped
            };
            let addrs: Vec<SocketAddr> = ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, self.port))
                .collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !self.is_prohibited(*a))
                .collect();
            prohibited |= allowed.len() < addrs.len();
            if !allowed.is_empty() {
                hosts.push(Host {
                    name: name.clone(),
                    addrs: allowed,
                    dane: None,
                });
            }
        }
        if !hosts.is_empty() {
            return Ok(Route {
                site,
                hosts,
                tls,
                policy,
            });
        }
        Err(match (temporary, prohibited) {
            (Some(reason), _) => transient([4, 4, 3], reason),
            (None, true) => permanent(
                550,
                [5, 4, 6],
                format!("mail for {domain} loops back to this system (MX at a prohibited address)"),
            ),
            (None, false) => permanent(
                550,
                [5, 4, 4],
                format!("no MX host of {domain} has an address"),
            ),
        })
    }

    async fn smarthost(&self, list: &[String], tls: TlsPolicy) -> Result<Route, RouteError> {
        let mut hosts = Vec::new();
        let mut temporary = None;
        for entry in list {
            let Some((host, port)) = crate::config::names::parse_host_port(entry) else {
                continue;
            };
            let port = port.unwrap_or(self.port);
            let ips = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => match self.resolver.addresses(&host).await {
                    Ok(ips) => ips,
                    Err(e) => {
                        temporary = Some(e.to_string());
                        continue;
                    }
                },
            };
            let addrs: Vec<SocketAddr> = ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .filter(|a| !self.own.contains(a))
                .collect();
            if !addrs.is_empty() {
                hosts.push(Host {
                    name: host,
                    addrs,
                    dane: None,
                });
            }
        }
        let site: Arc<str> = format!("smarthost:{}", list.join(",")).into();
        match (hosts.is_empty(), temporary) {
            (false, _) => Ok(Route {
                site,
                hosts,
                tls,
                policy: Applied::Operator,
            }),
            (true, Some(reason)) => Err(transient([4, 4, 3], reason)),
            (true, None) => Err(permanent(
                550,
                [5, 4, 6],
                "the smarthost is this system itself (mail loop)".into(),
            )),
        }
    }

    fn is_prohibited(&self, a: SocketAddr) -> bool {
        a.ip().is_unspecified()
            || self.own.contains(&a)
            || self.prohibited.iter().any(|n| n.contains(a.ip()))
    }
}

fn permanent(code: u16, esc: [u8; 3], text: String) -> RouteError {
    RouteError::Permanent { code, esc, text }
}

fn transient(esc: [u8; 3], text: String) -> RouteError {
    RouteError::Transient { esc, text }
}

/// Randomizes the order within each run of equal preference (RFC 5321 5.1).
fn shuffle_equal_preferences(records: &mut [(u16, String)]) {
    let mut start = 0;
    while start < records.len() {
        let pref = records[start].0;
        let end = records[start..]
            .iter()
            .position(|(p, _)| *p != pref)
            .map_or(records.len(), |n| start + n);
        fastrand::shuffle(&mut records[start..end]);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_preferences_are_shuffled_but_order_kept() {
        let base: Vec<(u16, String)> = [(10, "a"), (10, "b"), (10, "c"), (20, "d")]
            .iter()
            .map(|(p, h)| (*p, h.to_string()))
            .collect();
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut r = base.clone();
            shuffle_equal_preferences(&mut r);
            assert_eq!(r[3].1, "d", "a worse preference never comes first");
            seen_first.insert(r[0].1.clone());
        }
        assert_eq!(
            seen_first.len(),
            3,
            "each equal-preference host leads sometimes"
        );
    }
}
