//! TLS-RPT counting (RFC 8460 4): per UTC day and policy domain, the
//! sessions that met the domain's published policy and those that did not,
//! with the RFC's failure details (result type, sending and receiving
//! addresses, MX host). Only domains that publish a policy (MTA-STS or
//! DANE) are counted. Counts live in memory and are written to the
//! queue's state records every few minutes (`tlsrpt/<day>/<domain>`), so
//! a crash loses at most those minutes and a restart carries on; the
//! daily sender ([`super::send`]) turns a finished day into reports.
//!
//! It owns the counts; it never sends anything.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use queue::Queue;
use serde::{Deserialize, Serialize};

/// The state-record prefix of the counts.
pub const STATE_PREFIX: &str = "tlsrpt/";

/// Domains counted per day, at most (more are not counted).
const MAX_DOMAINS: usize = 50_000;

/// Distinct failure details kept per domain and day, at most (more are
/// counted in the summary only).
const MAX_DETAILS: usize = 100;

/// The policy a session was held to, as the report describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDetails {
    /// `sts`, `tlsa` or `no-policy-found`.
    #[serde(rename = "policy-type")]
    pub policy_type: String,
    /// The policy's text (its lines), or the TLSA records.
    #[serde(
        rename = "policy-string",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policy_string: Vec<String>,
    /// The policy domain.
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    /// The MX patterns of an MTA-STS policy.
    #[serde(rename = "mx-host", default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

impl PolicyDetails {
    /// A policy known by its type only (`sts`, `tlsa`): what reports say
    /// when the policy itself could not be had.
    pub fn bare(policy_type: &str, domain: &str) -> Self {
        Self {
            policy_type: policy_type.into(),
            policy_domain: domain.to_owned(),
            ..Self::default()
        }
    }
}

/// One kind of failure, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Failure {
    /// RFC 8460 4.3 result type.
    #[serde(rename = "result-type")]
    pub result_type: String,
    /// The source address Tern sent from.
    #[serde(rename = "sending-mta-ip", skip_serializing_if = "Option::is_none")]
    pub sending_ip: Option<IpAddr>,
    /// The MX host.
    #[serde(
        rename = "receiving-mx-hostname",
        skip_serializing_if = "Option::is_none"
    )]
    pub mx_host: Option<String>,
    /// The MX address.
    #[serde(rename = "receiving-ip", skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    /// What went wrong, for people.
    #[serde(
        rename = "additional-information",
        skip_serializing_if = "Option::is_none"
    )]
    pub info: Option<String>,
}

/// A domain's counts for a day.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DayCounts {
    /// The policy (the latest seen that day).
    pub policy: PolicyDetails,
    /// Sessions that met the policy.
    pub success: u64,
    /// Sessions that did not.
    pub failure: u64,
    /// Failures by kind, with their counts.
    pub details: Vec<(Failure, u64)>,
}

/// The counts of every domain, by day.
pub struct Reports {
    queue: Option<Arc<Queue>>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    days: HashMap<(i64, String), DayCounts>,
    dirty: HashSet<(i64, String)>,
}

/// The state key of a day's counts for a domain.
pub fn state_key(day: i64, domain: &str) -> String {
    format!("{STATE_PREFIX}{}/{domain}", crate::clock::date(day))
}

impl Reports {
    /// Counts kept in `queue` (when given), read back from it.
    pub fn new(queue: Option<Arc<Queue>>) -> Self {
        let mut counts = Counts::default();
        if let Some(q) = &queue {
            for key in q.state_keys(STATE_PREFIX) {
                let Some((day, domain)) = parse_key(&key) else {
                    continue;
                };
                let value = q.state(&key).and_then(|v| serde_json::from_slice(&v).ok());
                if let Some(c) = value {
                    counts.days.insert((day, domain), c);
                }
            }
        }
        Self {
            queue,
            counts: Mutex::new(counts),
        }
    }

    /// Counts a session held to `policy` that met it.
    pub fn success(&self, policy: &PolicyDetails) {
        self.with(policy, |c| c.success += 1);
    }

