//! The shaping side of an egress path: waiting for connection and message
//! slots (rates, shared connection leases), whether the path may send at
//! all now (suspensions, the dead-site pause, an unusable source, a used
//! warm-up share), and the reaction to receivers' refusals through the
//! shaping rules. Decides when a path may act; never speaks SMTP.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::Delivery;
use super::super::job::Job;
use super::super::outcome::{Outcome, Verdict};
use super::path::{Hold, Path};
use crate::shaping::limiter::Lease;
use crate::shaping::{Limiter, pace};

use crate::smtp::client::RemoteReply;

pub(crate) use crate::shaping::actions::DEAD_SITE;

/// The most a destination waiting for a rate sleeps past its next slot.
const SLOT_BATCH: Duration = Duration::from_millis(10);

impl Path {
    /// Waits for room for a new connection: a lease from every shared
    /// scope with a connection limit (held while the connection lives),
    /// then the connection rates of the path and its scopes.
    pub(crate) async fn connection_slot(&self) -> Vec<Lease> {
        let mut leases = Vec::new();
        for s in &self.plan.scopes {
            leases.extend(s.lease().await);
        }
        let rates: Vec<&Limiter> = self
            .connects
            .iter()
            .map(|l| &**l)
            .chain(
                self.plan
                    .scopes
                    .iter()
                    .filter_map(|s| s.connection_rate.as_deref()),
            )
            .collect();
        pace(&rates).await;
        leases
    }

    /// The limiters of one message on this path: its own rate (slowed
    /// down, if it is) and its scopes' (provider, site, domain, source
    /// totals).
    fn send_limiters(&self) -> impl Iterator<Item = &Limiter> {
        let own = match self.aimd.get() {
            Some(a) => Some(a.limiter()),
            None => self.messages.as_deref(),
        };
        own.into_iter().chain(
            self.plan
                .scopes
                .iter()
                .filter_map(|s| s.messages.as_deref()),
        )
    }

    /// How long past its next slot a waiting destination may sleep, so
    /// that a wake-up moves several slots' worth: at most
    /// [`SLOT_BATCH`], and never more than the tightest burst allows.
    pub(crate) fn slot_batch(&self) -> Duration {
        self.send_limiters()
            .map(Limiter::tolerance)
            .min()
            .unwrap_or_default()
            .min(SLOT_BATCH)
    }

    /// True when its messages take slots of a rate.
    pub(crate) fn rate_limited(&self) -> bool {
        self.send_limiters().next().is_some()
    }

    /// When the path's rates allow its next message (`now` if they do).
    pub(crate) fn next_slot(&self, now: Instant) -> Instant {
        self.send_limiters()
            .map(|l| l.earliest(now))
            .max()
            .unwrap_or(now)
            .max(now)
    }

    /// Counts one message in every rate of the path if they all allow it
    /// now: the scheduler moves a job to the ready queue only with a slot,
    /// so the ready queue of a rate-limited path holds what may go now.
    /// False (nothing counted, bar a lost race) otherwise.
    pub(crate) fn take_slot(&self, now: Instant) -> bool {
        if self.next_slot(now) > now {
            return false;
        }
        // A race lost on one leaves the others counted: that errs on the
        // slow side.
        self.send_limiters().all(|l| l.try_take(now))
    }

    /// Why the path cannot send now, and until when (if known): a
    /// suspension of it, its source, site or provider (a dead-site pause
    /// is one), an unusable source, or a used warm-up share. Looked up
    /// again only when the actions change or the hold ends, so it costs
    /// nothing per message.
    pub(crate) fn hold(&self, svc: &Delivery) -> Option<Hold> {
        self.send_hold(svc).or_else(|| self.warm_hold(svc))
    }

