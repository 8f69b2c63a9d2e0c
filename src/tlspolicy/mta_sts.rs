//! MTA-STS discovery (RFC 8461 3 and 5): the `_mta-sts` TXT record
//! through Tern's resolver (parsed by mail-auth), the policy fetched over
//! HTTPS when the record's id is new, and a cache of policies kept for
//! their `max_age` (clamped to `[tls_policy]`'s bounds) in the queue's
//! state records, so a restart keeps them: a policy learnt once protects
//! the domain even if its TXT record or policy host later vanish or are
//! forged (the downgrade MTA-STS exists to resist). A policy older than
//! half its life is refreshed in the background while it stays in use.
//!
//! It owns discovery and the cache; it never decides what to do with a
//! policy (the [`super::TlsPolicies`] does).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mail_auth::common::parse::TxtRecordParser;
use queue::Queue;
use serde::{Deserialize, Serialize};

use super::https::{Https, HttpsError};
use super::sts::{MAX_POLICY, Mode, Policy};
use crate::dns::resolver::{LookupError, Resolver};

/// The state-record prefix of cached policies.
pub const STATE_PREFIX: &str = "mta-sts/";

/// Domains whose policy is cached, at most (the oldest go first).
const MAX_CACHED: usize = 100_000;

/// A policy in force for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The TXT record's id it was fetched under.
    pub id: String,
    /// The policy.
    pub policy: Policy,
    /// Its text (TLS reports quote it).
    pub text: String,
    /// When it was fetched (unix seconds).
    pub fetched: u64,
    /// When it stops applying (unix seconds).
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    text: String,
    fetched: u64,
    expires: u64,
}

/// What discovery found for a domain.
#[derive(Debug, Clone)]
pub enum Found {
    /// No policy (none published, or `mode: none`).
    None,
    /// A policy applies.
    Policy(Arc<Cached>),
    /// A policy is published but could not be had, and none is cached:
    /// mail goes as if there were none (RFC 8461 5.1); reports say why.
    Unavailable {
        /// The RFC 8460 result type.
        result: &'static str,
        /// What went wrong.
        why: String,
    },
}

/// Discovery and the cache.
pub struct MtaSts {
    resolver: Arc<dyn Resolver>,
    https: Https,
    queue: Option<Arc<Queue>>,
    bounds: (Duration, Duration),
    cache: Mutex<HashMap<String, Arc<Cached>>>,
    refreshing: Mutex<HashSet<String>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MtaSts {
    /// Discovery through `resolver` and `https`, the cache kept in
    /// `queue` (when given) and read back from it; `bounds` clamp each
    /// policy's `max_age`.
    pub fn new(
        resolver: Arc<dyn Resolver>,
        https: Https,
        queue: Option<Arc<Queue>>,
        bounds: (Duration, Duration),
    ) -> Self {
        let mut cache = HashMap::new();
        if let Some(q) = &queue {
            for key in q.state_keys(STATE_PREFIX) {
                let domain = key[STATE_PREFIX.len()..].to_owned();
                let parsed = q
                    .state(&key)
                    .and_then(|v| serde_json::from_slice::<Stored>(&v).ok());
                let Some(s) = parsed else { continue };
                if let Ok(policy) = Policy::parse(&s.text) {
                    let c = Cached {
                        id: s.id,
                        policy,
                        text: s.text,
                        fetched: s.fetched,
                        expires: s.expires,
                    };
                    cache.insert(domain, Arc::new(c));
                }
            }
        }
        Self {
            resolver,
            https,
            queue,
            bounds,
            cache: Mutex::new(cache),
            refreshing: Mutex::new(HashSet::new()),
        }
    }

    /// The policy cached for `domain`, if it has not expired.
    pub fn cached(&self, domain: &str) -> Option<Arc<Cached>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(domain).filter(|c| c.expires > now()).cloned()
    }

    /// The policy that applies to mail for `domain` now (RFC 8461 5.1).
    pub async fn policy(self: &Arc<Self>, domain: &str) -> Found {
        let record = self.record(domain).await;
        let cached = self.cached(domain);
        match (record, cached) {
            // The record names the policy in the cache: use it, refresh it
            // when it is old.
            (Ok(Some(id)), Some(c)) if c.id == id => {
                self.refresh_if_old(domain, &c);
                applies(c)
            }
            // A new id: fetch; keep the cached one if that fails.
            (Ok(Some(id)), cached) => match self.fetch(domain, &id).await {
                Ok(c) => applies(c),
                Err((result, why)) => match cached {
                    Some(c) => {
                        tracing::warn!(domain, error = %why, "MTA-STS: the new policy cannot be fetched; the cached one stays in force");
                        applies(c)
                    }
                    None => Found::Unavailable { result, why },
                },
            },
            // No record, or DNS failing: a cached policy still applies
            // (the record's absence may be the attack).
            (_, Some(c)) => applies(c),
            (Ok(None), None) => Found::None,
            (Err(why), None) => {
                tracing::debug!(domain, error = %why, "MTA-STS: no answer for the TXT record; no policy known");
                Found::None
            }
        }
    }

