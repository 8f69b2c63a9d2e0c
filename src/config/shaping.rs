//! `[shaping]`: how fast Tern sends to each destination, in layers.
//!
//! Every egress path (source x destination site) gets its limits from, in
//! order, later winning: the defaults in `[delivery]`; the provider whose
//! MX host suffix matches the site (`[[shaping.provider]]`); that
//! provider's entry for the path's source (`[[shaping.provider.source]]`);
//! the recipient domain (`[[shaping.domain]]`, which also gives the domain
//! paths of its own, apart from its site); and the source
//! (`[[shaping.source]]`). Besides these per-path limits, a provider, a
//! domain and a source may have `total` limits, shared by every path they
//! cover. `tern shaping show` prints the result for a domain and source.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::load::{Issue, Key, KeyPath, at};
use super::names;
use super::values::{Duration, Rate};

/// Limits of one egress path; an unset field is inherited from the layer
/// before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathLimitsConfig {
    /// Connections open at once.
    pub connection_limit: Option<u32>,
    /// New connections, as a rate (`"60/m"`).
    pub connection_rate: Option<Rate>,
    /// Messages sent, as a rate (`"300/m,burst=20"`).
    pub message_rate: Option<Rate>,
    /// Messages per connection before it is closed.
    pub max_messages_per_connection: Option<u32>,
    /// Recipients per transaction.
    pub max_recipients_per_transaction: Option<u32>,
    /// An idle connection closes after this.
    pub idle_timeout: Option<Duration>,
    /// Consecutive failed connections that pause the path.
    pub dead_site_failures: Option<u32>,
    /// How long such a pause lasts.
    pub dead_site_pause: Option<Duration>,
}

/// Limits shared by every path a scope covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotalLimitsConfig {
    /// Connections open at once, over all its paths.
    pub connection_limit: Option<u32>,
    /// New connections over all its paths, as a rate.
    pub connection_rate: Option<Rate>,
    /// Messages over all its paths, as a rate.
    pub message_rate: Option<Rate>,
}

impl TotalLimitsConfig {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.connection_limit.is_none()
            && self.connection_rate.is_none()
            && self.message_rate.is_none()
    }
}

/// `[[shaping.provider]]`: a receiving provider, recognized by the suffix
/// of its MX host names; its limits apply to every site and domain it
/// hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Its name, for logs and `tern shaping show`.
    pub name: String,
    /// MX host name suffixes, such as `".google.com"`; the longest suffix
    /// matching any MX host of a site picks the provider.
    pub mx_suffixes: Vec<String>,
    /// Limits of each path to it.
    pub per_path: PathLimitsConfig,
    /// Limits over all paths to it.
    pub total: TotalLimitsConfig,
    /// Per-path limits for paths from one source (a warming or a
    /// reputable IP, say).
    #[serde(rename = "source")]
    pub sources: Vec<ProviderSourceConfig>,
}

/// `[[shaping.provider.source]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSourceConfig {
    /// A `[[source]]` name.
    pub source: String,
    /// Its paths' limits to this provider.
    pub per_path: PathLimitsConfig,
}

/// `[[shaping.domain]]`: a recipient domain treated apart from its site:
/// its mail travels on paths of its own with these limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainShapingConfig {
    /// The domain (ASCII, lowercase or not).
    pub domain: String,
    /// Limits of each of its paths.
    pub per_path: PathLimitsConfig,
    /// Limits over all its paths (all sources).
    pub total: TotalLimitsConfig,
}

/// `[[shaping.source]]`: one source's overrides and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceShapingConfig {
    /// A `[[source]]` name.
    pub source: String,
    /// Limits of each of its paths (the last layer: they win).
    pub per_path: PathLimitsConfig,
    /// Limits over all its paths: the IP's total, whatever the destination.
    pub total: TotalLimitsConfig,
}

/// `[shaping]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapingConfig {
    /// A file of further `[[provider]]` entries (such as the shipped
    /// `config/shaping.toml`), relative to this config file's directory;
    /// entries here with the same name replace the file's.
    pub include: Option<PathBuf>,
    /// Providers.
    #[serde(rename = "provider")]
    pub providers: Vec<ProviderConfig>,
    /// Domains with paths and limits of their own.
    #[serde(rename = "domain")]
    pub domains: Vec<DomainShapingConfig>,
    /// Per-source overrides and totals.
    #[serde(rename = "source")]
    pub sources: Vec<SourceShapingConfig>,
    /// Reactions to the receivers' replies, tried in order (first match).
    #[serde(rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// Sites with limits of their own.
    #[serde(rename = "site")]
    pub sites: Vec<SiteShapingConfig>,
    /// Tenants with a total message rate.
    #[serde(rename = "tenant")]
    pub tenants: Vec<TenantShapingConfig>,
}

