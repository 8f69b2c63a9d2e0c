//! Reactions to the receivers: `[[shaping.rule]]` entries matched against
//! SMTP replies, and the automatic actions they start (suspensions of a
//! path, a source, a site or a provider), each kept with the rule, the
//! reply that triggered it and its end, so that operators can see (and,
//! with the admin API, cancel) them. Actions end by themselves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::values::Rate;
use crate::config::{RuleAction, RuleConfig, RuleScope};

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name.
    pub name: Arc<str>,
    codes: Vec<u16>,
    enhanced: Option<String>,
    text: Option<Regex>,
    provider: Option<String>,
    /// What it does.
    pub action: RuleAction,
    /// What it suspends or slows.
    pub scope: RuleScope,
    /// For how long (a suspension).
    pub duration: Duration,
    /// A slow-down's lowest rate.
    pub floor: Option<Rate>,
    /// A slow-down's full rate on a path without a rate of its own.
    pub ceiling: Option<Rate>,
}

impl Rule {
    fn new(c: &RuleConfig) -> Self {
        Self {
            name: c.name.as_str().into(),
            codes: c.codes.clone(),
            enhanced: c.enhanced.clone(),
            // Checked at config load; an invalid one matches nothing.
            text: c.text.as_deref().and_then(|t| Regex::new(t).ok()),
            provider: c.provider.clone(),
            action: c.action,
            scope: c.scope,
            duration: c.duration.map_or(Duration::from_secs(600), |d| d.get()),
            floor: c.floor,
            ceiling: c.ceiling,
        }
    }

