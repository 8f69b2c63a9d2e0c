//! Wiring: builds every component from the config, runs until the shutdown
//! future resolves, then stops them in order so that nothing accepted is
//! lost. Owns no protocol logic.
//!
//! Shutdown: listeners stop accepting; idle sessions are closed with
//! `421 4.3.2`; sessions in a transaction get `server.shutdown_grace` to
//! finish it; then the rest are closed. Delivery stops taking messages and
//! gets the same grace for the transactions under way. Last, the delivery
//! log and the queue are flushed and closed.

mod admin;
mod spool;
mod tls_policy;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use queue::Queue;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use self::admin::{AdminParts, start_admin};
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::{Config, ListenerConfig};
use crate::delivery::{Delivery, Settings};
use crate::dkim::{Dkim, DkimError};
use crate::dns::resolver::{HickoryResolver, Resolver};
use crate::dns::route::Router;
use crate::egress::Egress;
use crate::intake::{Intake, IntakeRouting, IntakeSettings, UserRouting};
use crate::log::DeliveryLog;
use crate::prepare::Prepared;
use crate::smtp::server::{self, Credentials, MemoryBudget, Phase, SessionContext};
use crate::swap::Swap;

/// What the listeners and delivery share.
pub struct Services {
    /// The durable queue.
    pub queue: Arc<Queue>,
    /// The delivery log.
    pub log: Arc<DeliveryLog>,
    /// The clock scheduling reads.
    pub clock: Clock,
    /// Notified when mail is queued (wakes delivery).
    pub wake: Arc<Notify>,
    /// AUTH users.
    pub credentials: Arc<Credentials>,
    /// Memory budget for message data being received.
    pub memory: Arc<MemoryBudget>,
    /// Pools, tenants and the DKIM signer, as the config in force has
    /// them (a reload replaces them).
    pub routing: Arc<Swap<IntakeRouting>>,
    /// The metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the node takes new mail.
    pub node: Arc<crate::node::NodeState>,
    /// Live SMTP dialogues for whoever watches.
    pub tracer: Arc<crate::trace::Tracer>,
}

impl Services {
    /// The shared pieces for `config` around an open queue and log, with
    /// its DKIM keys (loaded by the prepare step); starts the signing
    /// threads.
    pub fn new(
        config: &Config,
        dkim_keys: Vec<crate::dkim::key::PrivateKey>,
        queue: Arc<Queue>,
        log: Arc<DeliveryLog>,
        clock: Clock,
    ) -> Result<Self, DkimError> {
        Ok(Self {
            queue,
            log,
            clock,
            wake: Arc::new(Notify::new()),
            credentials: Arc::new(Credentials::new(&config.auth)),
            memory: MemoryBudget::new(config.server.max_message_memory.0),
            routing: Arc::new(Swap::new(IntakeRouting::new(
                config,
                Dkim::with_keys(&config.dkim, dkim_keys)?.map(Arc::new),
            ))),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            node: Arc::new(crate::node::NodeState::default()),
            tracer: crate::trace::Tracer::new(),
        })
    }
}

/// Runs Tern with `config` and what the prepare step loaded for it until
/// `shutdown` resolves, binding the configured listener addresses.
pub async fn run(
    config: Config,
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("cannot listen on {}", l.address))?;
        bound.push(listener);
    }
    let resolver: Arc<dyn Resolver> =
        Arc::new(HickoryResolver::new(&config.dns).map_err(anyhow::Error::msg)?);
    let queue = spool::open_queue(&config).await?;
    serve(config, prepared, bound, resolver, queue, shutdown).await
}

/// The prepare step over a config made in code (no file to point into).
fn prepared(config: &Config) -> anyhow::Result<Prepared> {
    crate::prepare::prepare(config).map_err(|i| {
        anyhow::anyhow!(
            "the config names files that cannot be used:\n{}",
            crate::prepare::describe(&i)
        )
    })
}

/// Runs Tern on already-bound listeners (`bound[i]` serves
/// `config.listeners[i]`), so that tests can bind port 0.
pub async fn run_with_listeners(
    config: Config,
    bound: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let resolver: Arc<dyn Resolver> =
        Arc::new(HickoryResolver::new(&config.dns).map_err(anyhow::Error::msg)?);
    run_with(config, bound, resolver, shutdown).await
}

