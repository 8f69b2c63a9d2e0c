//! Traffic shaping: how fast each egress path may send, and which limits
//! several paths share.
//!
//! It owns the layering of `[shaping]` over `[delivery]` (defaults ->
//! provider -> provider+source -> site -> domain -> source, later winning, each
//! value remembering the layer it came from), the matching of a site to
//! its provider by MX host suffix, and the shared limits ([`Scope`]) of
//! providers, domains and sources. It never connects or sends: delivery
//! asks it for a path's [`Plan`] and waits on the limiters it holds.

pub mod actions;
pub mod aimd;
mod build;
pub mod limiter;
mod plan;
pub mod rate;
pub mod rules;
pub mod shared;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Config, PathLimitsConfig};
use build::{Build, Previous, provider};
pub use limiter::{Limiter, Scope, pace};
use plan::apply;
pub use plan::{Origin, Origins, PathLimits, Plan};
pub use rules::{Actions, Rules};
pub use shared::Fleet;

struct Provider {
    name: Arc<str>,
    suffixes: Vec<String>,
    per_path: PathLimitsConfig,
    per_source: HashMap<String, PathLimitsConfig>,
    total: Option<Arc<Scope>>,
}

struct Layered {
    per_path: PathLimitsConfig,
    total: Option<Arc<Scope>>,
}

/// The shaping of a running Tern: the automatic actions in force, and the
/// limits and rules from the config, swapped whole when it is reloaded.
pub struct Shaper {
    /// Automatic actions in force (they outlive reloads).
    pub actions: Actions,
    current: std::sync::RwLock<Arc<Shaping>>,
    /// The fleet whose store keeps the shared limits, if any.
    fleet: Option<Arc<dyn Fleet>>,
}

impl Shaper {
    /// From a validated config, its actions kept nowhere.
    pub fn new(config: &Config) -> Self {
        Self::starting(config, None, None, None)
    }

    /// From a validated config, with every rate starting as if it had
    /// just sent its burst at `busy_since`, if given: after a restart with
    /// queued mail, the limiters' state is unknown, and this way nothing
    /// is ever sent faster than the limits across the restart (the first
    /// message of a path waits one interval: a second at `"60/m"`). The
    /// actions are kept through `slot`, if given; with a `fleet`, the
    /// shared limits (see [`Shaping::carried`]) are kept fleet-wide.
    pub fn starting(
        config: &Config,
        busy_since: Option<Instant>,
        slot: Option<crate::state::Slot>,
        fleet: Option<Arc<dyn Fleet>>,
    ) -> Self {
        let shaping = Shaping::carried(config, None, busy_since, fleet.as_ref());
        Self {
            actions: Actions::new(slot),
            current: std::sync::RwLock::new(Arc::new(shaping)),
            fleet,
        }
    }

    /// The fleet whose store keeps the shared limits, if any.
    pub fn fleet(&self) -> Option<&Arc<dyn Fleet>> {
        self.fleet.as_ref()
    }

    /// The limits and rules in force.
    pub fn current(&self) -> Arc<Shaping> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts the limits and rules of a new, validated config in force
    /// (paths made from now on use them). Every shared limit whose
    /// setting did not change keeps its state (what its rate counted, the
    /// connections it has open).
    pub fn replace(&self, config: &Config) {
        let previous = self.current();
        let busy = previous.busy_since;
        let next = Arc::new(Shaping::carried(
            config,
            Some(&previous),
            busy,
            self.fleet.as_ref(),
        ));
        // The actions of rules that are gone end; an operator's and Tern's
        // own stay.
        let mut kept: Vec<&str> = next.rules.names().collect();
        kept.extend(["operator", actions::DEAD_SITE]);
        self.actions.keep_rules(&kept);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// See [`Shaping::plan`].
    pub fn plan(&self, source: &str, site: &str, domain: &str) -> Plan {
        self.current().plan(source, site, domain)
    }

    /// See [`Shaping::provider_name`].
    pub fn provider_name(&self, site: &str) -> Option<Arc<str>> {
        self.current().provider_name(site)
    }

    /// See [`Shaping::shapes_domain`].
    pub fn shapes_domain(&self, domain: &str) -> bool {
        self.current().shapes_domain(domain)
    }

    /// See [`Shaping::tenant`].
    pub fn tenant(&self, tenant: Option<&str>) -> Option<Arc<Scope>> {
        self.current().tenant(tenant).cloned()
    }
}

/// The limits and rules of one config.
pub struct Shaping {
    /// Reply rules.
    pub rules: Rules,
    defaults: PathLimits,
    providers: Vec<Provider>,
    domains: HashMap<String, Layered>,
    sources: HashMap<String, Layered>,
    /// Sites by one of their MX host names (lowercase).
    sites: Vec<(String, Layered)>,
    /// Tenants' total rates.
    tenants: HashMap<String, Arc<Scope>>,
    /// See [`Plan::busy_since`].
    busy_since: Option<Instant>,
    /// The fleet's store, and the sources several nodes send from: the
    /// paths from those keep their limits fleet-wide too.
    fleet: Option<(Arc<dyn Fleet>, Vec<String>)>,
    /// The fleet-wide scopes of such paths, made as paths are planned.
    paths: std::sync::Mutex<Previous>,
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.current().fmt(f)
    }
}

