//! DANE for SMTP (RFC 7672 2): which MX hosts of a domain have TLSA
//! records DANE lets Tern trust, following the decision table of the
//! README's "TLS policy" (RFC 7672 2.2, and KumoMTA's after its 2026
//! audit):
//!
//! | lookup | answer | what happens |
//! |---|---|---|
//! | validation | name servers strip signatures | DANE off ("insecure"), never "bogus" |
//! | MX | insecure | no DANE (MTA-STS or the configured `tls`) |
//! | MX | bogus, SERVFAIL, timeout | deferred (4.7.5 / 4.4.3) |
//! | MX | secure | hosts not in the signed MX set are dropped |
//! | host A/AAAA | insecure | no DANE for that host |
//! | host A/AAAA | bogus, SERVFAIL | host skipped |
//! | TLSA | secure, usable | TLS required, certificate checked against TLSA |
//! | TLSA | secure, none usable | TLS required, not authenticated |
//! | TLSA | none, insecure | no DANE for that host |
//! | TLSA | bogus, SERVFAIL, timeout | host skipped (never plaintext) |
//!
//! No host left: deferred. It owns these lookups; the SMTP client checks
//! certificates against the records it finds.

use std::collections::HashSet;
use std::sync::Arc;

use hickory_resolver::proto::rr::{RData, RecordType};

use super::tlsa::{Tlsa, TlsaRecord};
use crate::dns::dnssec::{DnssecResolver, Validated};
use crate::dns::route::{Route, RouteError};

/// Why DANE defers a domain's mail: the routing error, and the RFC 8460
/// result type its TLS report counts (`None`: not a policy failure, such
/// as a DNS timeout).
#[derive(Debug, Clone)]
pub struct DaneError {
    /// What the recipients get (a deferral).
    pub route: RouteError,
    /// `dnssec-invalid` or `tlsa-invalid`, when the policy failed.
    pub result: Option<&'static str>,
}

/// DANE lookups on the validating resolver.
pub struct Dane {
    resolver: Arc<DnssecResolver>,
    port: u16,
}

/// What DANE makes of a host.
enum HostDane {
    /// No DANE: the domain's other policy applies to it.
    None,
    /// DANE applies with these records.
    Tlsa(Tlsa),
    /// The host cannot be used now (why; whether DNSSEC said "bogus").
    Skip(String, bool),
}

impl Dane {
    /// DANE through `resolver`, for MX hosts on `port` (TLSA at
    /// `_<port>._tcp.<host>`).
    pub fn new(resolver: Arc<DnssecResolver>, port: u16) -> Self {
        Self { resolver, port }
    }

    /// Applies DANE to `domain`'s route: `Ok(true)` if some host now
    /// carries TLSA records, `Ok(false)` if DANE does not apply.
    pub async fn apply(&self, domain: &str, route: &mut Route) -> Result<bool, DaneError> {
        if !self.resolver.available().await {
            return Ok(false);
        }
        let names: HashSet<String> = match self.resolver.records(domain, RecordType::MX).await {
            Validated::Secure(mx) => mx
                .iter()
                .filter_map(|r| match r {
                    RData::MX(m) => Some(
                        m.exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    ),
                    _ => None,
                })
                .collect(),
            Validated::NoRecords => [domain.to_owned()].into_iter().collect(),
            Validated::Insecure => return Ok(false),
            Validated::Bogus(why) => {
                return Err(defer(
                    [4, 7, 5],
                    format!("DNSSEC: the MX records of {domain} are bogus: {why}"),
                    Some("dnssec-invalid"),
                ));
            }
            Validated::Failed(why) => {
                return Err(defer(
                    [4, 4, 3],
                    format!("DNSSEC lookup of the MX of {domain}: {why}"),
                    None,
                ));
            }
        };
        route.hosts.retain(|h| names.contains(&h.name));
        let (mut any, mut skipped, mut bogus) = (false, Vec::new(), false);
        let mut kept = Vec::with_capacity(route.hosts.len());
        for mut host in std::mem::take(&mut route.hosts) {
            match self.host(&host.name).await {
                HostDane::None => kept.push(host),
                HostDane::Tlsa(t) => {
                    any = true;
                    host.dane = Some(Arc::new(t));
                    kept.push(host);
                }
                HostDane::Skip(why, is_bogus) => {
                    bogus |= is_bogus;
                    skipped.push(why)
                }
            }
        }
        route.hosts = kept;
        if route.hosts.is_empty() {
            let why = match skipped.is_empty() {
                true => format!("no MX host of {domain} is in its signed MX records"),
                false => format!(
                    "no MX host of {domain} can be used under DANE: {}",
                    skipped.join("; ")
                ),
            };
            let result = match (skipped.is_empty(), bogus) {
                (true, _) => Some("validation-failure"),
                (false, true) => Some("dnssec-invalid"),
                (false, false) => None,
            };
            return Err(defer([4, 7, 5], why, result));
        }
        Ok(any)
    }

    async fn host(&self, host: &str) -> HostDane {
        let mut secure = false;
        for kind in [RecordType::A, RecordType::AAAA] {
            match self.resolver.records(host, kind).await {
                Validated::Secure(_) => secure = true,
                Validated::NoRecords => {}
                Validated::Insecure => return HostDane::None,
                Validated::Bogus(why) => {
                    return HostDane::Skip(format!("{host}: its address records: {why}"), true);
                }
                Validated::Failed(why) => {
                    return HostDane::Skip(format!("{host}: its address records: {why}"), false);
                }
            }
        }
        if !secure {
            return HostDane::None;
        }
        let name = format!("_{}._tcp.{host}", self.port);
        match self.resolver.records(&name, RecordType::TLSA).await {
            Validated::Secure(rdata) => HostDane::Tlsa(Tlsa::new(
                rdata
                    .iter()
                    .filter_map(|r| match r {
                        RData::TLSA(t) => Some(TlsaRecord {
                            usage: t.cert_usage.into(),
                            selector: t.selector.into(),
                            matching: t.matching.into(),
                            data: t.cert_data.clone(),
                        }),
                        _ => None,
                    })
                    .collect(),
            )),
            Validated::NoRecords | Validated::Insecure => HostDane::None,
            Validated::Bogus(why) => {
                HostDane::Skip(format!("{host}: its TLSA records: {why}"), true)
            }
            Validated::Failed(why) => {
                HostDane::Skip(format!("{host}: its TLSA records: {why}"), false)
            }
        }
    }
}

fn defer(esc: [u8; 3], text: String, result: Option<&'static str>) -> DaneError {
    DaneError {
        route: RouteError::Transient { esc, text },
        result,
    }
}
