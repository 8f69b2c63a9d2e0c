//! The typed configuration model and its loading.
//!
//! One TOML file (`config/tern.toml` is the runnable default). Every section
//! is a serde struct with `deny_unknown_fields` and a default for every key,
//! so an omitted key takes a sane value and a misspelt one is an error.
//! [`load()`] reports every error at once, each with file, line, key and
//! reason (the mechanism is in [`mod@load`]). Components receive their
//! section at construction; nothing here is global.

mod admin;
mod api;
mod auth;
mod cluster;
mod delivery;
mod dkim;
mod dns;
mod egress;
mod events;
mod listener;
pub mod load;
pub mod names;
mod proxy;
mod queue;
mod server;
mod shaping;
mod tls_policy;
pub mod values;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use admin::{AdminConfig, load_admin};
pub use api::ApiConfig;
pub use auth::{AuthConfig, UserConfig};
pub use cluster::ClusterConfig;
pub use delivery::{
    BounceReturn, ClientTimeouts, DeliveryConfig, Priority, RouteConfig, TlsPolicy,
};
pub use dkim::{
    Canonicalization, DkimConfig, DkimKeyConfig, DomainSource, KeyAlgorithm, OnSignError,
    PlatformSignature,
};
pub use dns::{DnsConfig, IpStrategy};
pub use egress::{
    PoolConfig, PoolMember, SenderMismatch, SourceConfig, TenantConfig, WarmupConfig,
};
pub use events::{
    BounceRule, BounceRules, EVENT_TYPES, EventsConfig, HttpTarget, SHIPPED_BOUNCE_RULES,
    WebhookConfig,
};
pub use listener::{BareLineEndings, ListenerConfig, LongLines, NulBytes};
pub use load::{ConfigError, ConfigErrors};
pub use proxy::{ProxyKind, ProxyUrl};
pub use queue::{DurabilityMode, QueueConfig};
pub use server::{LogConfig, ServerConfig};
pub use shaping::{
    DomainShapingConfig, PathLimitsConfig, ProviderConfig, ProviderSourceConfig, ProvidersFile,
    RuleAction, RuleConfig, RuleScope, ShapingConfig, SiteShapingConfig, SourceShapingConfig,
    TenantShapingConfig, TotalLimitsConfig,
};
pub use tls_policy::TlsPolicyConfig;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: identity of this MTA.
    pub server: ServerConfig,
    /// `[log]`: diagnostic logging.
    pub log: LogConfig,
    /// `[[listener]]`: SMTP listeners (default: one on 127.0.0.1:2525).
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[queue]`: the durable spool.
    pub queue: QueueConfig,
    /// `[auth]`: SMTP AUTH users and failure limits.
    pub auth: AuthConfig,
    /// `[dns]`: the resolver.
    pub dns: DnsConfig,
    /// `[[source]]`: local addresses to deliver from.
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// `[[pool]]`: weighted groups of sources.
    #[serde(rename = "pool")]
    pub pools: Vec<PoolConfig>,
    /// `[[tenant]]`: customers, each with its own pool.
    #[serde(rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// `[delivery]`: outbound limits, retries, bounces, timeouts.
    pub delivery: DeliveryConfig,
    /// `[[route]]`: per-domain routing overrides.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[dkim]`: DKIM signing at intake.
    pub dkim: DkimConfig,
    /// `[shaping]`: per-provider, per-domain and per-source limits.
    pub shaping: ShapingConfig,
    /// `[admin]`: the operations HTTP API.
    pub admin: AdminConfig,
    /// `[api]`: the HTTP injection API (on the admin listener).
    pub api: ApiConfig,
    /// `[events]`: bounce classification and event export (webhooks).
    pub events: EventsConfig,
    /// `[tls_policy]`: MTA-STS and TLS reports.
    pub tls_policy: TlsPolicyConfig,
    /// `[cluster]`: the fleet this node shares limits and push-back with
    /// (through Redis); unset, the node shapes alone.
    pub cluster: Option<ClusterConfig>,
    /// The file this config was read from (for reloads); not a key.
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            log: LogConfig::default(),
            listeners: listener::default_listeners(),
            queue: QueueConfig::default(),
            auth: AuthConfig::default(),
            dns: DnsConfig::default(),
            sources: egress::default_sources(),
            pools: egress::default_pools(),
            tenants: Vec::new(),
            delivery: DeliveryConfig::default(),
            routes: Vec::new(),
            dkim: DkimConfig::default(),
            shaping: ShapingConfig::default(),
            admin: AdminConfig::default(),
            api: ApiConfig::default(),
            events: EventsConfig::default(),
            tls_policy: TlsPolicyConfig::default(),
            cluster: None,
            file: None,
        }
    }
}