    /// Does a reply (code, enhanced code, text) from a site of `provider`
    /// match? Only 4xx and 5xx replies ever do.
    pub fn matches(&self, code: u16, esc: [u8; 3], text: &str, provider: Option<&str>) -> bool {
        if !(400..600).contains(&code) {
            return false;
        }
        if self.provider.is_some() && self.provider.as_deref() != provider {
            return false;
        }
        if !self.codes.is_empty() && !self.codes.contains(&code) {
            return false;
        }
        if let Some(prefix) = &self.enhanced {
            // Whole parts: "4.7." and "4.7" match 4.7.x; "4.7.2" only 4.7.2.
            let parts = prefix.split('.').filter(|p| !p.is_empty());
            let same = parts
                .zip(esc)
                .all(|(p, e)| p.parse::<u16>().is_ok_and(|p| p == u16::from(e)));
            if esc == [0, 0, 0] || !same {
                return false;
            }
        }
        self.text.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// The rules, in order.
#[derive(Debug, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// From the config.
    pub fn new(rules: &[RuleConfig]) -> Self {
        Self(rules.iter().map(Rule::new).collect())
    }

    /// The first rule matching the reply.
    pub fn matching(
        &self,
        code: u16,
        esc: [u8; 3],
        text: &str,
        provider: Option<&str>,
    ) -> Option<&Rule> {
        self.0.iter().find(|r| r.matches(code, esc, text, provider))
    }
}

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
    fn slow(self) -> Target {
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

/// The actions in force, shared by every path; written to a state file
/// (when one is given) each time they change, for `tern shaping actions`.
#[derive(Debug, Default)]
pub struct Actions {
    active: Mutex<HashMap<Target, Action>>,
    state_file: Option<PathBuf>,
    /// Bumped at every change, so that readers can cache what they found.
    version: std::sync::atomic::AtomicU64,
}

/// Where a path stands: the suspension that stops it, if any.
pub struct Suspended {
    /// When it ends.
    pub until: Instant,
    /// Why, for the deferral reply.
    pub why: String,
}

impl Actions {
    /// No actions; changes are written to `state_file`, if any.
    pub fn new(state_file: Option<PathBuf>) -> Self {
        Self {
            active: Mutex::new(HashMap::new()),
            state_file,
            version: Default::default(),
        }
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
        action
    }

    /// A slowed-down path is whole again.
    pub fn recovered(&self, target: &Target) {
        let mut active = self.active();
        if active.remove(&target.clone().slow()).is_some() {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
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
        let mut active = self.active();
        let before = active.len();
        active.remove(target);
        active.retain(|t, a| a.rule == "operator" || !covers(target, t));
        if active.len() == before {
            return false;
        }
        let snapshot: Vec<Action> = active.values().cloned().collect();
        drop(active);
        self.write(&snapshot);
        true
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
        let before = active.len();
        active.retain(|t, a| {
            let to_site = match t {
                Target::Path(_, s) => site.is_none_or(|x| x == s),
                _ => false,
            };
            !(a.rule == rule && to_site)
        });
        let lifted = before - active.len();
        if lifted > 0 {
            let snapshot: Vec<Action> = active.values().cloned().collect();
            drop(active);
            self.write(&snapshot);
        }
        lifted
    }

    /// Writes the state file (a temporary file renamed over it), after
    /// counting the change.
    fn write(&self, actions: &[Action]) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let Some(path) = &self.state_file else {
            return;
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(actions).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the shaping actions file");
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

/// Reads a state file written by [`Actions`], for `tern shaping actions`.
pub fn read_state(path: &std::path::Path) -> std::io::Result<Vec<Action>> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::Duration as Span;

    fn rule(f: impl FnOnce(&mut RuleConfig)) -> Rule {
        let mut c = RuleConfig {
            name: "r".into(),
            duration: Some(Span::from_secs(60)),
            ..RuleConfig::default()
        };
        f(&mut c);
        Rule::new(&c)
    }

    #[test]
    fn rules_match_on_code_enhanced_prefix_text_and_provider() {
        let r = rule(|c| {
            c.codes = vec![421];
            c.enhanced = Some("4.7.".into());
            c.text = Some("(?i)unusual rate".into());
        });
        assert!(r.matches(
            421,
            [4, 7, 28],
            "Our system has detected an UNUSUAL RATE",
            None
        ));
        assert!(!r.matches(451, [4, 7, 28], "unusual rate", None), "code");
        assert!(!r.matches(421, [4, 2, 0], "unusual rate", None), "enhanced");
        assert!(
            !r.matches(421, [0, 0, 0], "unusual rate", None),
            "no enhanced code"
        );
        assert!(!r.matches(421, [4, 7, 28], "mailbox full", None), "text");
        let exact = rule(|c| c.enhanced = Some("4.7.2".into()));
        assert!(exact.matches(421, [4, 7, 2], "", None));
        assert!(
            !exact.matches(421, [4, 7, 28], "", None),
            "4.7.2 is not a prefix of 4.7.28"
        );
        let yahoo = rule(|c| {
            c.text = Some("TSS04".into());
            c.provider = Some("yahoo".into());
        });
        assert!(yahoo.matches(421, [4, 7, 0], "[TSS04] deferred", Some("yahoo")));
        assert!(!yahoo.matches(421, [4, 7, 0], "[TSS04] deferred", Some("gmail")));
        assert!(
            !yahoo.matches(250, [2, 0, 0], "TSS04", Some("yahoo")),
            "never a 2xx"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspension_covers_its_target_and_ends_by_itself() {
        let actions = Actions::new(None);
        let r = rule(|c| c.text = Some("x".into()));
        let now = SystemTime::now();
        let a = actions.suspend(Target::Provider("big".into()), &r, "421 x", now);
        assert!(a.is_some());
        assert!(
            actions
                .suspend(Target::Provider("big".into()), &r, "421 x", now)
                .is_none(),
            "not twice"
        );
        let s = actions
            .suspended("ip1", "mx.big.example", Some("big"), None)
            .expect("suspended");
        assert!(
            s.why.contains("provider big suspended by rule r"),
            "{}",
            s.why
        );
        assert!(
            actions
                .suspended("ip1", "mx.other.example", None, None)
                .is_none()
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            actions
                .suspended("ip1", "mx.big.example", Some("big"), None)
                .is_none()
        );
        assert!(actions.list().is_empty());
    }
}
