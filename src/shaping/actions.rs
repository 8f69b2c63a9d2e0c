//! The automatic actions in force: suspensions of a path, a source, a
//! site, a provider (started by reply rules), an operator's suspensions of
//! those and of domains, pools and tenants, Tern's own dead-site pauses,
//! and slow-downs; each kept with its rule, the reply that triggered it
//! and its end, so that operators can see (and cancel) them. They end by
//! themselves. They are kept in the spool (through a [`Slot`]) and restored
//! at start, so that a restart does not forget that a provider asked to be
//! left alone. Never matches replies (the rules do) nor holds mail
//! (delivery reads them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::rules::Rule;
use crate::state::Slot;

/// The rule name of Tern's own dead-site pauses.
pub const DEAD_SITE: &str = "dead_site";

/// What an action applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One egress path: (source, site).
    Path(String, String),
    /// A source, everywhere.
    Source(String),
    /// A site, from every source.
    Site(String),
    /// A provider.
    Provider(String),
    /// A path's slow-down (kept apart from its suspensions).
    Slowed(String, String),
    /// A recipient domain (an operator's suspension).
    Domain(String),
    /// A pool (an operator's suspension).
    Pool(String),
    /// A tenant (an operator's suspension).
    Tenant(String),
}

/// What a job is, for suspensions that name more than its path.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobKeys<'a> {
    /// Its recipients' domain.
    pub domain: &'a str,
    /// Its message's pool.
    pub pool: &'a str,
    /// Its message's tenant.
    pub tenant: Option<&'a str>,
}

impl Target {
    /// The key of a slow-down of this target (a path).
    pub fn slow(self) -> Target {
        match self {
            Target::Path(source, site) => Target::Slowed(source, site),
            other => other,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Path(source, site) => write!(f, "path {source} -> {site}"),
            Target::Source(s) => write!(f, "source {s}"),
            Target::Site(s) => write!(f, "site {s}"),
            Target::Provider(p) => write!(f, "provider {p}"),
            Target::Slowed(source, site) => write!(f, "path {source} -> {site} (slowed)"),
            Target::Domain(d) => write!(f, "domain {d}"),
            Target::Pool(p) => write!(f, "pool {p}"),
            Target::Tenant(t) => write!(f, "tenant {t}"),
        }
    }
}

/// An automatic action in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Action {
    /// What is suspended.
    pub target: Target,
    /// The rule that started it.
    pub rule: String,
    /// The reply that triggered it.
    pub reply: String,
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ends (RFC 3339), or, for a slow-down, "when whole".
    pub end: String,
    /// For a slow-down: the rate in force (messages per minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(skip)]
    until: Option<Instant>,
}

impl Action {
    /// Its key among the actions in force: its target, or for a
    /// slow-down the target's slow-down key.
    pub fn key(&self) -> Target {
        match self.rate.is_some() {
            true => self.target.clone().slow(),
            false => self.target.clone(),
        }
    }

    /// How long it has left at `now` (a slow-down: until whole), if it
    /// has not ended.
    fn left(&self, now: SystemTime) -> Option<Duration> {
        match self.rate.is_some() {
            true => Some(Duration::from_secs(10 * 365 * 86_400)),
            false => {
                crate::clock::parse_rfc3339(&self.end).and_then(|e| e.duration_since(now).ok())
            }
        }
    }

    /// An action on `target` by `rule` for `duration` from `now`, after
    /// `reply` (or an operator's reason).
    fn timed(target: Target, rule: &str, reply: &str, duration: Duration, now: SystemTime) -> Self {
        Self {
            target,
            rule: rule.into(),
            reply: reply.chars().take(300).collect(),
            start: crate::clock::rfc3339(now),
            end: crate::clock::rfc3339(now + duration),
            rate: None,
            until: Some(Instant::now() + duration),
        }
    }
}

