//! Reactions to the receivers: `[[shaping.rule]]` entries matched against
//! SMTP replies. What a matching rule starts is an action
//! ([`super::actions`]).

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

pub use super::actions::{Action, Actions, JobKeys, Suspended, Target};
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

    /// Every rule's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| &*r.name)
    }

    /// The rule named `name`.
    pub fn named(&self, name: &str) -> Option<&Rule> {
        self.0.iter().find(|r| &*r.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::Duration as Span;
    use crate::shaping::actions::Change;
    use std::time::SystemTime;

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

    #[tokio::test(start_paused = true)]
    async fn a_restored_slowdown_slows_its_path_and_never_suspends_it() {
        let actions = Actions::new(None);
        let r = rule(|c| c.action = crate::config::RuleAction::SlowDown);
        let path = Target::Path("ip1".into(), "mx.big.example".into());
        actions.slowed(path, &r, "450 busy", 30.0, SystemTime::now());
        let kept = serde_json::to_vec(&actions.list()).unwrap();
        let restored = Actions::new(None);
        assert_eq!(restored.restore(&kept, SystemTime::now()), 1);
        assert!(
            restored
                .suspended("ip1", "mx.big.example", None, None)
                .is_none(),
            "a slow-down is no suspension"
        );
        assert_eq!(
            restored.slowdown_of("ip1", "mx.big.example"),
            Some(("r".into(), 30.0))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_made_here_are_published_and_those_of_the_fleet_are_not() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let here = Actions::new(None);
        here.publish_to(tx);
        let r = rule(|c| c.text = Some("x".into()));
        let now = SystemTime::now();
        here.suspend(Target::Provider("big".into()), &r, "421 x", now);
        let change = rx.try_recv().expect("published");
        // Another node applies it: the provider is held there too, and
        // nothing is published again.
        let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel();
        let there = Actions::new(None);
        there.publish_to(tx2);
        assert!(there.apply(change.clone(), now));
        assert!(
            !there.apply(change, now),
            "the same change twice is no change"
        );
        assert!(
            there
                .suspended("ip9", "mx.big.example", Some("big"), None)
                .is_some()
        );
        assert!(rx2.try_recv().is_err());
        // A cancel there travels back as an end.
        assert!(there.cancel(&Target::Provider("big".into())));
        let end = rx2.try_recv().expect("published");
        assert!(here.apply(end, now));
        assert!(
            here.suspended("ip1", "mx.big.example", Some("big"), None)
                .is_none()
        );
        // An action that has ended by the time it arrives is not applied.
        let late = Change::Put {
            action: here
                .suspend(Target::Site("s".into()), &r, "421 x", now)
                .unwrap(),
        };
        let later = now + Duration::from_secs(120);
        assert!(!Actions::new(None).apply(late, later));
    }
}
