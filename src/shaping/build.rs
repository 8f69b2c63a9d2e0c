//! Building a config's shared scopes: each provider, site, domain,
//! source and tenant total as a [`Scope`], keeping the state of the same
//! scope under the config a reload replaces, and kept fleet-wide when
//! there is a fleet. Used by [`super::Shaping::carried`] only.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Fleet, Provider, Scope};
use crate::config::ProviderConfig;

/// The shared scopes of a previous config, by name.
pub(super) type Previous = HashMap<String, Arc<Scope>>;

/// What building the scopes of a config needs.
pub(super) struct Build<'a> {
    /// The scopes of the config a reload replaces.
    pub(super) previous: Previous,
    /// See [`Plan::busy_since`].
    pub(super) busy: Option<Instant>,
    /// The fleet's store, for limits kept fleet-wide.
    pub(super) fleet: Option<&'a Arc<dyn Fleet>>,
}

impl Build<'_> {
    /// A scope named `name` with totals `t` (none if it sets no limit),
    /// kept fleet-wide when `fleet_wide` and there is a fleet.
    pub(super) fn scope(
        &self,
        name: String,
        t: &crate::config::TotalLimitsConfig,
        fleet_wide: bool,
    ) -> Option<Arc<Scope>> {
        (!t.is_empty()).then(|| {
            let old = self.previous.get(&name).map(|s| &**s);
            let fleet = self.fleet.filter(|_| fleet_wide);
            Arc::new(Scope::carried(name, t, old, self.busy, fleet))
        })
    }
}

pub(super) fn provider(p: &ProviderConfig, b: &Build<'_>) -> Provider {
    let suffixes = p
        .mx_suffixes
        .iter()
        .map(|s| {
            let s = s.to_ascii_lowercase();
            if s.starts_with('.') {
                s
            } else {
                format!(".{s}")
            }
        })
        .collect();
    Provider {
        name: p.name.as_str().into(),
        suffixes,
        per_path: p.per_path.clone(),
        per_source: p
            .sources
            .iter()
            .map(|s| (s.source.clone(), s.per_path.clone()))
            .collect(),
        total: b.scope(format!("provider {}", p.name), &p.total, true),
    }
}
