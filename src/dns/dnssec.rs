//! DNSSEC-validated lookups, for DANE (RFC 7672): a second hickory
//! resolver, validating itself from trust anchors (the root's, or
//! `[dns] trust_anchor`), on the same name servers. Each answer is
//! classified the way RFC 7672 2.1 needs it: secure, insecure (an unsigned
//! zone), bogus (signed, but the signatures do not hold), no records, or
//! a temporary failure.
//!
//! Validation needs the name servers to pass DNSSEC records along. Before
//! any answer is trusted to be "bogus", the resolver checks that they do
//! (the trust anchors' own DNSKEY records validate, probed at most every
//! few minutes); when they do not, every answer is "insecure", never
//! "bogus": a resolver that strips signatures must cost DANE, not mail.
//!
//! It owns the validating resolver; it never decides what DANE requires.

use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use crate::config::DnsConfig;

/// How long a probe's verdict on the name servers stands.
const PROBE_EVERY: Duration = Duration::from_secs(300);

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated<T> {
    /// Signed, and the signatures hold from a trust anchor.
    Secure(T),
    /// Not provably signed: an unsigned zone, or validation unavailable.
    Insecure,
    /// No such records (a secure or insecure denial).
    NoRecords,
    /// Signed, but validation fails: possibly an attack.
    Bogus(String),
    /// No answer now (SERVFAIL, timeout).
    Failed(String),
}

/// The validating resolver.
pub struct DnssecResolver {
    inner: TokioResolver,
    anchors: Vec<String>,
    /// The last probe's time and verdict; held while probing, so callers
    /// at once wait for one probe.
    probe: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl DnssecResolver {
    /// A validating resolver on `[dns]`'s name servers, trusting
    /// `anchors` (loaded by the prepare step; `None`: the root's keys).
    pub fn new(cfg: &DnsConfig, anchors: Option<&Anchors>) -> Result<Self, String> {
        let mut builder = super::resolver::builder(cfg)?;
        builder.options_mut().validate = true;
        let anchors = match anchors {
            Some(a) => {
                builder = builder.with_trust_anchor(a.keys.clone());
                a.zones.clone()
            }
            None => vec![".".to_owned()],
        };
        let inner = builder
            .build()
            .map_err(|e| format!("cannot build the validating resolver: {e}"))?;
        Ok(Self {
            inner,
            anchors,
            probe: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether the name servers pass DNSSEC records along (the anchors'
    /// DNSKEY records validate); probed at most every few minutes.
    pub async fn available(&self) -> bool {
        let mut last = self.probe.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < PROBE_EVERY
        {
            return ok;
        }
        let mut ok = true;
        for zone in &self.anchors {
            let secure = matches!(
                self.records(zone, RecordType::DNSKEY).await,
                Validated::Secure(_)
            );
            ok &= secure;
        }
        if !ok {
            tracing::warn!(anchors = ?self.anchors, "DNSSEC: the name servers do not pass signatures along; DANE is off until they do");
        }
        *last = Some((Instant::now(), ok));
        ok
    }

    /// Whether `name`'s records of `kind` are secure (DANE's checks of MX
    /// and address records), with their data.
    pub async fn records(&self, name: &str, kind: RecordType) -> Validated<Vec<RData>> {
        let fqdn = match name.ends_with('.') {
            true => name.to_owned(),
            false => format!("{name}."),
        };
        match self.inner.lookup(fqdn.as_str(), kind).await {
            Ok(l) => classify(l.answers(), kind),
            Err(e) => failure(&e),
        }
    }
}

fn classify(answers: &[Record], kind: RecordType) -> Validated<Vec<RData>> {
    let wanted: Vec<&Record> = answers.iter().filter(|r| r.record_type() == kind).collect();
    if wanted.is_empty() {
        return Validated::NoRecords;
    }
    if wanted.iter().any(|r| r.proof == Proof::Bogus) {
        return Validated::Bogus("a signature does not validate".into());
    }
    match wanted.iter().all(|r| r.proof == Proof::Secure) {
        true => Validated::Secure(wanted.into_iter().map(|r| r.data.clone()).collect()),
        false => Validated::Insecure,
    }
}

fn failure<T>(e: &NetError) -> Validated<T> {
    if e.is_nx_domain() || e.is_no_records_found() {
        return Validated::NoRecords;
    }
    match e {
        NetError::Dns(DnsError::DnssecBogus) => Validated::Bogus("DNSSEC validation failed".into()),
        NetError::Dns(DnsError::Nsec {
            proof: Proof::Bogus,
            ..
        }) => Validated::Bogus("the denial of existence does not validate".into()),
        NetError::Dns(DnsError::Nsec { .. }) => Validated::NoRecords,
        other => Validated::Failed(other.to_string()),
    }
}

/// DNSSEC trust anchors from a file of DNSKEY records, and the zones
/// they are for (the probe asks for their keys).
#[derive(Clone)]
pub struct Anchors {
    keys: std::sync::Arc<TrustAnchors>,
    zones: Vec<String>,
}

impl Anchors {
    /// Reads `path`: DNSKEY records in zone-file syntax.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let keys = TrustAnchors::from_file(path)
            .map_err(|e| format!("{}: not DNSKEY records: {e}", path.display()))?;
        Ok(Self {
            keys: std::sync::Arc::new(keys),
            zones: anchor_names(path)?,
        })
    }
}

/// The zones a trust-anchor file names.
fn anchor_names(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_ascii_lowercase))
        .collect();
    names.sort();
    names.dedup();
    match names.is_empty() {
        true => Err(format!("{}: no DNSKEY record", path.display())),
        false => Ok(names),
    }
}