/// The path used when none is given on the command line.
pub const DEFAULT_PATH: &str = "config/tern.toml";

/// Where an installed Tern's config is (see [`default_path`]).
pub const INSTALLED_PATH: &str = "/etc/tern/tern.toml";

/// Reads and validates a config file, reporting every error at once.
/// Nothing the config names is loaded (keys, certificates): that is the
/// prepare step's, [`load_with`].
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, |_| Ok(())).map(|(c, ())| c)
}

/// [`load`], then `prepare` over the valid config (loading the keys,
/// certificates and files it names, `crate::prepare`): its issues are
/// reported like the file's own, with line and column, all at once.
pub fn load_with<P>(
    path: &Path,
    prepare: impl FnOnce(&Config) -> Result<P, Vec<load::Issue>>,
) -> Result<(Config, P), ConfigErrors> {
    let text = read_text(path)?;
    let (mut config, prepared) = parse_with(path, &text, prepare)?;
    config.file = Some(path.to_owned());
    Ok((config, prepared))
}

/// The text of a config file, or an error naming it.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            position: None,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })
}

/// The config file used when none is given: `/etc/tern/tern.toml` when it
/// exists (an installed Tern), else [`DEFAULT_PATH`] (a checkout).
pub fn default_path() -> PathBuf {
    let installed = Path::new(INSTALLED_PATH);
    match installed.exists() {
        true => installed.to_owned(),
        false => PathBuf::from(DEFAULT_PATH),
    }
}

/// Validates config text that came from `path` (and its shaping include
/// file, if it names one).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, text, |_| Ok(())).map(|(c, ())| c)
}

/// [`parse`], then `prepare` (see [`load_with`]).
pub fn parse_with<P>(
    path: &Path,
    text: &str,
    prepare: impl FnOnce(&Config) -> Result<P, Vec<load::Issue>>,
) -> Result<(Config, P), ConfigErrors> {
    let parsed = load::parse::<Config>(path, text)?;
    let mut issues = parsed.value.validate();
    // The prepare step runs even over a config with errors (keys that
    // failed hold their defaults, and issues under them are dropped), so
    // that every problem is reported at once.
    let prepared = match prepare(&parsed.value) {
        Ok(p) => Some(p),
        Err(more) => {
            issues.extend(more);
            None
        }
    };
    let mut config = parsed.finish(issues)?;
    // (An issue of the prepare step is either reported above or under a
    // key whose own error was.)
    let Some(prepared) = prepared else {
        return Err(ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            position: None,
            key: String::new(),
            message: "the files the config names could not be loaded".into(),
        }]));
    };
    if let Some(include) = config.shaping.include.clone() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let (providers, rules) = load_providers(&dir.join(include), &config)?;
        config.shaping.rules.extend(rules);
        let mut merged: Vec<ProviderConfig> = providers
            .into_iter()
            .filter(|p| !config.shaping.providers.iter().any(|o| o.name == p.name))
            .collect();
        merged.append(&mut config.shaping.providers);
        config.shaping.providers = merged;
    }
    check_rule_providers(path, &config)?;
    Ok((config, prepared))
}

/// Every rule's `provider` names a provider (known only once the include
/// file is merged, so reported by key without a line).
fn check_rule_providers(path: &Path, config: &Config) -> Result<(), ConfigErrors> {
    let errors: Vec<ConfigError> = config
        .shaping
        .rules
        .iter()
        .filter_map(|r| {
            let p = r.provider.as_ref()?;
            let known = config.shaping.providers.iter().any(|q| &q.name == p);
            (!known).then(|| ConfigError {
                file: path.to_owned(),
                position: None,
                key: format!("rule {:?}: provider", r.name),
                message: format!("no [[shaping.provider]] is named {p:?}"),
            })
        })
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(ConfigErrors(errors)),
    }
}