/// `[[shaping.site]]`: one destination site (the MX host set that contains
/// `mx`), between the provider and domain layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteShapingConfig {
    /// One of the site's MX host names (or a smarthost's host).
    pub mx: String,
    /// Limits of each path to it.
    pub per_path: PathLimitsConfig,
    /// Limits over all paths to it (all sources).
    pub total: TotalLimitsConfig,
}

/// `[[shaping.tenant]]`: a tenant's total sending rate, over every path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantShapingConfig {
    /// A `[[tenant]]` name.
    pub tenant: String,
    /// Messages over all its paths, as a rate.
    pub message_rate: Option<Rate>,
}

/// What a rule does when a reply matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Stop sending to the scope for `duration`; its mail is deferred
    /// (never bounced) and resumes by itself.
    #[default]
    Suspend,
    /// Halve the path's message rate (never below `floor`); each message
    /// delivered afterwards gives back a twentieth of the configured rate,
    /// until it is whole again (AIMD). Path scope only.
    SlowDown,
    /// Treat the matching temporary reply as permanent for the recipients
    /// it answered: they bounce now instead of being retried (for
    /// providers that say "account disabled" with a 4xx).
    Bounce,
}

/// The scope a rule's action applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleScope {
    /// The egress path (this source to this site).
    #[default]
    Path,
    /// The source, to every destination.
    Source,
    /// The site, from every source.
    Site,
    /// The provider (every site it hosts), from every source.
    Provider,
}

/// `[[shaping.rule]]`: a reply that means "slow down" or "stop".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Its name, for logs and the list of actions.
    pub name: String,
    /// Reply codes it matches (empty: any 4xx or 5xx).
    pub codes: Vec<u16>,
    /// Enhanced status code prefix it matches, such as `"4.7."`.
    pub enhanced: Option<String>,
    /// A regular expression the reply text must match, such as
    /// `"(?i)rate limited|TSS04"`.
    pub text: Option<String>,
    /// Only for sites of this provider (a `[[shaping.provider]]` name).
    pub provider: Option<String>,
    /// What to do.
    pub action: RuleAction,
    /// To what.
    pub scope: RuleScope,
    /// For how long (`suspend`).
    pub duration: Option<Duration>,
    /// The lowest rate a `slow_down` goes to.
    pub floor: Option<Rate>,
    /// The rate a `slow_down` starts from and returns to on a path that
    /// has no `message_rate` of its own (default: ten times `floor`).
    pub ceiling: Option<Rate>,
}

/// The include file: `[[provider]]` and `[[rule]]` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersFile {
    /// Providers.
    #[serde(rename = "provider")]
    pub providers: Vec<ProviderConfig>,
    /// Rules, tried after the config file's own.
    #[serde(rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

fn validate_path_limits(l: &PathLimitsConfig, key: Vec<Key>, issues: &mut Vec<Issue>) {
    let zero = |v: Option<u32>| v == Some(0);
    for (field, bad) in [
        ("connection_limit", zero(l.connection_limit)),
        (
            "max_messages_per_connection",
            zero(l.max_messages_per_connection),
        ),
        (
            "max_recipients_per_transaction",
            zero(l.max_recipients_per_transaction),
        ),
        ("dead_site_failures", zero(l.dead_site_failures)),
    ] {
        if bad {
            issues.push(Issue::new(key.clone().field(field), "must be at least 1"));
        }
    }
}