/// Delivery's settings, with the shaping actions kept in the spool put
/// back. After a restart with queued mail, what the rates counted before
/// it is unknown: they start as if they had just sent their burst, so
/// nothing goes faster than the limits across a restart.
fn delivery_settings(
    config: &Config,
    services: &Services,
    queue: &Arc<Queue>,
    fleet: Option<Arc<dyn crate::shaping::Fleet>>,
    ca_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> (Settings, crate::state::Slot) {
    let mut settings = Settings::new(config, services.metrics.clone(), ca_roots);
    let busy = (queue.message_count() > 0 || queue.is_recovering()).then(tokio::time::Instant::now);
    let slot = crate::state::slot(queue, crate::state::ACTIONS);
    let shaper = crate::shaping::Shaper::starting(config, busy, Some(slot.clone()), fleet);
    if let Some(kept) = queue.state(crate::state::ACTIONS) {
        let n = shaper.actions.restore(&kept, services.clock.system_time());
        tracing::info!(actions = n, "shaping actions restored from the spool");
    }
    settings.shaper = Arc::new(shaper);
    settings.rebinds = Arc::new(crate::delivery::rebind::Rebinds::new(
        queue.state(crate::state::REBINDS).as_deref(),
        config.delivery.max_age.get(),
    ));
    (settings, slot)
}

/// The egress, with the day's warm-up counts kept in the spool put back.
fn egress(
    config: &Config,
    queue: &Queue,
    clock: &Clock,
    fleet: Option<Arc<dyn crate::shaping::Fleet>>,
) -> Egress {
    let egress = Egress::in_fleet(config, fleet);
    if let Some(kept) = queue.state(crate::state::WARMUP) {
        egress.restore_warmup(&kept, crate::clock::day_number(clock.system_time()));
    }
    egress
}

/// How often the warm-up counts are kept in the spool (a crash loses at
/// most this much of the day's counting).
const WARMUP_KEEP: Duration = Duration::from_secs(2);

/// Keeps the warm-up counts in the spool when they change.
async fn keep_warmup(delivery: Arc<Delivery>, slot: crate::state::Slot) {
    let mut last = delivery.warmup_counts();
    loop {
        tokio::time::sleep(WARMUP_KEEP).await;
        let now = delivery.warmup_counts();
        if now != last {
            slot.set(now.clone().into());
            last = now;
        }
    }
}

/// Moves the rebinds an earlier version kept in a file of the spool
/// directory into the spool's state, then removes the file.
async fn adopt_legacy_rebinds(config: &Config, queue: &Queue) -> anyhow::Result<()> {
    let file = crate::delivery::rebind::Rebinds::legacy_file(&config.queue.path);
    if queue.state(crate::state::REBINDS).is_some() || !file.exists() {
        return Ok(());
    }
    let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    queue
        .put_state(crate::state::REBINDS, text.into())
        .await
        .context("keeping the rebinds in the spool")?;
    std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    tracing::info!(file = %file.display(), "rebinds moved from their file into the spool");
    Ok(())
}

/// Runs Tern with a given resolver (tests point it at their own DNS).
pub async fn run_with(
    config: Config,
    bound: Vec<TcpListener>,
    resolver: Arc<dyn Resolver>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let prepared = prepared(&config)?;
    let queue = spool::open_queue(&config).await?;
    serve(config, prepared, bound, resolver, queue, shutdown).await
}

/// Runs Tern on a queue already open on `config.queue` (tests that
/// inject disk faults open it themselves).
pub async fn run_on_queue(
    config: Config,
    bound: Vec<TcpListener>,
    resolver: Arc<dyn Resolver>,
    queue: Arc<Queue>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let prepared = prepared(&config)?;
    serve(config, prepared, bound, resolver, queue, shutdown).await
}

/// Runs Tern: every entry point ends here.
async fn serve(
    config: Config,
    prepared: Prepared,
    bound: Vec<TcpListener>,
    resolver: Arc<dyn Resolver>,
    queue: Arc<Queue>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        bound.len() == config.listeners.len(),
        "one bound socket per configured listener is needed"
    );
    let log = Arc::new(
        DeliveryLog::open(&config.log, &config.server.hostname).with_context(|| {
            format!(
                "cannot open the delivery log {}",
                config.log.deliveries.display()
            )
        })?,
    );
    let Prepared {
        listener_tls,
        admin_tls,
        dkim_keys,
        ca_roots,
        trust_anchors,
        log_filter,
    } = prepared;
    let services = Services::new(&config, dkim_keys, queue.clone(), log.clone(), Clock::new())?;
    let recovery = tokio::spawn(spool::watch_recovery(queue.clone(), services.wake.clone()));
    adopt_legacy_rebinds(&config, &queue).await?;
    let node = services.node.clone();
    let cluster = match &config.cluster {
        Some(c) => Some(Cluster::new(&config, c, node.clone(), &queue)?),
        None => None,
    };
    let fleet = cluster.clone().map(|c| c as Arc<dyn crate::shaping::Fleet>);
    let (mut settings, actions_slot) =
        delivery_settings(&config, &services, &queue, fleet.clone(), &ca_roots);
    let anchors = trust_anchors.as_ref();
    let tls_parts =
        tls_policy::Parts::new(&config, &services, resolver.clone(), &ca_roots, anchors);
    let tls_policies = tls_parts
        .build(&config.tls_policy)
        .map_err(anyhow::Error::msg)?;
    let tls_reports = tls_parts.sender(&config, &services);
    settings.tls = Arc::new(crate::swap::Swap::new(tls_policies));
    settings.tracer = services.tracer.clone();
    let shaper = settings.shaper.clone();
    let delivery = Delivery::new(
        queue.clone(),
        Router::new(&config, resolver),
        egress(&config, &queue, &services.clock, fleet),
        log.clone(),
        services.clock,
        settings,
        services.wake.clone(),
    );
    let reloader = Arc::new(
        crate::admin::reload::Reloader::new(
            config.clone(),
            delivery.clone(),
            services.routing.clone(),
            services.metrics.clone(),
        )
        .with_tls_policies(Box::new(move |t| tls_parts.build(t))),
    );
    let fleet_tasks =
        start_fleet(cluster.as_ref(), &queue, &shaper, &delivery, services.clock).await;
    let hangup = tokio::spawn(reload_on_sighup(reloader.clone()));
    let warmup_slot = crate::state::slot(&queue, crate::state::WARMUP);
    let warmup = tokio::spawn(keep_warmup(delivery.clone(), warmup_slot.clone()));
    let upkeep = tokio::spawn(metrics_upkeep(services.metrics.clone()));
    let drainer = crate::cluster::drain::Drainer::new(
        (queue.clone(), delivery.clone(), node.clone()),
        cluster.clone(),
        (log.clone(), services.clock),
        &config,
    );
    let parts = AdminParts {
        shaper,
        delivery: delivery.clone(),
        reloader,
        cluster: cluster.clone(),
        drainer: drainer.clone(),
        tls_reports: tls_reports.clone(),
        log_filter,
    };
    let admin = start_admin(&config, &services, parts, admin_tls).await?;
    drainer.resume();
    let delivery_task = tokio::spawn(delivery.clone().run());
    let reporting = tokio::spawn(tls_reports.clone().run(config.tls_policy.reports));
    let exporters = crate::events::export::Exporters::start(&config, &queue, &services.metrics);
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let (sessions, mut sessions_done) = mpsc::channel::<()>(1);
    let accept_loops = start_listeners(
        &config,
        bound,
        listener_tls,
        &services,
        &phase_rx,
        &sessions,
    )?;
    drop(sessions);
    tracing::info!(hostname = %config.server.hostname, spool = %config.queue.path.display(), "tern is running");

    shutdown.await;
    let grace = config.server.shutdown_grace.get();
    tracing::info!(grace = %config.server.shutdown_grace, "shutting down: no new connections; transactions in flight may finish");
    let _ = phase.send(Phase::Draining);
    for a in accept_loops {
        let _ = a.await;
    }
    let sessions_closed = async {
        if tokio::time::timeout(grace, sessions_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: closing the remaining sessions");
            let _ = phase.send(Phase::Abort);
            let _ = tokio::time::timeout(Duration::from_secs(10), sessions_done.recv()).await;
        }
    };
    tokio::join!(sessions_closed, delivery.shutdown(grace));
    let _ = delivery_task.await;
    log.flush();
    exporters.stop(Duration::from_secs(2)).await;
    for (stop, task) in admin {
        let _ = stop.send(());
        let _ = task.await;
    }
    hangup.abort();
    recovery.abort();
    warmup.abort();
    upkeep.abort();
    reporting.abort();
    tls_reports.flush().await;
    if let Some(c) = &cluster {
        c.stop().await;
    }
    for t in fleet_tasks {
        t.abort();
    }
    close(&queue, &delivery, &log, [warmup_slot, actions_slot]).await
}

