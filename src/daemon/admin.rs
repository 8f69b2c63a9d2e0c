//! The daemon's HTTP listeners: the admin API (with the injection
//! endpoints) and, with `[api] address`, the injection API's own listener.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use super::Services;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::intake::{Intake, IntakeSettings};

/// What the admin API acts on beyond [`Services`].
pub(super) struct AdminParts {
    pub(super) shaper: Arc<crate::shaping::Shaper>,
    pub(super) delivery: Arc<Delivery>,
    pub(super) reloader: Arc<crate::admin::reload::Reloader>,
    pub(super) cluster: Option<Arc<Cluster>>,
    pub(super) drainer: Arc<crate::cluster::drain::Drainer>,
    pub(super) tls_reports: Arc<crate::tlspolicy::send::Sender>,
    pub(super) log_filter: Option<Arc<crate::logging::LogFilter>>,
}

/// A listener's stop signal and task.
pub(super) type Serving = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// Binds and serves the admin API when it is enabled, and the injection
/// API's own listener when `[api] address` is set; returns what stops
/// them.
pub(super) async fn start_admin(
    config: &Config,
    services: &Services,
    parts: AdminParts,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<Vec<Serving>> {
    let a = &config.admin;
    let mut serving = Vec::new();
    if !a.enabled && config.api.address.is_none() {
        let kept = services.queue.state_keys(crate::admin::BOUNCE_JOURNALS);
        if !kept.is_empty() {
            tracing::warn!(
                bounces = kept.len(),
                "bounces under way at the last stop wait for the admin API to be enabled; their messages stay held"
            );
        }
        return Ok(serving);
    }
    let receiver = crate::cluster::drain::Receiver::new(
        services.queue.clone(),
        services.wake.clone(),
        services.log.clone(),
        services.clock,
    );
    let injector = Arc::new(injector(config, services));
    let state = Arc::new(crate::admin::AdminState {
        queue: services.queue.clone(),
        clock: services.clock,
        wake: services.wake.clone(),
        log: services.log.clone(),
        jobs: Default::default(),
        delivery: parts.delivery,
        shaper: parts.shaper,
        metrics: services.metrics.clone(),
        reloader: Some(parts.reloader),
        started: std::time::SystemTime::now(),
        token: a.token.clone(),
        cluster: parts.cluster,
        node: services.node.clone(),
        tracer: services.tracer.clone(),
        drainer: parts.drainer,
        receiver: Arc::new(receiver),
        fleet_token: config.cluster.as_ref().and_then(|c| c.token.clone()),
        injector: injector.clone(),
        read_token: a.read_token.clone(),
        sessions: Default::default(),
        https: a.tls(),
        tls_reports: Some(parts.tls_reports),
        log_filter: parts.log_filter,
        hostname: config.server.hostname.clone(),
    });
    crate::admin::resume_jobs(&state);
    if a.enabled {
        let listener = TcpListener::bind(a.address)
            .await
            .with_context(|| format!("cannot listen for the admin API on {}", a.address))?;
        tracing::info!(address = %a.address, "admin API listening");
        let app = crate::admin::router(state);
        serving.push(serve(listener, app, tls));
    }
    if let Some(address) = config.api.address {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for the injection API on {address}"))?;
        tracing::info!(%address, "injection API listening");
        let app = crate::admin::inject::router(injector, config.api.token.clone());
        serving.push(serve(listener, app, None));
    }
    Ok(serving)
}

/// Serves `app` on `listener` (over TLS with `tls`) until told to stop.
fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Serving {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::admin::serve(listener, app, tls, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// An intake for mail Tern makes or is handed whole (the injection API,
/// TLS reports): no listener's pool, tenant or headers, the message says.
pub(super) fn local_intake(config: &Config, services: &Services) -> Intake {
    let settings = IntakeSettings {
        hostname: config.server.hostname.clone(),
        max_received_headers: 100,
        add_message_id: false,
        add_date: false,
        max_messages: config.queue.max_messages,
        max_spool_size: config.queue.max_spool_size.0,
        pool: None,
        tenant: None,
        users: Arc::new(HashMap::new()),
        pool_header: None,
        routing: services.routing.clone(),
        metrics: services.metrics.clone(),
        node: services.node.clone(),
        priority: None,
        priority_header: None,
    };
    Intake::new(
        services.queue.clone(),
        settings,
        services.log.clone(),
        services.clock,
        services.wake.clone(),
    )
}

/// The injection API: its own intake, its templates and idempotency
/// keys in the spool.
fn injector(config: &Config, services: &Services) -> crate::inject::Injector {
    let intake = local_intake(config, services);
    let api = &config.api;
    crate::inject::Injector::new(
        intake,
        Arc::new(crate::inject::Templates::new(services.queue.clone())),
        crate::inject::Idempotency::new(
            services.queue.clone(),
            api.idempotency_ttl.0,
            api.idempotency_max_keys as usize,
        ),
        api.clone(),
        config.server.hostname.clone(),
        services.routing.clone(),
        services.clock,
    )
}
