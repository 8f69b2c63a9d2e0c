//! Rebinds: an operator moves queued mail to another pool ("the IPs of
//! pool A are blocked at this provider: send what is waiting from pool B")
//! or another route (relay it through these hosts instead of the
//! domain's MX hosts).
//! A rebind is a rule, not a rewrite of each message: it applies to the
//! messages that match its filter and were queued before it was made, at
//! each of their attempts, so moving a million messages costs one small
//! record and no pass over the spool. The rules are kept in the spool (the
//! queue's state, under its crash-safety contract; a rebind is answered
//! only once kept there: [`super::Delivery::keep_rebinds`]), so they
//! survive a restart with the mail they move, and are forgotten once no
//! message old enough to match can be queued (`delivery.max_age` after
//! they were made). Mail queued after a rebind keeps its own pool.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use queue::{MessageInfo, Timestamp};
use serde::{Deserialize, Serialize};

use super::filter::{Filter, Scope};
use crate::message::MessageMeta;

/// One rebind in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rebind {
    /// Its id (for cancelling it).
    pub id: u64,
    /// The messages it moves (of those queued before it was made).
    pub filter: Filter,
    /// The pool they go out from instead, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_pool: Option<String>,
    /// The hosts ("host:port" or "host") they are relayed through instead
    /// of their domains' MX hosts, if the route changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// When it was made, in milliseconds since the epoch.
    pub made_ms: u64,
    /// Why, as the operator said.
    #[serde(default)]
    pub reason: String,
}

impl Rebind {
    /// Where it sends the mail, for people: "pool P", "via H", or both.
    pub fn destination(&self) -> String {
        let pool = self.to_pool.as_ref().map(|p| format!("pool {p}"));
        let via = (!self.via.is_empty()).then(|| format!("via {}", self.via.join(",")));
        [pool, via]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A rebind made or ended on one node, as the rest of the fleet hears
/// of it (see [`Rebinds::publish_to`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A rebind was made.
    Put {
        /// It.
        rebind: Box<Rebind>,
    },
    /// Rebind `id` was ended.
    End {
        /// Its id.
        id: u64,
    },
}

/// The rebinds in force.
#[derive(Debug)]
pub struct Rebinds {
    max_age: Duration,
    rules: RwLock<Vec<Rebind>>,
    /// Where changes made here go, in a fleet.
    outbox: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Change>>,
}

impl Rebinds {
    /// The rebinds kept before (as [`Rebinds::snapshot`] gave them), if
    /// any; rules older than `max_age` are dropped. Unreadable ones are
    /// reported, and none is then in force.
    pub fn new(kept: Option<&[u8]>, max_age: Duration) -> Self {
        let rules = kept.map(|k| {
            serde_json::from_slice(k).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the rebinds kept in the spool are unreadable; no rebind is in force");
                Vec::new()
            })
        });
        let r = Self {
            max_age,
            rules: RwLock::new(rules.unwrap_or_default()),
            outbox: std::sync::OnceLock::new(),
        };
        r.prune(SystemTime::now());
        r
    }

    /// What to keep of them.
    pub fn snapshot(&self) -> Vec<u8> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        serde_json::to_vec(&*rules).unwrap_or_default()
    }

    /// Where earlier versions kept them: a file in the spool directory,
    /// read once and moved into the spool's state.
    pub fn legacy_file(spool: &Path) -> PathBuf {
        spool.join("rebinds.json")
    }

    /// Moves the matching mail queued until `now` as `rule` says (its id
    /// and time are set here).
    pub fn add(&self, mut rule: Rebind, now: SystemTime) -> Rebind {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        rule.made_ms = Timestamp::from_system_time(now).as_millis();
        let next = rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        rule.id = match self.outbox.get() {
            // Unique in the fleet: the time it was made, and a random part.
            Some(_) => next.max((rule.made_ms << 10) | fastrand::u64(..1024)),
            None => next,
        };
        rules.push(rule.clone());
        drop(rules);
        self.publish(Change::Put {
            rebind: Box::new(rule.clone()),
        });
        rule
    }

    /// Ends rebind `id`: the mail it moved goes back to its own pool.
    pub fn cancel(&self, id: u64) -> bool {
        let ended = self.end(id);
        if ended {
            self.publish(Change::End { id });
        }
        ended
    }

    fn end(&self, id: u64) -> bool {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    /// From now on, every rebind made or ended here is also sent to
    /// `outbox` (and rebinds get ids unique in the fleet).
    pub fn publish_to(&self, outbox: tokio::sync::mpsc::UnboundedSender<Change>) {
        let _ = self.outbox.set(outbox);
    }

    fn publish(&self, change: Change) {
        if let Some(o) = self.outbox.get() {
            let _ = o.send(change);
        }
    }

    /// A change another node made; returns the rebind when it is new here
    /// (its mail is then made due), and whether anything changed.
    pub fn apply(&self, change: Change) -> (bool, Option<Rebind>) {
        match change {
            Change::Put { rebind } => {
                let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
                if rules.iter().any(|r| r.id == rebind.id) {
                    return (false, None);
                }
                rules.push((*rebind).clone());
                rules.sort_by_key(|r| r.made_ms);
                (true, Some(*rebind))
            }
            Change::End { id } => (self.end(id), None),
        }
    }

    /// The rebinds in force, oldest first.
    pub fn list(&self, now: SystemTime) -> Vec<Rebind> {
        self.prune(now);
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The newest rebind that moves a message, if any.
    pub fn rule_for(
        &self,
        m: &MessageInfo,
        meta: &MessageMeta,
        default_pool: &str,
    ) -> Option<Rebind> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        if rules.is_empty() {
            return None;
        }
        rules
            .iter()
            .rev()
            .find(|r| {
                m.arrival.as_millis() <= r.made_ms && r.filter.matches(m, meta, &kept(default_pool))
            })
            .cloned()
    }

    /// Drops the rules no queued message can still match.
    fn prune(&self, now: SystemTime) {
        let oldest = Timestamp::from_system_time(now.checked_sub(self.max_age).unwrap_or(now));
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        rules.retain(|r| r.made_ms >= oldest.as_millis());
    }
}