/// Starts the fleet's tasks, when the node is in one: shared limits,
/// actions, heartbeats.
async fn start_fleet(
    cluster: Option<&Arc<Cluster>>,
    queue: &Arc<Queue>,
    shaper: &Arc<crate::shaping::Shaper>,
    delivery: &Arc<Delivery>,
    clock: Clock,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(c) = cluster else {
        return Vec::new();
    };
    let (d, r, e) = (delivery.clone(), delivery.clone(), delivery.clone());
    let running = crate::cluster::Running {
        queue: queue.clone(),
        shaper: shaper.clone(),
        changed: Arc::new(move || d.actions_changed()),
        rebinds: delivery.settings().rebinds.clone(),
        rebound: Arc::new(move |rule| {
            let r = r.clone();
            tokio::spawn(async move { r.rebound(rule).await });
        }),
        rebound_ended: Arc::new(move || {
            let e = e.clone();
            tokio::spawn(async move { e.keep_rebinds().await });
        }),
        clock,
    };
    let tasks = c.start(running).await;
    tracing::info!(node = %c.node, redis_up = c.redis_up(), "cluster: member of the fleet");
    tasks
}

/// The last of a shutdown: Tern's own state kept, the delivery log
/// flushed, the spool closed.
async fn close(
    queue: &Arc<Queue>,
    delivery: &Delivery,
    log: &Arc<DeliveryLog>,
    [warmup, actions]: [crate::state::Slot; 2],
) -> anyhow::Result<()> {
    let counts = delivery.warmup_counts();
    if queue.state(crate::state::WARMUP).as_deref() != Some(&counts[..]) {
        warmup.set(counts.into());
        warmup.flush(queue, crate::state::WARMUP).await;
    }
    actions.flush(queue, crate::state::ACTIONS).await;
    let l = log.clone();
    let _ = tokio::task::spawn_blocking(move || l.flush()).await;
    let q = queue.clone();
    tokio::task::spawn_blocking(move || q.close())
        .await
        .context("closing the queue")?;
    tracing::info!(queued = queue.message_count(), "queue closed; stopped");
    Ok(())
}

