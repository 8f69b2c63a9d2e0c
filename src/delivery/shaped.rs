//! The shaping side of an egress path: waiting for connection and message
//! slots (rates, shared connection leases), the dead-site pause, and the
//! reaction to receivers' refusals through the shaping rules. Decides
//! when a path may act; never speaks SMTP.

use tokio::sync::OwnedSemaphorePermit;

use super::Delivery;
use super::path::{Job, Path};
use crate::shaping::{Limiter, pace};
use crate::smtp::client::{RemoteReply, local_reply};

impl Path {
    /// Waits for room for a new connection: a lease from every shared
    /// scope with a connection limit (held while the connection lives),
    /// then the connection rates of the path and its scopes.
    pub(super) async fn connection_slot(&self) -> Vec<OwnedSemaphorePermit> {
        let mut leases = Vec::new();
        for s in &self.plan.scopes {
            leases.extend(s.lease().await);
        }
        let rates: Vec<&Limiter> = self
            .connects
            .iter()
            .chain(
                self.plan
                    .scopes
                    .iter()
                    .filter_map(|s| s.connection_rate.as_ref()),
            )
            .collect();
        pace(&rates).await;
        leases
    }

    /// True when a message rate applies to this path.
    pub(super) fn paced(&self) -> bool {
        self.messages.is_some()
            || self.aimd.get().is_some()
            || self.plan.scopes.iter().any(|s| s.messages.is_some())
    }

    /// Waits until the message rates of the path and its scopes allow one
    /// more message.
    pub(super) async fn message_slot(&self) {
        let rates: Vec<&Limiter> = self
            .messages
            .iter()
            .chain(self.aimd.get().map(|a| a.limiter()))
            .chain(self.plan.scopes.iter().filter_map(|s| s.messages.as_ref()))
            .collect();
        pace(&rates).await;
    }

    /// The deferral reply while a shaping rule suspends this path (or its
    /// source, site or provider).
    pub(super) fn suspension(&self, svc: &Delivery, job: &Job) -> Option<RemoteReply> {
        let keys = crate::shaping::rules::JobKeys {
            domain: &job.domain,
            pool: &job.attempt.pool.name,
            tenant: job.attempt.meta.tenant.as_deref(),
        };
        let s = svc.settings.shaper.actions.suspended(
            &self.source.name,
            &self.site,
            self.plan.provider.as_deref(),
            Some(keys),
        )?;
        Some(local_reply(451, [4, 7, 0], s.why))
    }

    /// Matches a receiver's refusal against the shaping rules and starts
    /// the action of the first that matches.
    pub(super) fn react(&self, svc: &Delivery, reply: &RemoteReply, job: &Job) {
        use crate::config::RuleScope;
        use crate::shaping::rules::Target;
        let shaper = &svc.settings.shaper;
        let shaping = shaper.current();
        let provider = self.plan.provider.as_deref();
        let Some(rule) = shaping
            .rules
            .matching(reply.code, reply.esc, &reply.text, provider)
        else {
            return;
        };
        let target = match (rule.scope, provider) {
            (RuleScope::Path, _) => {
                Target::Path(self.source.name.to_string(), self.site.to_string())
            }
            (RuleScope::Source, _) => Target::Source(self.source.name.to_string()),
            (RuleScope::Provider, Some(p)) => Target::Provider(p.to_owned()),
            (RuleScope::Site | RuleScope::Provider, _) => Target::Site(self.site.to_string()),
        };
        let now = svc.clock.system_time();
        let (kind, action) = match rule.action {
            crate::config::RuleAction::SlowDown => {
                let full = self.plan.limits.message_rate.or(rule.ceiling);
                let floor = rule.floor.unwrap_or(crate::config::values::Rate {
                    count: 1,
                    per: std::time::Duration::from_secs(60),
                    burst: None,
                });
                let full = full.unwrap_or(crate::config::values::Rate {
                    count: floor.count * 10,
                    ..floor
                });
                let aimd = self
                    .aimd
                    .get_or_init(|| crate::shaping::aimd::Aimd::new(full, floor));
                let per_minute = aimd.decrease() * 60.0;
                let action =
                    shaper
                        .actions
                        .slowed(target, rule, &reply.to_string(), per_minute, now);
                (crate::log::Kind::SlowDown, action)
            }
            crate::config::RuleAction::Bounce => return, // see `bounce_by_rule`
            crate::config::RuleAction::Suspend => {
                match shaper
                    .actions
                    .suspend(target, rule, &reply.to_string(), now)
                {
                    Some(action) => (crate::log::Kind::Suspension, action),
                    None => return,
                }
            }
        };
        let id = job.attempt.info.id;
        tracing::warn!(queue_id = %id, rule = %action.rule, target = %action.target, until = %action.end, rate = ?action.rate, reply = %action.reply, "shaping rule fired");
        let mut r = crate::log::Record::new(
            kind,
            now,
            id.to_string(),
            job.attempt.info.envelope.sender.to_string(),
        );
        r.rate = action.rate.clone();
        r.site = Some(self.site.to_string());
        r.source = Some(self.source.name.to_string());
        r.reply = Some(action.reply);
        r.rule = Some(action.rule);
        r.target = Some(action.target.to_string());
        r.until = Some(action.end);
        svc.log.write(&r);
    }

    /// A connection opened: the site answers again.
    pub(super) fn connected(&self) {
        let mut st = self.state();
        st.connected += 1;
        st.failures = 0;
        st.paused_until = None;
    }

    /// Deferred recipients whose reply matches a `bounce` rule fail now.
    pub(super) fn bounce_by_rule(&self, svc: &Delivery, outcomes: &mut [super::attempt::Outcome]) {
        let shaping = svc.settings.shaper.current();
        let rules = &shaping.rules;
        let provider = self.plan.provider.as_deref();
        for o in outcomes.iter_mut() {
            if o.verdict != super::attempt::Verdict::Deferred {
                continue;
            }
            let r = &o.reply;
            let rule = rules.matching(r.code, r.esc, &r.text, provider);
            if rule.is_some_and(|rule| rule.action == crate::config::RuleAction::Bounce) {
                o.verdict = super::attempt::Verdict::Failed;
            }
        }
    }

    /// A message went through: a slowed path gets some of its rate back.
    pub(super) fn delivered(&self, svc: &Delivery) {
        let Some(aimd) = self.aimd.get().filter(|a| a.slowed()) else {
            return;
        };
        if aimd.increase() {
            use crate::shaping::rules::Target;
            let target = Target::Path(self.source.name.to_string(), self.site.to_string());
            svc.settings.shaper.actions.recovered(&target);
            tracing::info!(source = %self.source.name, site = %self.site, "slowed path back at its full rate");
        }
    }

    /// Counts a failed connection; pauses the path after
    /// `dead_site_failures` in a row.
    pub(super) fn connection_failed(&self, reply: &RemoteReply) {
        let limits = &self.plan.limits;
        let mut st = self.state();
        st.failures = st.failures.saturating_add(1);
        let now = tokio::time::Instant::now();
        let paused = st.paused_until.is_some_and(|u| u > now);
        if st.failures >= limits.dead_site_failures && !paused {
            st.paused_until = Some(now + limits.dead_site_pause);
            tracing::warn!(
                source = %self.source.name,
                site = %self.site,
                failures = st.failures,
                pause_s = limits.dead_site_pause.as_secs(),
                last = %reply,
                "egress path paused: its site does not answer; its mail is deferred until the pause ends"
            );
        }
    }
}
