//! A path's plan: its limits, all layers applied, each remembering the
//! layer it came from, and the shared scopes it answers to. Built by
//! [`super::Shaping::plan`]; read by delivery and `tern shaping show`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Scope;
use crate::config::PathLimitsConfig;
use crate::config::values::Rate;

/// The limits of one egress path, all resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLimits {
    /// Connections open at once.
    pub connection_limit: u32,
    /// New connections per time.
    pub connection_rate: Option<Rate>,
    /// Messages per time.
    pub message_rate: Option<Rate>,
    /// Messages per connection.
    pub max_messages_per_connection: u32,
    /// Recipients per transaction.
    pub max_recipients_per_transaction: u32,
    /// Idle connections close after this.
    pub idle_timeout: Duration,
    /// Consecutive failed connections that pause the path.
    pub dead_site_failures: u32,
    /// How long that pause lasts.
    pub dead_site_pause: Duration,
}

/// The layer a value came from.
pub type Origin = Arc<str>;

/// Per field of [`PathLimits`], the layer that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// See [`PathLimits`].
    pub connection_limit: Origin,
    /// See [`PathLimits`].
    pub connection_rate: Origin,
    /// See [`PathLimits`].
    pub message_rate: Origin,
    /// See [`PathLimits`].
    pub max_messages_per_connection: Origin,
    /// See [`PathLimits`].
    pub max_recipients_per_transaction: Origin,
    /// See [`PathLimits`].
    pub idle_timeout: Origin,
    /// See [`PathLimits`].
    pub dead_site_failures: Origin,
    /// See [`PathLimits`].
    pub dead_site_pause: Origin,
}

/// What a path runs with.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The matched provider, if any.
    pub provider: Option<Arc<str>>,
    /// Set when the domain has paths of its own (`[[shaping.domain]]`).
    pub own_domain: Option<Arc<str>>,
    /// The path's own limits.
    pub limits: PathLimits,
    /// Where each came from.
    pub origins: Origins,
    /// Shared limits that also apply: provider, domain, source totals.
    pub scopes: Vec<Arc<Scope>>,
    /// Rates start as if they had just sent their burst at this time (a
    /// restart with queued mail), if set.
    pub busy_since: Option<Instant>,
}

/// Applies one layer's set values.
pub(super) fn apply(layer: &PathLimitsConfig, name: &str, l: &mut PathLimits, o: &mut Origins) {
    let origin: Origin = name.into();
    let set = |field: &mut Origin| *field = origin.clone();
    if let Some(v) = layer.connection_limit {
        l.connection_limit = v;
        set(&mut o.connection_limit);
    }
    if let Some(v) = layer.connection_rate {
        l.connection_rate = Some(v);
        set(&mut o.connection_rate);
    }
    if let Some(v) = layer.message_rate {
        l.message_rate = Some(v);
        set(&mut o.message_rate);
    }
    if let Some(v) = layer.max_messages_per_connection {
        l.max_messages_per_connection = v;
        set(&mut o.max_messages_per_connection);
    }
    if let Some(v) = layer.max_recipients_per_transaction {
        l.max_recipients_per_transaction = v;
        set(&mut o.max_recipients_per_transaction);
    }
    if let Some(v) = layer.idle_timeout {
        l.idle_timeout = v.get();
        set(&mut o.idle_timeout);
    }
    if let Some(v) = layer.dead_site_failures {
        l.dead_site_failures = v;
        set(&mut o.dead_site_failures);
    }
    if let Some(v) = layer.dead_site_pause {
        l.dead_site_pause = v.get();
        set(&mut o.dead_site_pause);
    }
}

impl Plan {
    /// True when `other` limits a path exactly as this one does (the same
    /// values and the same shared scopes).
    pub fn same_as(&self, other: &Plan) -> bool {
        self.provider == other.provider
            && self.limits == other.limits
            && self.scopes.len() == other.scopes.len()
            && self
                .scopes
                .iter()
                .zip(&other.scopes)
                .all(|(a, b)| a.same_as(b))
    }

    /// Each per-path limit: its key, its value and the layer it came from.
    pub fn rows(&self) -> Vec<(&'static str, String, Arc<str>)> {
        let l = &self.limits;
        let o = &self.origins;
        let rate = |r: &Option<Rate>| r.map_or("unlimited".into(), |r| r.explicit().to_string());
        let span = |d: Duration| crate::config::values::Duration(d).to_string();
        vec![
            (
                "connection_limit",
                l.connection_limit.to_string(),
                o.connection_limit.clone(),
            ),
            (
                "connection_rate",
                rate(&l.connection_rate),
                o.connection_rate.clone(),
            ),
            (
                "message_rate",
                rate(&l.message_rate),
                o.message_rate.clone(),
            ),
            (
                "max_messages_per_connection",
                l.max_messages_per_connection.to_string(),
                o.max_messages_per_connection.clone(),
            ),
            (
                "max_recipients_per_transaction",
                l.max_recipients_per_transaction.to_string(),
                o.max_recipients_per_transaction.clone(),
            ),
            ("idle_timeout", span(l.idle_timeout), o.idle_timeout.clone()),
            (
                "dead_site_failures",
                l.dead_site_failures.to_string(),
                o.dead_site_failures.clone(),
            ),
            (
                "dead_site_pause",
                span(l.dead_site_pause),
                o.dead_site_pause.clone(),
            ),
        ]
    }

    /// The limits shared with other paths: each scope's name and limits.
    pub fn shared(&self) -> Vec<(String, String)> {
        self.scopes
            .iter()
            .map(|s| {
                let mut parts = Vec::new();
                if let Some(m) = &s.messages {
                    parts.push(format!("message_rate {}", m.rate().explicit()));
                }
                if let Some(c) = &s.connection_rate {
                    parts.push(format!("connection_rate {}", c.rate().explicit()));
                }
                if let Some(n) = s.connection_limit() {
                    parts.push(format!("connection_limit {n}"));
                }
                (s.name.to_string(), parts.join(", "))
            })
            .collect()
    }
}
