//! Live reload, last known good: `POST /v1/reload` (and SIGHUP) reads the
//! config file again and validates it completely (the same checks as
//! `tern check-config`, DKIM keys loaded); an invalid one is refused with
//! every error, and the running config stays. A valid one is put in force
//! at once, without dropping connections or touching queued mail: shaping
//! (the per-path defaults of `[delivery]`, providers, sites, domains,
//! sources, tenants, rules), sources and pools (a source taken out of a
//! pool gets none of its mail from then on, even mail already waiting),
//! routes, tenants' pools and priorities, the DKIM keys (read from
//! their files again) and the TLS policies (`[tls_policy]`, built again by
//! the daemon's builder). Sections that changed but need a restart
//! (listeners, the spool, AUTH users, the admin listener, the TLS reports'
//! sender...) are reported as such. `GET /v1/config` shows the config in
//! force (an id from its content) and the recent history.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::types::{ConfigState, ConfigVersion, ReloadRefused, Reloaded};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::dkim::Dkim;
use crate::intake::IntakeRouting;
use crate::swap::Swap;

/// How many applied configs the history keeps.
const HISTORY: usize = 10;

/// Reloads the config file into a running Tern.
pub struct Reloader {
    delivery: Arc<Delivery>,
    /// Builds the TLS policy component for a new `[tls_policy]`.
    tls_policies: Option<TlsBuilder>,
    metrics: Arc<crate::metrics::Metrics>,
    routing: Arc<Swap<IntakeRouting>>,
    running: Mutex<(Config, Vec<ConfigVersion>)>,
    failures: std::sync::atomic::AtomicU64,
}

/// Builds delivery's TLS policy component for a `[tls_policy]` (the
/// daemon's parts: resolver, trust anchors, CA roots, the reports' counts).
pub type TlsBuilder = Box<
    dyn Fn(&crate::config::TlsPolicyConfig) -> Result<crate::tlspolicy::TlsPolicies, String>
        + Send
        + Sync,
>;

/// The id of a config: the start of the SHA-256 of its file and its
/// include file.
fn id_of(config: &Config) -> String {
    let mut text = Vec::new();
    if let Some(f) = &config.file {
        text.extend(std::fs::read(f).unwrap_or_default());
        if let (Some(dir), Some(inc)) = (f.parent(), &config.shaping.include) {
            text.extend(std::fs::read(dir.join(inc)).unwrap_or_default());
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &text);
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sections that changed between two configs but take effect only at
/// a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut d_old = old.delivery.clone();
    let d_new = &new.delivery;
    // The per-path defaults are shaping, reloaded; the rest is not.
    d_old.connection_limit = d_new.connection_limit;
    d_old.max_messages_per_connection = d_new.max_messages_per_connection;
    d_old.max_recipients_per_transaction = d_new.max_recipients_per_transaction;
    d_old.idle_timeout = d_new.idle_timeout;
    d_old.dead_site_failures = d_new.dead_site_failures;
    d_old.dead_site_pause = d_new.dead_site_pause;
    d_old.default_pool.clone_from(&d_new.default_pool);
    [
        ("server", old.server != new.server),
        ("log", old.log != new.log),
        ("listener", old.listeners != new.listeners),
        ("queue", old.queue != new.queue),
        ("auth", old.auth != new.auth),
        ("dns", old.dns != new.dns),
        ("admin", old.admin != new.admin),
        ("api", old.api != new.api),
        ("events", old.events != new.events),
        (
            "tls_policy reports",
            report_settings(old) != report_settings(new),
        ),
        ("cluster", old.cluster != new.cluster),
        ("delivery", &d_old != d_new),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name.to_owned())
    .collect()
}

/// What the daily TLS reports' sender took at start (a reload puts the
/// rest of `[tls_policy]` in force).
fn report_settings(c: &Config) -> impl PartialEq + '_ {
    let t = &c.tls_policy;
    (
        t.reports,
        (&t.report_from, &t.report_organization, &t.report_contact),
        (t.https_port, t.fetch_timeout),
    )
}

impl Reloader {
    /// For a Tern running `config`.
    pub fn new(
        config: Config,
        delivery: Arc<Delivery>,
        routing: Arc<Swap<IntakeRouting>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let first = ConfigVersion {
            id: id_of(&config),
            applied: crate::clock::rfc3339(SystemTime::now()),
        };
        Self {
            delivery,
            tls_policies: None,
            metrics,
            routing,
            running: Mutex::new((config, vec![first])),
            failures: Default::default(),
        }
    }

    /// Lets reloads put a changed `[tls_policy]` in force, built by
    /// `build` (without it, a change needs a restart).
    pub fn with_tls_policies(mut self, build: TlsBuilder) -> Self {
        self.tls_policies = Some(build);
        self
    }

    fn refuse(&self, errors: Vec<String>) -> ReloadRefused {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.reload(false);
        tracing::error!(
            errors = errors.len(),
            "config reload refused; the running config stays: {}",
            errors.join("; ")
        );
        ReloadRefused { errors }
    }