/// A change of the actions made on one node, as the rest of the fleet
/// hears of it (see [`Actions::publish_to`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// An action was put in force (or replaced).
    Put {
        /// The action, its end in RFC 3339.
        action: Action,
    },
    /// The action on `target` ended early (an operator's cancel, a slowed
    /// path whole again, a lifted pause).
    End {
        /// The key of the action that ended.
        target: Target,
    },
}

impl Change {
    /// The key of the action it changes.
    pub fn key(&self) -> Target {
        match self {
            Change::Put { action } => action.key(),
            Change::End { target } => target.clone(),
        }
    }
}

/// The actions in force, shared by every path; kept through `slot` each
/// time they change, and told to the fleet through the outbox, if any.
#[derive(Debug, Default)]
pub struct Actions {
    active: Mutex<HashMap<Target, Action>>,
    slot: Option<Slot>,
    /// Bumped at every change, so that readers can cache what they found.
    version: std::sync::atomic::AtomicU64,
    outbox: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Change>>,
}

/// Where a path stands: the suspension that stops it, if any.
pub struct Suspended {
    /// When it ends.
    pub until: Instant,
    /// Why, for the deferral reply.
    pub why: String,
}

impl Actions {
    /// No actions; changes are kept through `slot`, if any.
    pub fn new(slot: Option<Slot>) -> Self {
        Self {
            active: Mutex::new(HashMap::new()),
            slot,
            version: Default::default(),
            outbox: std::sync::OnceLock::new(),
        }
    }

    /// From now on, every change made here (not those [`Actions::apply`]
    /// brings from the fleet) is also sent to `outbox`.
    pub fn publish_to(&self, outbox: tokio::sync::mpsc::UnboundedSender<Change>) {
        let _ = self.outbox.set(outbox);
    }

    fn publish(&self, change: Change) {
        if let Some(o) = self.outbox.get() {
            let _ = o.send(change);
        }
    }

    /// A change another node of the fleet made; true when it changed
    /// anything here. It is kept (in the spool) but not sent on.
    pub fn apply(&self, change: Change, now: SystemTime) -> bool {
        match change {
            Change::Put { mut action } => {
                let Some(left) = action.left(now) else {
                    return false;
                };
                let mut active = self.active();
                let same = |a: &Action| {
                    (&a.rule, &a.reply, &a.start, &a.end, &a.rate)
                        == (
                            &action.rule,
                            &action.reply,
                            &action.start,
                            &action.end,
                            &action.rate,
                        )
                };
                if active.get(&action.key()).is_some_and(same) {
                    return false;
                }
                action.until = Some(Instant::now() + left);
                active.insert(action.key(), action);
                let snapshot: Vec<Action> = active.values().cloned().collect();
                drop(active);
                self.write(&snapshot);
                true
            }
            Change::End { target } => !self.end(&target).is_empty(),
        }
    }

    /// Every action in force now, as changes (to tell the fleet).
    pub fn as_changes(&self) -> Vec<Change> {
        self.list()
            .into_iter()
            .map(|action| Change::Put { action })
            .collect()
    }