impl fmt::Debug for Shaping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaping")
            .field("defaults", &self.defaults)
            .field("providers", &self.providers.len())
            .field("domains", &self.domains.len())
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Shaping {
    /// From a validated config.
    pub fn new(config: &Config) -> Self {
        Self::carried(config, None, None, None)
    }

    /// Every shared scope, by name.
    fn scopes(&self) -> Previous {
        let layered = |l: &Layered| l.total.clone();
        self.providers
            .iter()
            .filter_map(|p| p.total.clone())
            .chain(self.domains.values().filter_map(layered))
            .chain(self.sources.values().filter_map(layered))
            .chain(self.sites.iter().filter_map(|(_, l)| layered(l)))
            .chain(self.tenants.values().cloned())
            .chain(self.path_scopes().into_values())
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    fn path_scopes(&self) -> Previous {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fleet-wide limits of the path from a shared `source` to `site`
    /// (its own limits, `limits`, kept fleet-wide), if the fleet keeps
    /// them: made once, kept while unchanged.
    fn path_scope(&self, source: &str, site: &str, limits: &PathLimits) -> Option<Arc<Scope>> {
        let (fleet, shared) = self.fleet.as_ref()?;
        if !shared.iter().any(|s| s == source) {
            return None;
        }
        let name = format!("path {source} -> {site}");
        let totals = crate::config::TotalLimitsConfig {
            connection_limit: Some(limits.connection_limit),
            connection_rate: limits.connection_rate,
            message_rate: limits.message_rate,
        };
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        let old = paths.get(&name);
        let same = old.is_some_and(|o| {
            o.connection_limit() == totals.connection_limit
                && o.messages.as_ref().map(|l| l.rate()) == totals.message_rate
                && o.connection_rate.as_ref().map(|l| l.rate()) == totals.connection_rate
        });
        if let (true, Some(o)) = (same, old) {
            return Some(o.clone());
        }
        let scope = Scope::carried(
            name.clone(),
            &totals,
            old.map(|o| &**o),
            self.busy_since,
            Some(fleet),
        );
        let scope = Arc::new(scope);
        paths.insert(name, scope.clone());
        Some(scope)
    }

    /// From a validated config, keeping the state of `previous`'s shared
    /// limits whose settings did not change. With a `fleet`, the totals of
    /// providers, sites, domains and tenants are kept fleet-wide, and
    /// those of a source when it is `shared` (a source's totals otherwise
    /// limit what leaves one node's address).
    pub fn carried(
        config: &Config,
        previous: Option<&Shaping>,
        busy_since: Option<Instant>,
        fleet: Option<&Arc<dyn Fleet>>,
    ) -> Self {
        let d = &config.delivery;
        let s = &config.shaping;
        let b = Build {
            previous: previous.map(Shaping::scopes).unwrap_or_default(),
            busy: busy_since,
            fleet,
        };
        let shared_source = |name: &str| {
            config
                .sources
                .iter()
                .any(|x| x.name == name && x.is_shared())
        };
        Self {
            rules: Rules::new(&s.rules),
            defaults: PathLimits {
                connection_limit: d.connection_limit,
                connection_rate: None,
                message_rate: None,
                max_messages_per_connection: d.max_messages_per_connection,
                max_recipients_per_transaction: d.max_recipients_per_transaction,
                idle_timeout: d.idle_timeout.get(),
                dead_site_failures: d.dead_site_failures,
                dead_site_pause: d.dead_site_pause.get(),
            },
            providers: s.providers.iter().map(|p| provider(p, &b)).collect(),
            domains: s
                .domains
                .iter()
                .map(|x| {
                    let layered = Layered {
                        per_path: x.per_path.clone(),
                        total: b.scope(format!("domain {}", x.domain), &x.total, true),
                    };
                    (x.domain.to_ascii_lowercase(), layered)
                })
                .collect(),
            sources: s
                .sources
                .iter()
                .map(|x| {
                    let layered = Layered {
                        per_path: x.per_path.clone(),
                        total: b.scope(
                            format!("source {}", x.source),
                            &x.total,
                            shared_source(&x.source),
                        ),
                    };
                    (x.source.clone(), layered)
                })
                .collect(),
            sites: s
                .sites
                .iter()
                .map(|x| {
                    let layered = Layered {
                        per_path: x.per_path.clone(),
                        total: b.scope(format!("site of {}", x.mx), &x.total, true),
                    };
                    (x.mx.trim_end_matches('.').to_ascii_lowercase(), layered)
                })
                .collect(),
            tenants: s
                .tenants
                .iter()
                .map(|t| {
                    let name = format!("tenant {}", t.tenant);
                    let old = b.previous.get(&name).map(|s| &**s);
                    let totals = crate::config::TotalLimitsConfig {
                        message_rate: t.message_rate,
                        ..Default::default()
                    };
                    let scope = Scope::carried(name, &totals, old, busy_since, b.fleet);
                    (t.tenant.clone(), Arc::new(scope))
                })
                .collect(),
            busy_since,
            fleet: fleet.map(|f| {
                let shared = config.sources.iter().filter(|x| x.is_shared());
                (f.clone(), shared.map(|x| x.name.clone()).collect())
            }),
            paths: std::sync::Mutex::new(
                b.previous
                    .iter()
                    .filter(|(name, _)| name.starts_with("path "))
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect(),
            ),
        }
    }

    /// The shared limit of a tenant's mail, if it has one.
    pub fn tenant(&self, tenant: Option<&str>) -> Option<&Arc<Scope>> {
        self.tenants.get(tenant?)
    }

    /// The `[[shaping.site]]` entry of a site, if one names one of its
    /// hosts.
    fn site(&self, site: &str) -> Option<&Layered> {
        let site = site.strip_prefix("smarthost:").unwrap_or(site);
        site.split(',')
            .map(|h| {
                h.rsplit_once(':')
                    .map_or(h, |(host, _)| host)
                    .trim_end_matches('.')
            })
            .find_map(|h| {
                self.sites
                    .iter()
                    .find(|(mx, _)| mx.eq_ignore_ascii_case(h))
                    .map(|(_, l)| l)
            })
    }

    /// The provider of a site: the longest configured suffix that ends
    /// any of its MX host names (`site` is the comma-separated host list;
    /// a smarthost route's `smarthost:host:port,...` works too).
    fn provider(&self, site: &str) -> Option<&Provider> {
        let site = site.strip_prefix("smarthost:").unwrap_or(site);
        let hosts: Vec<String> = site
            .split(',')
            .map(|h| {
                let h = h.rsplit_once(':').map_or(h, |(host, _)| host);
                format!(".{}", h.trim_end_matches('.').to_ascii_lowercase())
            })
            .collect();
        self.providers
            .iter()
            .flat_map(|p| p.suffixes.iter().map(move |s| (p, s)))
            .filter(|(_, s)| hosts.iter().any(|h| h.ends_with(s.as_str())))
            .max_by_key(|(_, s)| s.len())
            .map(|(p, _)| p)
    }

    /// The name of the provider a site belongs to, if any.
    pub fn provider_name(&self, site: &str) -> Option<Arc<str>> {
        self.provider(site).map(|p| p.name.clone())
    }

    /// True when `domain` (lowercase) has paths of its own.
    pub fn shapes_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The plan of the path from `source` to `site` for mail to `domain`.
    pub fn plan(&self, source: &str, site: &str, domain: &str) -> Plan {
        let defaults: Origin = "defaults ([delivery])".into();
        let mut limits = self.defaults.clone();
        let mut origins = Origins {
            connection_limit: defaults.clone(),
            connection_rate: defaults.clone(),
            message_rate: defaults.clone(),
            max_messages_per_connection: defaults.clone(),
            max_recipients_per_transaction: defaults.clone(),
            idle_timeout: defaults.clone(),
            dead_site_failures: defaults.clone(),
            dead_site_pause: defaults,
        };
        let mut scopes = Vec::new();
        let provider = self.provider(site);
        if let Some(p) = provider {
            apply(
                &p.per_path,
                &format!("provider {}", p.name),
                &mut limits,
                &mut origins,
            );
            if let Some(ps) = p.per_source.get(source) {
                let origin = format!("provider {} source {source}", p.name);
                apply(ps, &origin, &mut limits, &mut origins);
            }
            scopes.extend(p.total.clone());
        }
        if let Some(s) = self.site(site) {
            apply(
                &s.per_path,
                &format!("site {site}"),
                &mut limits,
                &mut origins,
            );
            scopes.extend(s.total.clone());
        }
        let own = self.domains.get(domain);
        if let Some(d) = own {
            apply(
                &d.per_path,
                &format!("domain {domain}"),
                &mut limits,
                &mut origins,
            );
            scopes.extend(d.total.clone());
        }
        if let Some(s) = self.sources.get(source) {
            apply(
                &s.per_path,
                &format!("source {source}"),
                &mut limits,
                &mut origins,
            );
            scopes.extend(s.total.clone());
        }
        scopes.extend(self.path_scope(source, site, &limits));
        Plan {
            provider: provider.map(|p| p.name.clone()),
            own_domain: own.map(|_| Arc::from(domain)),
            limits,
            origins,
            scopes,
            busy_since: self.busy_since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        crate::config::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    const LAYERS: &str = r#"
[delivery]
connection_limit = 10
[[source]]
name = "ip1"
[[source]]
name = "ip2"
[[pool]]
name = "default"
sources = [{ source = "ip1" }]
[[shaping.provider]]
name = "big"
mx_suffixes = [".big.example"]
per_path = { connection_limit = 5, message_rate = "100/m" }
total = { message_rate = "1000/m" }
[[shaping.provider.source]]
source = "ip2"
per_path = { message_rate = "10/m", idle_timeout = "3s" }
[[shaping.provider]]
name = "big-eu"
mx_suffixes = [".eu.big.example"]
per_path = { connection_limit = 2 }
[[shaping.domain]]
domain = "Partner.Example"
per_path = { max_recipients_per_transaction = 5 }
[[shaping.source]]
source = "ip2"
per_path = { connection_limit = 1 }
total = { connection_limit = 50 }
[[shaping.site]]
mx = "mx9.big.example"
per_path = { connection_limit = 3, idle_timeout = "1s" }
"#;

    #[test]
    fn later_layers_win_and_remember_where_they_came_from() {
        let s = Shaper::new(&config(LAYERS));
        let p = s.plan("ip1", "mx1.big.example,mx2.big.example", "a.example");
        assert_eq!(p.provider.as_deref(), Some("big"));
        assert_eq!(p.limits.connection_limit, 5);
        assert_eq!(p.limits.message_rate, Some("100/m".parse().unwrap()));
        assert_eq!(&*p.origins.idle_timeout, "defaults ([delivery])");
        assert_eq!(p.scopes.len(), 1, "the provider's total");
        assert!(p.own_domain.is_none());

        let p = s.plan("ip2", "mx1.big.example", "partner.example");
        assert_eq!(p.limits.message_rate, Some("10/m".parse().unwrap()));
        assert_eq!(&*p.origins.message_rate, "provider big source ip2");
        assert_eq!(p.limits.idle_timeout, Duration::from_secs(3));
        assert_eq!(p.limits.max_recipients_per_transaction, 5);
        assert_eq!(
            &*p.origins.max_recipients_per_transaction,
            "domain partner.example"
        );
        assert_eq!(p.limits.connection_limit, 1, "the source layer is last");
        assert_eq!(&*p.origins.connection_limit, "source ip2");
        assert_eq!(p.own_domain.as_deref(), Some("partner.example"));
        let names: Vec<&str> = p.scopes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["provider big", "source ip2"]);
        assert!(p.rows().iter().any(|(_, _, from)| &**from == "source ip2"));
    }

    #[test]
    fn the_longest_suffix_picks_the_provider() {
        let s = Shaper::new(&config(LAYERS));
        let eu = s.plan("ip1", "mx.eu.big.example", "x.example");
        assert_eq!(eu.provider.as_deref(), Some("big-eu"));
        assert_eq!(eu.limits.connection_limit, 2);
        let none = s.plan("ip1", "mx.notbig.example", "x.example");
        assert_eq!(
            none.provider, None,
            "a suffix matches at a label boundary only"
        );
        assert_eq!(none.limits.connection_limit, 10);
        let smarthost = s.plan("ip1", "smarthost:relay.big.example:587", "x.example");
        assert_eq!(smarthost.provider.as_deref(), Some("big"));
    }

    #[test]
    fn a_site_layer_sits_between_provider_and_domain() {
        let s = Shaper::new(&config(LAYERS));
        let p = s.plan("ip1", "mx8.big.example,mx9.big.example", "partner.example");
        assert_eq!(p.limits.connection_limit, 3, "site over provider");
        assert_eq!(
            &*p.origins.connection_limit,
            "site mx8.big.example,mx9.big.example"
        );
        assert_eq!(p.limits.idle_timeout, Duration::from_secs(1));
        assert_eq!(
            p.limits.max_recipients_per_transaction, 5,
            "domain after site"
        );
        let p = s.plan("ip2", "mx9.big.example", "x.example");
        assert_eq!(p.limits.connection_limit, 1, "source after site");
    }
}