    /// Reads, validates and applies the config file again.
    pub fn reload(&self) -> Result<Reloaded, ReloadRefused> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = running.0.file.clone() else {
            let why = "this Tern was not started from a config file".to_owned();
            return Err(self.refuse(vec![why]));
        };
        let (new, prepared) = crate::config::load_with(&path, crate::prepare::prepare)
            .map_err(|e| self.refuse(e.0.iter().map(|e| e.to_string()).collect()))?;
        let mut restart = needs_restart(&running.0, &new);
        let dkim = self
            .dkim(&new, prepared.dkim_keys)
            .map_err(|e| self.refuse(vec![e.to_string()]))?;
        let tls = match &self.tls_policies {
            Some(build) if running.0.tls_policy != new.tls_policy => Some(
                build(&new.tls_policy)
                    .map_err(|e| self.refuse(vec![format!("tls_policy: {e}")]))?,
            ),
            Some(_) => None,
            None => {
                if running.0.tls_policy != new.tls_policy {
                    restart.push("tls_policy".to_owned());
                }
                None
            }
        };
        self.routing.set(IntakeRouting::new(&new, dkim));
        self.delivery.reload(&new);
        if let Some(policies) = tls {
            self.delivery.set_tls_policies(policies);
        }
        let version = ConfigVersion {
            id: id_of(&new),
            applied: crate::clock::rfc3339(SystemTime::now()),
        };
        running.1.push(version.clone());
        let excess = running.1.len().saturating_sub(HISTORY);
        running.1.drain(..excess);
        running.0 = new;
        self.metrics.reload(true);
        tracing::info!(id = %version.id, needs_restart = ?restart, "config reloaded and in force");
        let applied = [
            "shaping",
            "delivery per-path defaults",
            "sources",
            "pools",
            "routes",
            "tenants",
            "dkim keys",
        ];
        let tls = self.tls_policies.is_some().then_some("tls policy");
        Ok(Reloaded {
            id: version.id,
            applied: applied.into_iter().chain(tls).map(String::from).collect(),
            needs_restart: restart,
        })
    }

    /// The signer for `new` with its keys, just read again from their
    /// files (a key replaced on disk takes effect), on the same signing
    /// threads.
    fn dkim(
        &self,
        new: &Config,
        keys: Vec<crate::dkim::key::PrivateKey>,
    ) -> Result<Option<Arc<Dkim>>, crate::dkim::DkimError> {
        let signer = match &self.routing.get().dkim {
            Some(d) => d.reloaded(&new.dkim, keys)?,
            None => Dkim::with_keys(&new.dkim, keys)?,
        };
        Ok(signer.map(Arc::new))
    }

    /// Runs `f` over the config in force.
    pub fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.running.lock().unwrap_or_else(|p| p.into_inner()).0)
    }

    /// The config in force and the recent history.
    pub fn state(&self) -> ConfigState {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        ConfigState {
            running: running.1.last().cloned(),
            history: running.1.clone(),
            failed_reloads: self.failures.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

#[utoipa::path(operation_id = "reload_post", post, path = "/v1/reload", tag = "config", responses((status = 200, description = "In force", body = super::types::Reloaded), (status = 422, description = "Refused; the running config stays", body = super::types::ReloadRefused)))]
pub(super) async fn post(State(s): State<Arc<AdminState>>) -> Response {
    let Some(r) = s.reloader.clone() else {
        return super::error(StatusCode::SERVICE_UNAVAILABLE, "reload is not available");
    };
    match tokio::task::spawn_blocking(move || r.reload()).await {
        Ok(Ok(done)) => Json(done).into_response(),
        Ok(Err(refused)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(refused)).into_response(),
        Err(e) => super::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[utoipa::path(operation_id = "reload_get", get, path = "/v1/config", tag = "config", responses((status = 200, description = "The config in force and the recent ones", body = super::types::ConfigState)))]
pub(super) async fn get(State(s): State<Arc<AdminState>>) -> Response {
    match &s.reloader {
        Some(r) => Json(r.state()).into_response(),
        None => super::error(StatusCode::SERVICE_UNAVAILABLE, "no config state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_a_reload_cannot_apply_is_named_and_one_it_applies_is_not() {
        let old = Config::default();
        let mut new = old.clone();
        assert!(needs_restart(&old, &new).is_empty());
        new.tls_policy.mta_sts = !new.tls_policy.mta_sts;
        new.delivery.connection_limit += 1;
        assert!(needs_restart(&old, &new).is_empty(), "reloaded");
        new.events.bounce_rules = Some("rules.toml".into());
        new.api.token = Some("t".into());
        new.tls_policy.report_contact = Some("ops@example.com".into());
        assert_eq!(
            needs_restart(&old, &new),
            ["api", "events", "tls_policy reports"]
        );
    }
}
