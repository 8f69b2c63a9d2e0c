//! DNS lookups behind the [`Resolver`] trait, and its implementation on
//! hickory-resolver (cache with TTL bounds, timeouts and attempts from
//! `[dns]`). Answers are classified the way mail routing needs them:
//! records, a null MX, "exists but has no such records", "does not exist",
//! or a temporary failure (which must defer, never bounce).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::{DnsConfig, IpStrategy};

/// A boxed future, so that the trait can be used as `dyn Resolver`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an MX query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records: (preference, host name without the trailing dot).
    Records(Vec<(u16, String)>),
    /// A null MX (`MX 0 .`, RFC 7505): the domain accepts no mail.
    NullMx,
    /// The domain exists but has no MX records (use its own address).
    NoMx,
}

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// NXDOMAIN: the name does not exist.
    #[error("{0} does not exist (NXDOMAIN)")]
    NxDomain(String),
    /// The name exists but has no records of the type asked for.
    #[error("{0} has no address records")]
    NoRecords(String),
    /// SERVFAIL, timeout, refused, network trouble: try again later.
    #[error("temporary DNS failure for {name}: {reason}")]
    Temporary {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// The lookups mail routing needs.
pub trait Resolver: Send + Sync {
    /// The MX records of `domain`.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, LookupError>>;
    /// The addresses of `host`, in the configured family order.
    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>>;
    /// The TXT records of `name`, each record's strings joined (MTA-STS,
    /// TLS-RPT). A name without TXT records is `NoRecords`.
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, LookupError>>;
}

/// The resolver of `tern run`: hickory with its cache.
pub struct HickoryResolver {
    inner: TokioResolver,
    strategy: IpStrategy,
}

impl HickoryResolver {
    /// Builds the resolver from `[dns]` (name servers from the file, or the
    /// system's resolv.conf).
    pub fn new(cfg: &DnsConfig) -> Result<Self, String> {
        let inner = builder(cfg)?
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(Self {
            inner,
            strategy: cfg.ip_strategy,
        })
    }

    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, LookupError> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        match self.inner.lookup(fqdn.as_str(), kind).await {
            Ok(l) => Ok(l.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) => Err(classify(name, &e)),
        }
    }

    async fn family(&self, host: &str, v6: bool) -> Result<Vec<IpAddr>, LookupError> {
        let kind = if v6 { RecordType::AAAA } else { RecordType::A };
        let rdata = self.lookup(host, kind).await?;
        Ok(rdata
            .into_iter()
            .filter_map(|r| match r {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }
}

/// A resolver builder from `[dns]`: its name servers (or the system's),
/// timeouts, attempts and cache bounds.
pub(super) fn builder(
    cfg: &DnsConfig,
) -> Result<hickory_resolver::ResolverBuilder<TokioRuntimeProvider>, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if cfg.nameservers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let servers = cfg
            .nameservers
            .iter()
            .map(|ns| {
                let mut s = NameServerConfig::udp_and_tcp(ns.0.ip());
                for c in s.connections.iter_mut() {
                    c.port = ns.0.port();
                }
                s
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = cfg.timeout.get();
    opts.attempts = cfg.attempts as usize;
    opts.cache_size = cfg.cache_size as u64;
    opts.positive_min_ttl = Some(cfg.positive_min_ttl.get());
    opts.positive_max_ttl = Some(cfg.positive_max_ttl.get());
    opts.negative_min_ttl = Some(cfg.negative_min_ttl.get());
    opts.negative_max_ttl = Some(cfg.negative_max_ttl.get());
    opts.ndots = 0;
    Ok(builder)
}

/// Sorts a hickory error into what routing does with it.
fn classify(name: &str, e: &NetError) -> LookupError {
    if e.is_nx_domain() {
        return LookupError::NxDomain(name.to_owned());
    }
    if e.is_no_records_found() {
        return LookupError::NoRecords(name.to_owned());
    }
    let reason = match e {
        NetError::Dns(DnsError::ResponseCode(code)) => format!("server answered {code}"),
        other => other.to_string(),
    };
    LookupError::Temporary {
        name: name.to_owned(),
        reason,
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, LookupError>> {
        Box::pin(async move {
            let rdata = match self.lookup(domain, RecordType::MX).await {
                Ok(r) => r,
                Err(LookupError::NoRecords(_)) => return Ok(MxAnswer::NoMx),
                Err(e) => return Err(e),
            };
            let mut records = Vec::new();
            for r in rdata {
                if let RData::MX(mx) = r {
                    if mx.exchange.is_root() {
                        return Ok(MxAnswer::NullMx);
                    }
                    let host = mx.exchange.to_ascii();
                    records.push((
                        mx.preference,
                        host.trim_end_matches('.').to_ascii_lowercase(),
                    ));
                }
            }
            Ok(if records.is_empty() {
                MxAnswer::NoMx
            } else {
                MxAnswer::Records(records)
            })
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, LookupError>> {
        Box::pin(async move {
            let rdata = self.lookup(name, RecordType::TXT).await?;
            Ok(rdata
                .into_iter()
                .filter_map(|r| match r {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
        Box::pin(async move {
            let order: &[bool] = match self.strategy {
                IpStrategy::Ipv4Only => &[false],
                IpStrategy::Ipv6Only => &[true],
                IpStrategy::Ipv4ThenIpv6 => &[false, true],
                IpStrategy::Ipv6ThenIpv4 => &[true, false],
            };
            let mut addrs = Vec::new();
            let mut failure: Option<LookupError> = None;
            // When nothing is found, the strongest reason wins: NXDOMAIN
            // (the name does not exist), then a temporary failure (try
            // again), then "no records".
            let rank = |e: &LookupError| match e {
                LookupError::NxDomain(_) => 3,
                LookupError::Temporary { .. } => 2,
                LookupError::NoRecords(_) => 1,
            };
            for v6 in order {
                match self.family(host, *v6).await {
                    Ok(a) => addrs.extend(a),
                    Err(e) => {
                        if failure.as_ref().is_none_or(|f| rank(&e) > rank(f)) {
                            failure = Some(e);
                        }
                    }
                }
            }
            match (addrs.is_empty(), failure) {
                (false, _) => Ok(addrs),
                (true, Some(e)) => Err(e),
                (true, None) => Err(LookupError::NoRecords(host.to_owned())),
            }
        })
    }
}
