//! `[[source]]`, `[[pool]]` and `[[tenant]]`: the local addresses Tern
//! delivers from, the weighted groups a message's pool picks one from, and
//! the tenants (customers) whose mail goes out through a pool of its own.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::proxy::ProxyUrl;

/// `[[source]]`: one egress source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// The name pools use to refer to it.
    pub name: String,
    /// Local address to bind (IPv4 or IPv6); unset, the kernel chooses.
    /// With `proxy`, the public address the proxy sends from (required):
    /// shaping, warm-up, the logs and the metrics use it. An IPv4 source
    /// only reaches IPv4 MX addresses, and IPv6 likewise.
    pub address: Option<IpAddr>,
    /// Leave through an egress proxy instead of binding `address` here:
    /// `"socks5://198.51.100.7:1080"` (RFC 1928, `user:password@` for RFC
    /// 1929) or `"haproxy://198.51.100.7:2525"` (a PROXY protocol v2
    /// header asks the proxy to send from `address`). A proxy that cannot
    /// be reached or refuses rests the source for a minute, as a local
    /// address that cannot be bound does. Default: no proxy.
    pub proxy: Option<ProxyUrl>,
    /// The name sent in EHLO from this source (its reverse DNS name);
    /// default: `server.hostname`.
    pub ehlo: Option<String>,
    /// A warm-up schedule for a new IP: while it runs, the source sends at
    /// most the day's share and its pool's other sources take the rest.
    pub warmup: Option<WarmupConfig>,
    /// Several nodes of the fleet send from this source (one address
    /// behind a proxy or NAT, or a floating IP): its per-path limits and
    /// its warm-up counts are then kept fleet-wide (needs `[cluster]`).
    /// Default: shared when it leaves through a `proxy` (every node can
    /// use it), else each node's source is its own.
    pub shared: Option<bool>,
}

impl SourceConfig {
    /// True when the fleet shares this source's limits and counts.
    pub fn is_shared(&self) -> bool {
        self.shared.unwrap_or(self.proxy.is_some())
    }
}

/// A source's warm-up schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmupConfig {
    /// The first day of the schedule, `"YYYY-MM-DD"` (UTC).
    pub start: String,
    /// Messages allowed per day, day by day from `start` (before it, the
    /// first day's); after the last day, no limit.
    pub daily: Vec<u32>,
    /// Count per provider (`true`, the default: each provider of
    /// `[shaping]` gets the day's share, mail to other sites shares one),
    /// or all destinations together.
    pub per_provider: bool,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            start: String::new(),
            daily: Vec::new(),
            per_provider: true,
        }
    }
}

/// `[[tenant]]`: a customer whose mail Tern relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// The name listeners and users refer to.
    pub name: String,
    /// The pool this tenant's mail is sent from, unless the user or the
    /// pool header names another (default: the listener's pool).
    pub pool: Option<String>,
    /// The priority class of this tenant's mail, unless its user or the
    /// priority header says otherwise (default: the listener's).
    pub priority: Option<super::Priority>,
    /// Its share of each destination, relative to the other tenants with
    /// mail of the same priority waiting there (a tenant without an entry
    /// weighs 1): with weights 3 and 1, three of its messages leave for
    /// each one of the other's.
    pub weight: u32,
    /// The domains it may send as (`"shop.example"`, `"*.shop.example"`
    /// for every subdomain). Set, its mail's From domain (or envelope
    /// sender's, per `[dkim] signing_domain`) must be one of them, and no
    /// other tenant's mail is ever signed with these domains' keys.
    /// Default: none (any domain; the keys of domains no tenant declares).
    pub domains: Vec<String>,
    /// What happens to its mail from another domain: `"reject"` (550
    /// 5.7.1 at the end of the data; the default when `domains` is set),
    /// `"platform"` (signed with `[dkim] platform_domain` only) or
    /// `"allow"` (signed only with a key no other tenant owns).
    pub sender_mismatch: SenderMismatch,
    /// Its envelope senders must be of its `domains` too (as Postfix's
    /// sender login maps): 550 5.7.1 otherwise; `<>` always passes.
    pub restrict_sender: bool,
}

/// What a tenant's mail from a domain it does not declare gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderMismatch {
    /// Refused (550 5.7.1).
    #[default]
    Reject,
    /// Accepted, signed with the platform domain only.
    Platform,
    /// Accepted, signed with a key no other tenant owns (or unsigned).
    Allow,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            pool: None,
            priority: None,
            weight: 1,
            domains: Vec::new(),
            sender_mismatch: SenderMismatch::Reject,
            restrict_sender: false,
        }
    }
}

/// One member of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolMember {
    /// A `[[source]]` name.
    pub source: String,
    /// Its share of the pool's traffic, relative to the other members.
    pub weight: u32,
}

impl Default for PoolMember {
    fn default() -> Self {
        Self {
            source: String::new(),
            weight: 1,
        }
    }
}

