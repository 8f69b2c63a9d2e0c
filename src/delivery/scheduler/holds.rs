//! The suspensions that hold mail before it reaches a path: of a pool, a
//! tenant or a recipient domain (an operator's). Read from the shaping
//! actions once per change of them, so checking a job costs a hash lookup
//! and no allocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::shaping::rules::{Actions, Target};

/// The pool, tenant and domain suspensions of one version of the actions.
#[derive(Default)]
pub(crate) struct Holds {
    version: u64,
    pools: HashMap<String, (Instant, String)>,
    tenants: HashMap<String, (Instant, String)>,
    domains: HashMap<String, (Instant, String)>,
}

impl Holds {
    fn find<'a>(
        map: &'a HashMap<String, (Instant, String)>,
        key: &str,
    ) -> Option<&'a (Instant, String)> {
        map.get(key).filter(|(until, _)| *until > Instant::now())
    }

    /// The suspension of `pool` in force, if any.
    pub fn pool(&self, pool: &str) -> Option<&(Instant, String)> {
        Self::find(&self.pools, pool)
    }

    /// The suspension of `tenant` in force, if any.
    pub fn tenant(&self, tenant: &str) -> Option<&(Instant, String)> {
        Self::find(&self.tenants, tenant)
    }

    /// The suspension of `domain` in force, if any.
    pub fn domain(&self, domain: &str) -> Option<&(Instant, String)> {
        Self::find(&self.domains, domain)
    }

    /// True when a job of this pool, tenant and domain is held.
    pub fn holds(&self, pool: &str, tenant: Option<&str>, domain: &str) -> bool {
        self.pool(pool).is_some()
            || tenant.is_some_and(|t| self.tenant(t).is_some())
            || self.domain(domain).is_some()
    }
}

/// The holds of the latest version of the actions.
#[derive(Default)]
pub(crate) struct Cache(Mutex<Arc<Holds>>);

impl Cache {
    /// The holds in force, read again if the actions changed.
    pub fn get(&self, actions: &Actions) -> Arc<Holds> {
        let version = actions.version();
        let mut cur = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cur.version != version {
            let mut h = Holds {
                version,
                ..Holds::default()
            };
            for (target, until, why) in actions.holds() {
                let (map, key) = match target {
                    Target::Pool(p) => (&mut h.pools, p),
                    Target::Tenant(t) => (&mut h.tenants, t),
                    Target::Domain(d) => (&mut h.domains, d.to_ascii_lowercase()),
                    _ => continue,
                };
                map.insert(key, (until, why));
            }
            *cur = Arc::new(h);
        }
        cur.clone()
    }
}