/// The scope a kept rule is matched in: it names no site, provider,
/// state or age (refused when it is made), so only the pool matters.
fn kept(default_pool: &str) -> Scope<'_> {
    Scope {
        default_pool,
        now: Timestamp::from_millis(0),
        routes: None,
    }
}

impl super::Delivery {
    /// A rebind another node made: kept here, and the matching mail queued
    /// before it made due now (as `tern rebind` does on its own node).
    pub async fn rebound(&self, rule: Rebind) {
        if let Err(e) = self.keep_rebinds().await {
            tracing::warn!(rebind = rule.id, error = %e, "cluster: a rebind from the fleet is in force but not yet kept in the spool");
        }
        self.queue.recovered().await; // the rule applies to every queued message
        let default_pool = self.default_pool();
        let now = Timestamp::from_system_time(self.clock.system_time());
        let (mut moved, mut after) = (0u64, None);
        loop {
            let page = self.queue.page(after, 1000);
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for m in page
                .iter()
                .filter(|m| !m.in_flight && m.arrival.as_millis() <= rule.made_ms)
            {
                let meta = MessageMeta::decode(&m.envelope.meta);
                if crate::cluster::drain::receive::held(m)
                    || !rule.filter.matches(m, &meta, &kept(&default_pool))
                {
                    continue;
                }
                let done = match m.scheduled {
                    true => self.readmit(m.id),
                    false => self.queue.reschedule(m.id, now).await.is_ok_and(|n| n > 0),
                };
                moved += u64::from(done);
            }
        }
        self.wake.notify_one();
        tracing::warn!(rebind = rule.id, moved, to = %rule.destination(), "cluster: a rebind made on another node moved mail here");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::{Envelope, EnvelopeRecipient, RecipientStatus};
    use std::sync::Arc;

    fn message(arrival_ms: u64, tenant: &str) -> (MessageInfo, MessageMeta) {
        let meta = MessageMeta {
            tenant: Some(tenant.into()),
            ..MessageMeta::default()
        };
        let envelope = Envelope {
            sender: "a@b.example".into(),
            recipients: vec![EnvelopeRecipient::new("x@gmail.example")].into(),
            meta: Vec::new().into(),
        };
        let info = MessageInfo {
            id: queue::MessageId::from_u64(1),
            arrival: Timestamp::from_millis(arrival_ms),
            envelope: Arc::new(envelope),
            statuses: vec![RecipientStatus::pending(Timestamp::from_millis(arrival_ms))],
            body_len: 1,
            priority: 0,
            in_flight: false,
            scheduled: false,
            handout: 0,
        };
        (info, meta)
    }

    fn to_spare(filter: Filter) -> Rebind {
        Rebind {
            id: 0,
            filter,
            to_pool: Some("spare".into()),
            via: Vec::new(),
            made_ms: 0,
            reason: "blocked".into(),
        }
    }

    fn pool(r: &Rebinds, m: &MessageInfo, meta: &MessageMeta) -> Option<String> {
        r.rule_for(m, meta, "default").and_then(|r| r.to_pool)
    }

    #[test]
    fn a_rebind_moves_matching_mail_queued_before_it_and_survives_a_restart() {
        let day = Duration::from_secs(86_400);
        let r = Rebinds::new(None, day);
        let now = SystemTime::now();
        let made = Timestamp::from_system_time(now).as_millis();
        let filter = Filter {
            domain: Some("GMAIL.example".into()),
            tenant: Some("shop".into()),
            ..Filter::default()
        };
        r.add(to_spare(filter), now);
        let (old, meta) = message(made - 1000, "shop");
        let (new, _) = message(made + 1000, "shop");
        let (other, other_meta) = message(made - 1000, "news");
        assert_eq!(pool(&r, &old, &meta).as_deref(), Some("spare"));
        assert_eq!(
            pool(&r, &new, &meta),
            None,
            "mail queued later keeps its pool"
        );
        assert_eq!(pool(&r, &other, &other_meta), None);
        let again = Rebinds::new(Some(&r.snapshot()), day);
        assert_eq!(pool(&again, &old, &meta).as_deref(), Some("spare"));
        assert!(again.cancel(1));
        let kept = again.snapshot();
        assert_eq!(Rebinds::new(Some(&kept), day).list(now), Vec::new());
        assert!(Rebinds::new(Some(b"not json"), day).list(now).is_empty());
    }

    #[test]
    fn rules_older_than_the_longest_queue_life_are_forgotten() {
        let r = Rebinds::new(None, Duration::from_secs(60));
        let then = SystemTime::now() - Duration::from_secs(120);
        r.add(to_spare(Filter::default()), then);
        assert!(r.list(SystemTime::now()).is_empty());
    }
}