    /// Puts back the actions kept before a restart (as [`Actions::list`]
    /// gave them) that have not ended by `now`; returns how many.
    pub fn restore(&self, kept: &[u8], now: SystemTime) -> usize {
        let list: Vec<Action> = match serde_json::from_slice(kept) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "the shaping actions kept in the spool are unreadable; none restored");
                return 0;
            }
        };
        let mut active = self.active();
        for mut a in list {
            if let Some(left) = a.left(now) {
                a.until = Some(Instant::now() + left);
                active.insert(a.key(), a);
            }
        }
        let n = active.len();
        drop(active);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        n
    }

    /// Ends the actions of rules that are gone (a reload): an operator's
    /// and Tern's own (`kept_rules`) stay.
    pub fn keep_rules(&self, rules: &[&str]) {
        let mut active = self.active();
        let before = active.len();
        active.retain(|_, a| rules.contains(&a.rule.as_str()));
        if active.len() != before {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
        }
    }

    /// The slow-down of the path from `source` to `site`, if one is in
    /// force: its rule and its rate (messages per minute).
    pub fn slowdown_of(&self, source: &str, site: &str) -> Option<(String, f64)> {
        let target = Target::Slowed(source.into(), site.into());
        let active = self.active();
        let a = active.get(&target)?;
        let rate = a.rate.as_deref()?.strip_suffix("/m")?.parse().ok()?;
        Some((a.rule.clone(), rate))
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<Target, Action>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes with every change of the actions in force.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every suspension in force (slow-downs aside): its target, its end
    /// and why.
    pub fn holds(&self) -> Vec<(Target, Instant, String)> {
        let now = Instant::now();
        self.active()
            .values()
            .filter(|a| a.rate.is_none())
            .filter_map(|a| {
                let until = a.until.filter(|u| *u > now)?;
                Some((a.target.clone(), until, why(a)))
            })
            .collect()
    }

    /// Pauses `target` for `duration` (Tern's own decision, such as a
    /// dead site), named `rule`, unless it is already held.
    pub fn pause(
        &self,
        target: Target,
        rule: &str,
        reason: &str,
        duration: Duration,
        now: SystemTime,
    ) -> Option<Action> {
        self.put(Action::timed(target, rule, reason, duration, now), false)
    }

    /// Puts `action` in force: always with `replace`, else only when no
    /// action is in force on its target (then the first one's end stands).
    fn put(&self, action: Action, replace: bool) -> Option<Action> {
        let mut active = self.active();
        let held = active
            .get(&action.target)
            .is_some_and(|a| a.until.is_some_and(|u| u > Instant::now()));
        if held && !replace {
            return None;
        }
        active.insert(action.target.clone(), action.clone());
        let snapshot: Vec<Action> = active.values().cloned().collect();
        drop(active);
        self.write(&snapshot);
        self.publish(Change::Put {
            action: action.clone(),
        });
        Some(action)
    }

    /// Starts a suspension of `target` by `rule`; returns the action when
    /// it is new (an extension never moves the first trigger's end).
    pub fn suspend(
        &self,
        target: Target,
        rule: &Rule,
        reply: &str,
        now: SystemTime,
    ) -> Option<Action> {
        let action = Action::timed(target, &rule.name, reply, rule.duration, now);
        self.put(action, false)
    }

    /// Records (or updates) a slow-down of `target` to `per_minute`.
    pub fn slowed(
        &self,
        target: Target,
        rule: &Rule,
        reply: &str,
        per_minute: f64,
        now: SystemTime,
    ) -> Action {
        let action = Action {
            target: target.clone(),
            rule: rule.name.to_string(),
            reply: reply.chars().take(300).collect(),
            start: crate::clock::rfc3339(now),
            end: "when whole".into(),
            rate: Some(format!("{per_minute:.1}/m")),
            // Listed until cleared; never taken for a suspension.
            until: Some(Instant::now() + Duration::from_secs(10 * 365 * 86_400)),
        };
        let mut active = self.active();
        active.insert(target.slow(), action.clone());
        let snapshot: Vec<Action> = active.values().cloned().collect();
        drop(active);
        self.write(&snapshot);
        self.publish(Change::Put {
            action: action.clone(),
        });
        action
    }

    /// A slowed-down path is whole again.
    pub fn recovered(&self, target: &Target) {
        let key = target.clone().slow();
        let mut active = self.active();
        if active.remove(&key).is_some() {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
            self.publish(Change::End { target: key });
        }
    }

    /// The suspension in force for a path from `source` to `site` of
    /// `provider`, if any (checked for the path, the source, the site and
    /// the provider).
    pub fn suspended(
        &self,
        source: &str,
        site: &str,
        provider: Option<&str>,
        job: Option<JobKeys<'_>>,
    ) -> Option<Suspended> {
        let mut active = self.active();
        if active.is_empty() {
            return None;
        }
        let now = Instant::now();
        let before = active.len();
        active.retain(|_, a| a.until.is_some_and(|u| u > now));
        let changed = active.len() != before;
        let mut targets = vec![
            Target::Path(source.into(), site.into()),
            Target::Source(source.into()),
            Target::Site(site.into()),
        ];
        targets.extend(provider.map(|p| Target::Provider(p.into())));
        if let Some(j) = job {
            targets.push(Target::Domain(j.domain.into()));
            targets.push(Target::Pool(j.pool.into()));
            targets.extend(j.tenant.map(|t| Target::Tenant(t.into())));
        }
        let found = targets
            .iter()
            .find_map(|t| active.get(t))
            .map(|a| Suspended {
                until: a.until.unwrap_or(now),
                why: why(a),
            });
        if changed {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
        }
        found
    }

    /// An operator suspends `target` for `duration` (replacing any action
    /// on it), with `reason` shown where a rule's reply would be.
    pub fn suspend_by_operator(
        &self,
        target: Target,
        duration: Duration,
        reason: &str,
        now: SystemTime,
    ) -> Action {
        let action = Action::timed(target, "operator", reason, duration, now);
        self.put(action.clone(), true).unwrap_or(action)
    }

    /// Ends the action on `target` now (an operator's decision), and the
    /// pauses of the paths it covers (a site's, or a source's); false if
    /// none was in force. A slow-down ends when its path is whole.
    pub fn cancel(&self, target: &Target) -> bool {
        let ended = self.end(target);
        for t in &ended {
            self.publish(Change::End { target: t.clone() });
        }
        !ended.is_empty()
    }

    /// Ends the action on `target` and Tern's own on the paths it covers;
    /// returns the keys of those that ended.
    fn end(&self, target: &Target) -> Vec<Target> {
        let mut active = self.active();
        let mut ended = Vec::new();
        active.retain(|t, a| {
            let ends = t == target || (a.rule != "operator" && covers(target, t));
            if ends {
                ended.push(t.clone());
            }
            !ends
        });
        if !ended.is_empty() {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
        }
        ended
    }

    /// The actions in force now.
    pub fn list(&self) -> Vec<Action> {
        let now = Instant::now();
        self.active()
            .values()
            .filter(|a| a.until.is_some_and(|u| u > now))
            .cloned()
            .collect()
    }

    /// Ends every pause Tern made itself (`rule`) on paths to `site`, or
    /// on all paths with `None` (an operator's "retry now"); how many.
    pub fn lift_pauses(&self, rule: &str, site: Option<&str>) -> usize {
        let mut active = self.active();
        let mut lifted = Vec::new();
        active.retain(|t, a| {
            let to_site = match t {
                Target::Path(_, s) => site.is_none_or(|x| x == s),
                _ => false,
            };
            let lift = a.rule == rule && to_site;
            if lift {
                lifted.push(t.clone());
            }
            !lift
        });
        if !lifted.is_empty() {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
        }
        let n = lifted.len();
        for target in lifted {
            self.publish(Change::End { target });
        }
        n
    }

    /// Counts a change, and keeps the actions through the slot.
    fn write(&self, actions: &[Action]) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(slot) = &self.slot {
            slot.set(serde_json::to_vec(actions).unwrap_or_default().into());
        }
    }
}

/// What a suspension says in the replies of the mail it holds.
fn why(a: &Action) -> String {
    format!(
        "{} suspended by rule {} until {} after: {}",
        a.target, a.rule, a.end, a.reply
    )
}

/// True when cancelling `outer` also ends Tern's own action on `inner`:
/// the paths to a site, or from a source.
fn covers(outer: &Target, inner: &Target) -> bool {
    match (outer, inner) {
        (Target::Site(s), Target::Path(_, site)) => s == site,
        (Target::Source(s), Target::Path(source, _)) => s == source,
        _ => outer == inner,
    }
}