/// `[[pool]]`: a weighted group of sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// The name messages are routed by.
    pub name: String,
    /// The sources, with weights.
    pub sources: Vec<PoolMember>,
}

/// The sources when none are configured: one that lets the kernel choose.
pub fn default_sources() -> Vec<SourceConfig> {
    vec![SourceConfig {
        name: "default".into(),
        address: None,
        ehlo: None,
        proxy: None,
        warmup: None,
        shared: None,
    }]
}

/// The pools when none are configured: "default", with the default source.
pub fn default_pools() -> Vec<PoolConfig> {
    vec![PoolConfig {
        name: "default".into(),
        sources: vec![PoolMember {
            source: "default".into(),
            weight: 1,
        }],
    }]
}

pub(super) fn validate(sources: &[SourceConfig], pools: &[PoolConfig], issues: &mut Vec<Issue>) {
    for (i, s) in sources.iter().enumerate() {
        let key = |f: &str| at("source").index(i).field(f);
        if s.name.is_empty() {
            issues.push(Issue::new(key("name"), "must be set"));
        } else if sources[..i].iter().any(|o| o.name == s.name) {
            issues.push(Issue::new(
                key("name"),
                format!("source {:?} is defined twice", s.name),
            ));
        }
        if let Some(e) = &s.ehlo
            && !super::names::is_hostname(e)
        {
            issues.push(Issue::new(
                key("ehlo"),
                format!("{e:?} is not a valid host name"),
            ));
        }
        if s.proxy.is_some() && s.address.is_none() {
            issues.push(Issue::new(
                key("address"),
                "a source with a proxy needs the public address the proxy sends from",
            ));
        }
        if let Some(w) = &s.warmup {
            let wkey = |f: &str| key("warmup").field(f);
            if crate::clock::parse_date(&w.start).is_none() {
                issues.push(Issue::new(
                    wkey("start"),
                    format!("{:?} is not a date such as \"2026-11-23\"", w.start),
                ));
            }
            if w.daily.is_empty() || w.daily.contains(&0) {
                issues.push(Issue::new(
                    wkey("daily"),
                    "must list the messages allowed per day, each at least 1",
                ));
            }
        }
    }
    if pools.is_empty() {
        issues.push(Issue::new(at("pool"), "at least one pool is needed"));
    }
    for (i, p) in pools.iter().enumerate() {
        let key = || at("pool").index(i);
        if p.name.is_empty() {
            issues.push(Issue::new(key().field("name"), "must be set"));
        } else if pools[..i].iter().any(|o| o.name == p.name) {
            issues.push(Issue::new(
                key().field("name"),
                format!("pool {:?} is defined twice", p.name),
            ));
        }
        if p.sources.is_empty() {
            issues.push(Issue::new(
                key().field("sources"),
                "a pool needs at least one source",
            ));
        }
        for (j, m) in p.sources.iter().enumerate() {
            let mkey = |f: &str| key().field("sources").index(j).field(f);
            if !sources.iter().any(|s| s.name == m.source) {
                issues.push(Issue::new(
                    mkey("source"),
                    format!("no [[source]] is named {:?}", m.source),
                ));
            }
            if m.weight == 0 {
                issues.push(Issue::new(mkey("weight"), "must be at least 1"));
            }
        }
    }
}

pub(super) fn validate_tenants(
    tenants: &[TenantConfig],
    pools: &[PoolConfig],
    issues: &mut Vec<Issue>,
) {
    for (i, t) in tenants.iter().enumerate() {
        let key = |f: &str| at("tenant").index(i).field(f);
        if t.name.is_empty() {
            issues.push(Issue::new(key("name"), "must be set"));
        } else if tenants[..i].iter().any(|o| o.name == t.name) {
            issues.push(Issue::new(
                key("name"),
                format!("tenant {:?} is defined twice", t.name),
            ));
        }
        check_domain_patterns(&t.domains, key("domains"), issues);
        if t.weight == 0 || t.weight > 1000 {
            issues.push(Issue::new(key("weight"), "must be between 1 and 1000"));
        }
        if let Some(p) = &t.pool
            && !pools.iter().any(|q| &q.name == p)
        {
            issues.push(Issue::new(
                key("pool"),
                format!("no [[pool]] is named {p:?}"),
            ));
        }
    }
}

/// Sending-domain patterns (`[[tenant]]` and `[[auth.user]] domains`): a
/// mail domain, or `*.` and one.
pub(super) fn check_domain_patterns(
    domains: &[String],
    key: Vec<super::load::Key>,
    issues: &mut Vec<Issue>,
) {
    for (j, d) in domains.iter().enumerate() {
        let bare = d.strip_prefix("*.").unwrap_or(d);
        if !super::names::is_mail_domain(bare) || bare.contains('*') {
            issues.push(Issue::new(
                key.clone().index(j),
                format!("{d:?} is not a domain or \"*.domain\""),
            ));
        }
    }
}