    /// Counts a session held to `policy` that failed it.
    pub fn failure(&self, policy: &PolicyDetails, failure: Failure) {
        self.with(policy, |c| {
            c.failure += 1;
            if let Some((_, n)) = c.details.iter_mut().find(|(f, _)| *f == failure) {
                *n += 1;
            } else if c.details.len() < MAX_DETAILS {
                c.details.push((failure, 1));
            }
        });
    }

    fn with(&self, policy: &PolicyDetails, f: impl FnOnce(&mut DayCounts)) {
        let day = crate::clock::day_number(SystemTime::now());
        let key = (day, policy.policy_domain.clone());
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !counts.days.contains_key(&key) && counts.days.len() >= MAX_DOMAINS {
            return;
        }
        let c = counts.days.entry(key.clone()).or_default();
        if c.policy != *policy {
            c.policy = policy.clone();
        }
        f(c);
        counts.dirty.insert(key);
    }

    /// A domain's counts for a day, if any.
    pub fn day(&self, day: i64, domain: &str) -> Option<DayCounts> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.days.get(&(day, domain.to_owned())).cloned()
    }

    /// The (day, domain) pairs counted for days before `day`.
    pub fn before(&self, day: i64) -> Vec<(i64, String)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = counts
            .days
            .keys()
            .filter(|(d, _)| *d < day)
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The domains counted on `day`.
    pub fn domains(&self, day: i64) -> Vec<String> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = counts
            .days
            .keys()
            .filter(|(d, _)| *d == day)
            .map(|(_, n)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Writes the counts changed since the last flush to the spool.
    pub async fn flush(&self) {
        let Some(q) = &self.queue else { return };
        let changed: Vec<((i64, String), Vec<u8>)> = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let dirty: Vec<_> = counts.dirty.drain().collect();
            dirty
                .into_iter()
                .filter_map(|k| {
                    let v = serde_json::to_vec(counts.days.get(&k)?).ok()?;
                    Some((k, v))
                })
                .collect()
        };
        for ((day, domain), value) in changed {
            if let Err(e) = q
                .put_state(&state_key(day, &domain), Bytes::from(value))
                .await
            {
                tracing::warn!(domain, error = %e, "TLS report counts could not be written");
            }
        }
    }

    /// Forgets a domain's day (its report went, or cannot go): removed
    /// from memory and from the spool.
    pub async fn forget(&self, day: i64, domain: &str) {
        {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let key = (day, domain.to_owned());
            counts.days.remove(&key);
            counts.dirty.remove(&key);
        }
        if let Some(q) = &self.queue {
            let _ = q.put_state(&state_key(day, domain), Bytes::new()).await;
        }
    }
}

fn parse_key(key: &str) -> Option<(i64, String)> {
    let rest = key.strip_prefix(STATE_PREFIX)?;
    let (date, domain) = rest.split_once('/')?;
    Some((crate::clock::parse_date(date)?, domain.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(domain: &str) -> PolicyDetails {
        PolicyDetails::bare("sts", domain)
    }

    #[test]
    fn sessions_are_counted_per_domain_with_failure_details_merged() {
        let r = Reports::new(None);
        let f = Failure {
            result_type: "certificate-host-mismatch".into(),
            sending_ip: None,
            mx_host: Some("mx.a.test".into()),
            receiving_ip: None,
            info: None,
        };
        r.success(&sts("a.test"));
        r.failure(&sts("a.test"), f.clone());
        r.failure(&sts("a.test"), f.clone());
        r.success(&sts("b.test"));
        let today = crate::clock::day_number(SystemTime::now());
        let a = r.day(today, "a.test").unwrap();
        assert_eq!((a.success, a.failure), (1, 2));
        assert_eq!(a.details, vec![(f, 2)]);
        assert_eq!(r.domains(today), ["a.test", "b.test"]);
        assert!(r.before(today).is_empty());
        assert_eq!(
            parse_key(&state_key(today, "a.test")),
            Some((today, "a.test".into()))
        );
    }
}