impl ShapingConfig {
    /// Checks names, suffixes and references; `sources` and `tenants` are
    /// the configured `[[source]]` and `[[tenant]]` names.
    pub(super) fn validate(&self, sources: &[&str], tenants: &[&str], issues: &mut Vec<Issue>) {
        for (i, s) in self.sites.iter().enumerate() {
            let key = at("shaping").field("site").index(i);
            if !names::is_hostname(&s.mx) {
                issues.push(Issue::new(
                    key.clone().field("mx"),
                    format!("{:?} is not a host name", s.mx),
                ));
            }
            validate_path_limits(&s.per_path, key.field("per_path"), issues);
        }
        for (i, t) in self.tenants.iter().enumerate() {
            let key = at("shaping").field("tenant").index(i);
            if !tenants.contains(&t.tenant.as_str()) {
                issues.push(Issue::new(
                    key.clone().field("tenant"),
                    format!("no [[tenant]] is named {:?}", t.tenant),
                ));
            }
            if t.message_rate.is_none() {
                issues.push(Issue::new(
                    key.field("message_rate"),
                    "must be set, such as \"1000/h\"",
                ));
            }
        }
        validate_providers(
            &self.providers,
            at("shaping").field("provider"),
            sources,
            issues,
        );
        for (i, d) in self.domains.iter().enumerate() {
            let key = at("shaping").field("domain").index(i);
            if !names::is_hostname(&d.domain) || d.domain.ends_with('.') {
                issues.push(Issue::new(
                    key.clone().field("domain"),
                    format!("{:?} is not an ASCII domain name", d.domain),
                ));
            }
            if self.domains[..i]
                .iter()
                .any(|o| o.domain.eq_ignore_ascii_case(&d.domain))
            {
                issues.push(Issue::new(key.clone().field("domain"), "listed twice"));
            }
            validate_path_limits(&d.per_path, key.field("per_path"), issues);
        }
        for (i, r) in self.rules.iter().enumerate() {
            validate_rule(r, at("shaping").field("rule").index(i), issues);
        }
        for (i, s) in self.sources.iter().enumerate() {
            let key = at("shaping").field("source").index(i);
            if !sources.contains(&s.source.as_str()) {
                issues.push(Issue::new(
                    key.clone().field("source"),
                    format!("no [[source]] is named {:?}", s.source),
                ));
            }
            validate_path_limits(&s.per_path, key.field("per_path"), issues);
        }
    }
}

pub(super) fn validate_rule(r: &RuleConfig, key: Vec<Key>, issues: &mut Vec<Issue>) {
    if r.name.is_empty() {
        issues.push(Issue::new(key.clone().field("name"), "must not be empty"));
    }
    if r.codes.is_empty() && r.enhanced.is_none() && r.text.is_none() {
        issues.push(Issue::new(
            key.clone().field("codes"),
            "a rule needs codes, enhanced or text to match on",
        ));
    }
    for (i, c) in r.codes.iter().enumerate() {
        if !(400..600).contains(c) {
            issues.push(Issue::new(
                key.clone().field("codes").index(i),
                format!("{c} is not a 4xx or 5xx reply code"),
            ));
        }
    }
    if let Some(e) = &r.enhanced
        && !e
            .split('.')
            .all(|p| p.is_empty() || p.parse::<u16>().is_ok())
    {
        issues.push(Issue::new(
            key.clone().field("enhanced"),
            format!("{e:?} is not an enhanced status code prefix such as \"4.7.\""),
        ));
    }
    if let Some(t) = &r.text
        && let Err(e) = regex::Regex::new(t)
    {
        issues.push(Issue::new(
            key.clone().field("text"),
            format!("not a valid regular expression: {e}"),
        ));
    }
    match r.action {
        RuleAction::Suspend if r.duration.is_none() => {
            issues.push(Issue::new(
                key.field("duration"),
                "must be set, such as \"30m\"",
            ));
        }
        RuleAction::SlowDown if r.floor.is_none() => {
            issues.push(Issue::new(
                key.field("floor"),
                "a slow_down needs the lowest rate, such as \"10/m\"",
            ));
        }
        RuleAction::SlowDown if r.scope != RuleScope::Path => {
            issues.push(Issue::new(
                key.field("scope"),
                "a slow_down applies to a path",
            ));
        }
        _ => {}
    }
}

/// Checks a list of providers (from the config or the include file).
pub(super) fn validate_providers(
    providers: &[ProviderConfig],
    base: Vec<Key>,
    sources: &[&str],
    issues: &mut Vec<Issue>,
) {
    for (i, p) in providers.iter().enumerate() {
        let key = base.clone().index(i);
        if p.name.is_empty() {
            issues.push(Issue::new(key.clone().field("name"), "must not be empty"));
        }
        if p.mx_suffixes.is_empty() {
            issues.push(Issue::new(
                key.clone().field("mx_suffixes"),
                "must list at least one MX host suffix, such as \".google.com\"",
            ));
        }
        for (j, s) in p.mx_suffixes.iter().enumerate() {
            let bare = s.strip_prefix('.').unwrap_or(s);
            if !names::is_hostname(bare) || bare.ends_with('.') {
                issues.push(Issue::new(
                    key.clone().field("mx_suffixes").index(j),
                    format!("{s:?} is not a host name suffix"),
                ));
            }
        }
        validate_path_limits(&p.per_path, key.clone().field("per_path"), issues);
        for (j, s) in p.sources.iter().enumerate() {
            let k = key.clone().field("source").index(j);
            if !sources.contains(&s.source.as_str()) {
                issues.push(Issue::new(
                    k.clone().field("source"),
                    format!("no [[source]] is named {:?}", s.source),
                ));
            }
            validate_path_limits(&s.per_path, k.field("per_path"), issues);
        }
    }
}
