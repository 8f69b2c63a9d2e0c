//! `[dns]`: how Tern resolves MX and address records.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::{Cidr, Duration};

/// Which address families MX hosts are reached over, and in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpStrategy {
    /// IPv4 only.
    Ipv4Only,
    /// IPv6 only.
    Ipv6Only,
    /// IPv4 addresses first, then IPv6.
    Ipv4ThenIpv6,
    /// IPv6 addresses first, then IPv4.
    Ipv6ThenIpv4,
}

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers to ask ("192.0.2.53" or "192.0.2.53:53"); empty: the
    /// system's /etc/resolv.conf.
    pub nameservers: Vec<SocketAddrOrIp>,
    /// Time to wait for one answer.
    pub timeout: Duration,
    /// Tries per query before giving up (a SERVFAIL or timeout then defers
    /// the recipients, it never bounces them).
    pub attempts: u32,
    /// Address families for MX hosts.
    pub ip_strategy: IpStrategy,
    /// Answers kept in the cache.
    pub cache_size: u32,
    /// Bounds on how long a positive answer is cached (its TTL is clamped).
    pub positive_min_ttl: Duration,
    /// See `positive_min_ttl`.
    pub positive_max_ttl: Duration,
    /// Bounds on how long a negative answer (NXDOMAIN, no records) is cached.
    pub negative_min_ttl: Duration,
    /// See `negative_min_ttl`.
    pub negative_max_ttl: Duration,
    /// MX hosts whose addresses fall in these networks are never connected
    /// to: the recipients fail as a mail loop (`5.4.6`). Tern's own listener
    /// addresses are always prohibited too.
    pub prohibited_targets: Vec<Cidr>,
    /// DNSSEC trust anchors for DANE: a file of DNSKEY records (zone-file
    /// syntax, `. IN DNSKEY 257 3 8 ...`); unset: the root's keys, built
    /// in. Only a lab or a private DNS root needs it.
    pub trust_anchor: Option<std::path::PathBuf>,
}

/// A name server address; the port defaults to 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SocketAddrOrIp(pub SocketAddr);

impl TryFrom<String> for SocketAddrOrIp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self(a));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Self(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("invalid name server {s:?}: expected an address, with an optional port (\"192.0.2.53\", \"[2001:db8::53]:53\")"))
    }
}

impl From<SocketAddrOrIp> for String {
    fn from(a: SocketAddrOrIp) -> String {
        if a.0.port() == 53 {
            a.0.ip().to_string()
        } else {
            a.0.to_string()
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            ip_strategy: IpStrategy::Ipv4ThenIpv6,
            cache_size: 16_384,
            positive_min_ttl: Duration::from_secs(0),
            positive_max_ttl: Duration::from_secs(86_400),
            negative_min_ttl: Duration::from_secs(30),
            negative_max_ttl: Duration::from_secs(3600),
            prohibited_targets: ["127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"]
                .iter()
                .map(|n| n.parse().expect("valid network"))
                .collect(),
            trust_anchor: None,
        }
    }
}

impl DnsConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if self.attempts == 0 {
            issues.push(Issue::new(
                at("dns").field("attempts"),
                "must be at least 1",
            ));
        }
        if self.timeout.get().is_zero() {
            issues.push(Issue::new(at("dns").field("timeout"), "must be above 0s"));
        }
        if self.positive_min_ttl > self.positive_max_ttl {
            issues.push(Issue::new(
                at("dns").field("positive_min_ttl"),
                "is above positive_max_ttl",
            ));
        }
        if self.negative_min_ttl > self.negative_max_ttl {
            issues.push(Issue::new(
                at("dns").field("negative_min_ttl"),
                "is above negative_max_ttl",
            ));
        }
    }
}