/// Reads a shaping include file: `[[provider]]` and `[[rule]]` entries.
fn load_providers(
    path: &Path,
    config: &Config,
) -> Result<(Vec<ProviderConfig>, Vec<RuleConfig>), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            position: None,
            key: String::new(),
            message: format!("cannot read the shaping include file: {e}"),
        }])
    })?;
    let parsed = load::parse::<ProvidersFile>(path, &text)?;
    let mut issues = Vec::new();
    let sources: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    shaping::validate_providers(
        &parsed.value.providers,
        load::at("provider"),
        &sources,
        &mut issues,
    );
    for (i, r) in parsed.value.rules.iter().enumerate() {
        shaping::validate_rule(r, load::KeyPath::index(load::at("rule"), i), &mut issues);
    }
    let file = parsed.finish(issues)?;
    Ok((file.providers, file.rules))
}

impl Config {
    /// The source named `key`, or else the one whose address (the public
    /// one, behind a proxy) is `key`.
    pub fn find_source(&self, key: &str) -> Option<&SourceConfig> {
        let ip = key.parse::<std::net::IpAddr>().ok();
        self.sources.iter().find(|s| s.name == key).or_else(|| {
            self.sources
                .iter()
                .find(|s| ip.is_some() && s.address == ip)
        })
    }

    /// Semantic checks the types alone cannot express.
    fn validate(&self) -> Vec<load::Issue> {
        let mut issues = Vec::new();
        self.server.validate(&mut issues);
        self.log.validate(&mut issues);
        listener::validate(&self.listeners, &mut issues);
        self.queue.validate(&mut issues);
        self.auth.validate(&mut issues);
        self.dns.validate(&mut issues);
        egress::validate(&self.sources, &self.pools, &mut issues);
        egress::validate_tenants(&self.tenants, &self.pools, &mut issues);
        self.delivery.validate(&self.pools, &mut issues);
        delivery::validate_routes(&self.routes, &mut issues);
        self.dkim.validate(self.delivery.max_age, &mut issues);
        self.admin.validate(&mut issues);
        self.api.validate(&mut issues);
        self.events.validate(&mut issues);
        self.tls_policy.validate(&mut issues);
        if let Some(c) = &self.cluster {
            c.validate(&self.admin, &mut issues);
        }
        let sources: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        let tenants: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
        self.shaping.validate(&sources, &tenants, &mut issues);
        self.validate_pool_references(&mut issues);
        issues
    }

    /// Pools and tenants named by listeners and users must exist.
    fn validate_pool_references(&self, issues: &mut Vec<load::Issue>) {
        use load::{KeyPath, at};
        let mut check = |key: Vec<load::Key>, what: &str, name: &Option<String>, known: bool| {
            if !known {
                let name = name.as_deref().unwrap_or("");
                issues.push(load::Issue::new(
                    key,
                    format!("no [[{what}]] is named {name:?}"),
                ));
            }
        };
        let pool = |p: &Option<String>| {
            p.as_ref()
                .is_none_or(|p| self.pools.iter().any(|q| &q.name == p))
        };
        let tenant = |t: &Option<String>| {
            t.as_ref()
                .is_none_or(|t| self.tenants.iter().any(|q| &q.name == t))
        };
        for (i, l) in self.listeners.iter().enumerate() {
            check(
                at("listener").index(i).field("pool"),
                "pool",
                &l.pool,
                pool(&l.pool),
            );
            check(
                at("listener").index(i).field("tenant"),
                "tenant",
                &l.tenant,
                tenant(&l.tenant),
            );
        }
        for (i, u) in self.auth.users.iter().enumerate() {
            let key = || at("auth").field("user").index(i);
            check(key().field("pool"), "pool", &u.pool, pool(&u.pool));
            check(
                key().field("tenant"),
                "tenant",
                &u.tenant,
                tenant(&u.tenant),
            );
        }
    }

    /// A few lines saying what this config will do, for `check-config`.
    pub fn summary(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        let mut dkim: Vec<String> = self
            .dkim
            .keys
            .iter()
            .map(|k| format!("{}/{}", k.domain, k.selector))
            .collect();
        if dkim.is_empty() {
            dkim.push("off (no [[dkim.key]])".into());
        }
        format!(
            "hostname   {}\nlisteners  {}\nspool      {} ({} durability, {} segments, {} free-space reserve)\nlog level  {}\ndkim       {}\nshaping    {} providers, {} domains, {} sources, {} rules",
            self.server.hostname,
            listeners.join(", "),
            self.queue.path.display(),
            self.queue.durability,
            self.queue.segment_size,
            self.queue.min_free_space,
            self.log.level,
            dkim.join(", "),
            self.shaping.providers.len(),
            self.shaping.domains.len(),
            self.shaping.sources.len(),
            self.shaping.rules.len(),
        )
    }
}

#[cfg(test)]
mod tests;