    /// The id of the domain's `_mta-sts` record; `None` without one
    /// (several records, or an invalid one, count as none: RFC 8461 3.1).
    async fn record(&self, domain: &str) -> Result<Option<String>, String> {
        let name = format!("_mta-sts.{domain}");
        let records = match self.resolver.txt(&name).await {
            Ok(r) => r,
            Err(LookupError::NxDomain(_) | LookupError::NoRecords(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let sts: Vec<&String> = records
            .iter()
            .filter(|r| r.starts_with("v=STSv1"))
            .collect();
        match sts.as_slice() {
            [one] => Ok(mail_auth::mta_sts::MtaSts::parse(one.as_bytes())
                .ok()
                .map(|r| r.id)),
            _ => Ok(None),
        }
    }

    /// Fetches, parses and caches the domain's policy.
    async fn fetch(&self, domain: &str, id: &str) -> Result<Arc<Cached>, (&'static str, String)> {
        let host = format!("mta-sts.{domain}");
        let body = match self
            .https
            .get(&host, "/.well-known/mta-sts.txt", MAX_POLICY)
            .await
        {
            Ok(b) => b,
            Err(e @ HttpsError::Certificate { .. }) => {
                return Err(("sts-webpki-invalid", e.to_string()));
            }
            Err(e) => return Err(("sts-policy-fetch-error", e.to_string())),
        };
        let text = String::from_utf8(body.to_vec()).map_err(|_| {
            (
                "sts-policy-invalid",
                format!("the policy of {domain} is not UTF-8"),
            )
        })?;
        let policy = Policy::parse(&text)
            .map_err(|e| ("sts-policy-invalid", format!("the policy of {domain}: {e}")))?;
        let (min, max) = self.bounds;
        let age = Duration::from_secs(policy.max_age)
            .clamp(min, max)
            .as_secs();
        let fetched = now();
        let c = Arc::new(Cached {
            id: id.to_owned(),
            policy,
            text,
            fetched,
            expires: fetched + age,
        });
        tracing::info!(
            domain,
            id,
            mode = c.policy.mode.as_str(),
            max_age = age,
            "MTA-STS policy fetched"
        );
        self.keep(domain, &c).await;
        Ok(c)
    }

    async fn keep(&self, domain: &str, c: &Arc<Cached>) {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED && !cache.contains_key(domain) {
                let t = now();
                cache.retain(|_, c| c.expires > t);
            }
            if cache.len() < MAX_CACHED || cache.contains_key(domain) {
                cache.insert(domain.to_owned(), c.clone());
            }
        }
        let Some(q) = &self.queue else { return };
        let stored = Stored {
            id: c.id.clone(),
            text: c.text.clone(),
            fetched: c.fetched,
            expires: c.expires,
        };
        let value = serde_json::to_vec(&stored).unwrap_or_default();
        if let Err(e) = q
            .put_state(&format!("{STATE_PREFIX}{domain}"), Bytes::from(value))
            .await
        {
            tracing::warn!(domain, error = %e, "MTA-STS: the policy could not be kept in the spool");
        }
    }

    /// Starts a background refresh of an old policy (one per domain).
    fn refresh_if_old(self: &Arc<Self>, domain: &str, c: &Cached) {
        let t = now();
        if t < c.fetched + (c.expires - c.fetched) / 2 {
            return;
        }
        let mut busy = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(domain.to_owned()) {
            return;
        }
        drop(busy);
        let (me, domain, id) = (self.clone(), domain.to_owned(), c.id.clone());
        tokio::spawn(async move {
            if let Err((_, why)) = me.fetch(&domain, &id).await {
                tracing::warn!(domain, error = %why, "MTA-STS: refreshing the policy failed; the cached one stays");
            }
            me.refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&domain);
        });
    }
}

fn applies(c: Arc<Cached>) -> Found {
    match c.policy.mode {
        Mode::None => Found::None,
        _ => Found::Policy(c),
    }
}