    /// Why the path cannot send the jobs it already has: [`Path::hold`]
    /// but a used warm-up share, which stops new jobs only (those it has
    /// were counted in the share).
    pub(crate) fn send_hold(&self, svc: &Delivery) -> Option<Hold> {
        let now = Instant::now();
        if let Some((until, why)) = self.source.unusable().filter(|(u, _)| *u > now) {
            let why = format!("source {} unusable: {why}", self.source.name);
            return Some((Some(until), why));
        }
        let actions = &svc.settings.shaper.actions;
        let version = actions.version();
        let mut seen = self.hold_seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, hold)) = &*seen {
            let over = hold
                .as_ref()
                .is_some_and(|(until, _)| until.is_some_and(|u| u <= now));
            if *v == version && !over {
                return hold.clone();
            }
        }
        let hold = actions
            .suspended(
                &self.source.name,
                &self.site,
                self.plan.provider.as_deref(),
                None,
            )
            .map(|s| (Some(s.until), s.why));
        *seen = Some((actions.version(), hold.clone()));
        hold
    }

    /// The source has sent its warm-up share to this provider today (or
    /// is asking the fleet for more of it).
    fn warm_hold(&self, svc: &Delivery) -> Option<Hold> {
        let wait = self.state().warm_wait.filter(|u| *u > Instant::now());
        if let Some(until) = wait {
            let why = format!(
                "source {} waits for the fleet's warm-up count",
                self.source.name
            );
            return Some((Some(until), why));
        }
        let day = self.state().warm_full?;
        let now = svc.clock.system_time();
        let today = crate::clock::day_number(now);
        if day != today {
            self.state().warm_full = None;
            return None;
        }
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let tomorrow = Duration::from_secs(86_400 - secs % 86_400);
        let why = format!(
            "source {} has sent its warm-up share for today",
            self.source.name
        );
        Some((Some(Instant::now() + tomorrow), why))
    }

    /// Counts one message in the source's warm-up share for this path's
    /// provider today; false (and the path held until tomorrow) when the
    /// share is used up.
    pub(crate) fn warmup_take(&self, svc: &Delivery) -> bool {
        use crate::shaping::shared::Take;
        let day = crate::clock::day_number(svc.clock.system_time());
        match self.source.warmup_take(day, self.plan.provider.as_ref()) {
            Take::Taken => true,
            Take::Full => {
                self.state().warm_full = Some(day);
                false
            }
            Take::Wait(until) => {
                self.state().warm_wait = Some(until);
                false
            }
        }
    }

    /// Matches a receiver's refusal against the shaping rules and starts
    /// the action of the first that matches.
    pub(crate) fn react(&self, svc: &Arc<Delivery>, reply: &RemoteReply, job: &Job) {
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
                let per_minute = self.slow_down(rule).decrease() * 60.0;
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
        let id = job.id;
        tracing::warn!(queue_id = %id, rule = %action.rule, target = %action.target, until = %action.end, rate = ?action.rate, reply = %action.reply, "shaping rule fired");
        let mut r = crate::log::Record::new(kind, now, id.to_string(), String::new());
        r.rate = action.rate.clone().map(Into::into);
        r.site = Some(self.site.to_string().into());
        r.source = Some(self.source.name.to_string().into());
        r.reply = Some(action.reply.into());
        r.rule = Some(action.rule.into());
        r.target = Some(action.target.to_string().into());
        r.until = Some(action.end.into());
        svc.log.write(&r);
        if kind == crate::log::Kind::Suspension {
            svc.holds_changed();
        }
    }

    /// The path's slow-down, started on first use: it scales the path's
    /// own message limiter (keeping what it counted), or, on a path
    /// without a rate, a limiter at the rule's ceiling (or ten times its
    /// floor) that starts as if it had just sent a burst.
    fn slow_down(&self, rule: &crate::shaping::rules::Rule) -> &crate::shaping::aimd::Aimd {
        self.aimd.get_or_init(|| {
            let floor = rule.floor.unwrap_or(crate::config::values::Rate {
                count: 1,
                per: Duration::from_secs(60),
                burst: None,
            });
            let limiter = match (&self.messages, rule.ceiling) {
                (Some(l), _) => l.clone(),
                (None, ceiling) => {
                    let full = ceiling.unwrap_or(crate::config::values::Rate {
                        count: floor.count * 10,
                        ..floor
                    });
                    Arc::new(Limiter::new_busy(full, Instant::now()))
                }
            };
            Arc::new(crate::shaping::aimd::Aimd::new(limiter, floor))
        })
    }

    /// Puts back the slow-down the actions say this path was under (kept
    /// in the spool over a restart), if the rule that made it still is.
    pub(crate) fn restore_slowdown(&self, svc: &Delivery) {
        let actions = &svc.settings.shaper.actions;
        let Some((rule, per_minute)) = actions.slowdown_of(&self.source.name, &self.site) else {
            return;
        };
        let shaping = svc.settings.shaper.current();
        if let Some(rule) = shaping.rules.named(&rule) {
            self.slow_down(rule).set_rate(per_minute / 60.0);
            tracing::info!(source = %self.source.name, site = %self.site, per_minute, "slow-down put back");
        }
    }

    /// Ends a slow-down whose action is gone (its rule was removed by a
    /// reload).
    pub(crate) fn drop_lost_slowdown(&self, svc: &Delivery) {
        let Some(aimd) = self.aimd.get().filter(|a| a.slowed()) else {
            return;
        };
        let actions = &svc.settings.shaper.actions;
        if actions.slowdown_of(&self.source.name, &self.site).is_none() {
            aimd.reset();
        }
    }

    /// A connection opened: the site answers again.
    pub(crate) fn connected(&self) {
        let mut st = self.state();
        st.connected += 1;
        st.failures = 0;
    }

    /// Deferred recipients whose reply matches a `bounce` rule fail now.
    pub(crate) fn bounce_by_rule(&self, svc: &Delivery, outcomes: &mut [Outcome]) {
        let shaping = svc.settings.shaper.current();
        let rules = &shaping.rules;
        let provider = self.plan.provider.as_deref();
        for o in outcomes.iter_mut() {
            if o.verdict != Verdict::Deferred {
                continue;
            }
            let r = &o.reply;
            let rule = rules.matching(r.code, r.esc, &r.text, provider);
            if rule.is_some_and(|rule| rule.action == crate::config::RuleAction::Bounce) {
                o.verdict = Verdict::Failed;
            }
        }
    }

    /// A message went through: a slowed path gets some of its rate back.
    pub(crate) fn delivered(&self, svc: &Delivery) {
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

    /// Counts a failed connection; after `dead_site_failures` in a row the
    /// path pauses: a `dead_site` action on it, listed with the others and
    /// ended early by `tern resume` or `tern retry`. True when it paused.
    pub(crate) fn connection_failed(&self, svc: &Delivery, reply: &RemoteReply) -> bool {
        let limits = &self.plan.limits;
        let failures = {
            let mut st = self.state();
            st.failures = st.failures.saturating_add(1);
            st.failures
        };
        if failures < limits.dead_site_failures || self.hold(svc).is_some() {
            return false;
        }
        tracing::warn!(
            source = %self.source.name,
            site = %self.site,
            failures,
            pause_s = limits.dead_site_pause.as_secs(),
            last = %reply,
            "egress path paused: its site does not answer; its mail waits (no attempt is counted) until the pause ends"
        );
        let target = crate::shaping::rules::Target::Path(
            self.source.name.to_string(),
            self.site.to_string(),
        );
        let why = format!("{failures} failed connections; last: {reply}");
        let now = svc.clock.system_time();
        (svc.settings.shaper.actions).pause(target, DEAD_SITE, &why, limits.dead_site_pause, now);
        true
    }
}
