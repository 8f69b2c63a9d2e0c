//! Queued messages and recipients per recipient domain, kept up to date as
//! messages are added, change and go, so that the per-domain view (the
//! status page, `tern queue summary`) answers from these counts instead of
//! walking the whole queue under its lock. A recipient counts while it is
//! left to do (pending or held); a message counts once per domain it has
//! such a recipient at. Domains are compared without case.

use std::collections::HashMap;

use super::Entry;
use crate::packed::domain;
use crate::types::DomainCount;

/// The counts, by lower-case domain.
#[derive(Default)]
pub(crate) struct DomainCounts(HashMap<Box<str>, (u64, u64)>);

impl DomainCounts {
    /// Adds (`sign` 1) or takes away (`sign` -1) what `e` contributes.
    pub fn count(&mut self, e: &Entry, sign: i64) {
        if let [s] = &*e.statuses {
            if !s.state.is_final()
                && let Some(address) = e.env.addresses().next()
            {
                self.add(domain(address), sign, sign);
            }
            return;
        }
        let mut domains: Vec<&str> = e
            .env
            .addresses()
            .zip(e.statuses.iter())
            .filter(|(_, s)| !s.state.is_final())
            .map(|(a, _)| domain(a))
            .collect();
        // Equal domains side by side, compared without case: a lower-case
        // copy per domain only when one has upper case (rare), never one
        // per comparison.
        if domains
            .iter()
            .any(|d| d.bytes().any(|b| b.is_ascii_uppercase()))
        {
            domains.sort_by_cached_key(|d| d.to_ascii_lowercase());
        } else {
            domains.sort_unstable();
        }
        let mut i = 0;
        while i < domains.len() {
            let d = domains[i];
            let mut n = 1;
            while i + n < domains.len() && domains[i + n].eq_ignore_ascii_case(d) {
                n += 1;
            }
            self.add(d, sign, n as i64 * sign);
            i += n;
        }
    }

    /// Adds the counts of `other` (a recovered index's).
    pub fn absorb(&mut self, other: DomainCounts) {
        if self.0.is_empty() {
            self.0 = other.0;
            return;
        }
        for (domain, (messages, recipients)) in other.0 {
            let slot = self.0.entry(domain).or_default();
            slot.0 += messages;
            slot.1 += recipients;
        }
    }

    fn add(&mut self, domain: &str, messages: i64, recipients: i64) {
        // Domains are nearly always lower case already: no copy then.
        let owned;
        let lower = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            owned = domain.to_ascii_lowercase();
            owned.as_str()
        } else {
            domain
        };
        let slot = match self.0.get_mut(lower) {
            Some(slot) => slot,
            None => self.0.entry(lower.into()).or_default(),
        };
        slot.0 = slot.0.saturating_add_signed(messages);
        slot.1 = slot.1.saturating_add_signed(recipients);
        if *slot == (0, 0) {
            self.0.remove(lower);
        }
    }

    /// Every domain with queued recipients, most recipients first.
    pub fn rows(&self) -> Vec<DomainCount> {
        let mut out: Vec<DomainCount> = self
            .0
            .iter()
            .map(|(domain, (messages, recipients))| DomainCount {
                domain: domain.to_string(),
                messages: *messages,
                recipients: *recipients,
            })
            .collect();
        out.sort_by(|a, b| {
            b.recipients
                .cmp(&a.recipients)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        out
    }
}
