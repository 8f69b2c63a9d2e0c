//! `[events]`: what becomes of delivery events besides the delivery log:
//! the bounce classification rules, and the sinks they are exported to
//! (`[[events.webhook]]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::Duration;

/// `[events]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The bounce classification rules (a TOML file of `[[rule]]` class
    /// and match); default: the rules shipped in `config/bounces.toml`.
    pub bounce_rules: Option<PathBuf>,
    /// Webhooks the events are posted to.
    pub webhook: Vec<WebhookConfig>,
}

/// `[[events.webhook]]`: an HTTP endpoint that receives events in JSON
/// batches, signed, at least once, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Its name (in metrics and logs; the key of its cursor).
    pub name: String,
    /// `http://` or `https://` URL the batches are POSTed to.
    pub url: String,
    /// The event types it gets (`reception`, `delivery`,
    /// `transient_failure`, `bounce`, `expiration`, `suspension`,
    /// `purged`, ...); empty: all.
    pub events: Vec<String>,
    /// The key of the `X-Tern-Signature` HMAC-SHA256 header (unset: no
    /// signature).
    pub secret: Option<String>,
    /// Events per batch at most.
    pub batch_size: u32,
    /// A batch leaves at most this long after its first event.
    pub batch_latency: Duration,
    /// One POST's timeout.
    pub timeout: Duration,
    /// A batch is retried (with back-off) this long; then it is kept in
    /// `<delivery log>.parked-<name>` and counted, and the next goes.
    pub retry_window: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            secret: None,
            batch_size: 100,
            batch_latency: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            retry_window: Duration::from_secs(3600),
        }
    }
}

/// The event types a webhook may ask for.
pub const EVENT_TYPES: [&str; 11] = [
    "reception",
    "delivery",
    "transient_failure",
    "bounce",
    "expiration",
    "suspension",
    "slow_down",
    "purged",
    "unrecorded",
    "moved",
    "adopted",
];

/// A bounce-rules file: `[[rule]]`s of a class and a regular expression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceRules {
    /// The rules, first match wins.
    pub rule: Vec<BounceRule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceRule {
    /// The class (a word).
    pub class: String,
    /// The regular expression (case-insensitive) over "code enhanced text".
    #[serde(rename = "match")]
    pub pattern: String,
}

/// The rules shipped with Tern (`config/bounces.toml`).
pub const SHIPPED_BOUNCE_RULES: &str = include_str!("../../config/bounces.toml");

impl BounceRules {
    /// Parses and checks a rules file's text; the error names the rule.
    pub fn parse(text: &str) -> Result<Self, String> {
        let r: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, rule) in r.rule.iter().enumerate() {
            if rule.class.is_empty() || !rule.class.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!(
                    "rule[{i}]: the class is a word of letters and digits"
                ));
            }
            if let Err(e) = regex::Regex::new(&rule.pattern) {
                return Err(format!("rule[{i}] ({}): {e}", rule.class));
            }
        }
        Ok(r)
    }

    /// The rules `path` holds, or the shipped ones.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, String> {
        match path {
            None => Self::parse(SHIPPED_BOUNCE_RULES),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                Self::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
            }
        }
    }
}

/// A webhook's URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `https`.
    pub tls: bool,
    /// The host name or address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path and query (`/` at least).
    pub path: String,
}

impl HttpTarget {
    /// Parses `http[s]://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || format!("{url:?} is not an http:// or https:// URL");
        let (tls, rest) = match url.split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let default = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h.to_owned(), p.parse().map_err(|_| bad())?)
            }
            _ => (authority.to_owned(), default),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() || authority.contains('@') || path.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }
}

impl EventsConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if let Some(p) = &self.bounce_rules
            && let Err(e) = BounceRules::load(Some(p))
        {
            issues.push(Issue::new(at("events").field("bounce_rules"), e));
        }
        for (i, w) in self.webhook.iter().enumerate() {
            let key = |f: &str| at("events").field("webhook").index(i).field(f);
            if w.name.is_empty()
                || !w
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                issues.push(Issue::new(key("name"), "letters, digits, '-' or '_'"));
            } else if self.webhook[..i].iter().any(|o| o.name == w.name) {
                issues.push(Issue::new(
                    key("name"),
                    format!("webhook {:?} is defined twice", w.name),
                ));
            }
            if let Err(e) = HttpTarget::parse(&w.url) {
                issues.push(Issue::new(key("url"), e));
            }
            for e in &w.events {
                if !EVENT_TYPES.contains(&e.as_str()) {
                    issues.push(Issue::new(
                        key("events"),
                        format!("{e:?} is not an event type ({})", EVENT_TYPES.join(", ")),
                    ));
                }
            }
            if !(1..=10_000).contains(&w.batch_size) {
                issues.push(Issue::new(key("batch_size"), "must be between 1 and 10000"));
            }
        }
    }
}