/// Keeps the metrics' histograms folded (their samples are held until
/// then), whether or not anyone scrapes `/metrics`.
async fn metrics_upkeep(metrics: Arc<crate::metrics::Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.upkeep();
    }
}

/// Reloads the config on each SIGHUP (as `POST /v1/reload` does).
async fn reload_on_sighup(reloader: Arc<crate::admin::reload::Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin API only");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload()).await;
    }
}

/// Starts one accept loop per SMTP listener.
fn start_listeners(
    config: &Config,
    bound: Vec<TcpListener>,
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    services: &Services,
    phase_rx: &watch::Receiver<Phase>,
    sessions: &mpsc::Sender<()>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut accept_loops = Vec::new();
    for ((l, listener), tls) in config.listeners.iter().zip(bound).zip(tls) {
        let ctx = Arc::new(session_context(config, l, tls, services)?);
        let address = listener
            .local_addr()
            .map_or_else(|_| l.address.to_string(), |a| a.to_string());
        tracing::info!(%address, starttls = ctx.tls.is_some(), auth = services.credentials.any(), "listening for SMTP");
        accept_loops.push(tokio::spawn(server::serve(
            listener,
            ctx,
            phase_rx.clone(),
            sessions.clone(),
        )));
    }
    Ok(accept_loops)
}

/// What the sessions of one listener share, with its STARTTLS
/// configuration (loaded by the prepare step).
pub fn session_context(
    config: &Config,
    l: &ListenerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    services: &Services,
) -> anyhow::Result<SessionContext> {
    let tls = tls.map(TlsAcceptor::from);
    let users: HashMap<String, UserRouting> = config
        .auth
        .users
        .iter()
        .map(|u| {
            let r = UserRouting {
                pool: u.pool.clone(),
                tenant: u.tenant.clone(),
                priority: u.priority,
            };
            (u.name.clone(), r)
        })
        .collect();
    let settings = IntakeSettings {
        hostname: config.server.hostname.clone(),
        max_received_headers: l.max_received_headers as usize,
        add_message_id: l.add_message_id,
        add_date: l.add_date,
        max_messages: config.queue.max_messages,
        max_spool_size: config.queue.max_spool_size.0,
        pool: l.pool.clone(),
        tenant: l.tenant.clone(),
        users: Arc::new(users),
        pool_header: config.delivery.pool_header.clone(),
        routing: services.routing.clone(),
        metrics: services.metrics.clone(),
        node: services.node.clone(),
        priority: l.priority,
        priority_header: config.delivery.priority_header.clone(),
    };
    Ok(SessionContext {
        hostname: config.server.hostname.clone(),
        listener: l.clone(),
        intake: Intake::new(
            services.queue.clone(),
            settings,
            services.log.clone(),
            services.clock,
            services.wake.clone(),
        ),
        credentials: services.credentials.clone(),
        tls,
        memory: services.memory.clone(),
        tracer: services.tracer.clone(),
    })
}
