//! Bounce classification: a reply ("code enhanced-code text") gets the
//! class of the first rule that matches it (`config/bounces.toml`, or the
//! file `[events] bounce_rules` names), with hard or soft from its code.
//! Built once from the config; classifying is one pass of a regex set.

use regex::{RegexSet, RegexSetBuilder};

use crate::config::BounceRules;

/// A class, and whether the failure is hard (5xx) or soft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// The label (`InvalidRecipient`, `SpamBlock`, ...).
    pub name: &'static str,
    /// A permanent failure.
    pub hard: bool,
}

impl Class {
    /// `hard` or `soft`.
    pub fn kind(&self) -> &'static str {
        if self.hard { "hard" } else { "soft" }
    }
}

/// The rules, compiled.
#[derive(Debug)]
pub struct Classifier {
    set: RegexSet,
    /// Each rule's class (leaked once per load: a handful of labels, and
    /// the metrics want `'static` names).
    classes: Vec<&'static str>,
}

impl Classifier {
    /// Compiles checked rules (see [`BounceRules::parse`]).
    pub fn new(f: BounceRules) -> Result<Self, String> {
        let set = RegexSetBuilder::new(f.rule.iter().map(|r| r.pattern.as_str()))
            .case_insensitive(true)
            .build()
            .map_err(|e| e.to_string())?;
        let classes = f
            .rule
            .into_iter()
            .map(|r| &*Box::leak(r.class.into_boxed_str()))
            .collect();
        Ok(Self { set, classes })
    }

    /// The shipped rules.
    pub fn shipped() -> Self {
        BounceRules::load(None)
            .and_then(Self::new)
            .expect("the shipped bounce rules compile")
    }

    /// Compiles a rules file's text; the error names the rule and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::new(BounceRules::parse(text)?)
    }

    /// The class of a reply.
    pub fn classify(&self, code: u16, esc: [u8; 3], text: &str) -> Class {
        let line = match esc[0] {
            0 => format!("{code} {text}"),
            _ => format!("{code} {}.{}.{} {text}", esc[0], esc[1], esc[2]),
        };
        let hard = code >= 500;
        let name = match self.set.matches(&line).iter().next() {
            Some(i) => self.classes[i],
            None if !hard => "TransientFailure",
            None => "Uncategorized",
        };
        Class { name, hard }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_know_the_usual_replies() {
        let c = Classifier::shipped();
        for (code, esc, text, class, hard) in [
            (
                550,
                [5, 1, 1],
                "The email account that you tried to reach does not exist",
                "InvalidRecipient",
                true,
            ),
            (
                421,
                [4, 7, 28],
                "Our system has detected an unusual rate of unsolicited mail",
                "SpamBlock",
                false,
            ),
            (552, [5, 2, 2], "Mailbox full", "QuotaIssues", true),
            (
                550,
                [5, 7, 1],
                "Service unavailable; client host blocked using Spamhaus",
                "SpamBlock",
                true,
            ),
            (
                556,
                [5, 1, 10],
                "Recipient address has null MX",
                "BadDomain",
                true,
            ),
            (
                451,
                [4, 4, 1],
                "no answer from any host of mx.example",
                "NoAnswerFromHost",
                false,
            ),
            (
                451,
                [4, 3, 0],
                "Temporary local problem",
                "TransientFailure",
                false,
            ),
            (554, [5, 0, 0], "Something else", "Uncategorized", true),
            (
                550,
                [5, 7, 26],
                "Unauthenticated email is not accepted (DMARC)",
                "AuthenticationFailed",
                true,
            ),
            (
                450,
                [4, 4, 7],
                "Delivery time expired",
                "MessageExpired",
                false,
            ),
        ] {
            let got = c.classify(code, esc, text);
            assert_eq!((got.name, got.hard), (class, hard), "{code} {text}");
        }
    }

    #[test]
    fn a_bad_rule_is_named() {
        let e = Classifier::parse("[[rule]]\nclass = \"X\"\nmatch = \"(\"\n").unwrap_err();
        assert!(e.contains("rule[0] (X)"), "{e}");
    }
}
