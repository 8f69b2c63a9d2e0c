//! Wiring: builds every component from the config, runs until the shutdown
//! future resolves, then stops them in order so that nothing accepted is
//! lost. Owns no protocol logic.
//!
//! Shutdown: listeners stop accepting; idle sessions are closed with
//! `421 4.3.2`; sessions in a transaction get `server.shutdown_grace` to
//! finish it (its `250` is sent only once the message is durable); then the
//! rest are closed with 421, and the queue is closed (flushed).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use queue::{Queue, RecoveryReport};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ListenerConfig};
use crate::intake::{Intake, IntakeSettings};
use crate::smtp::server::{self, Credentials, MemoryBudget, Phase, SessionContext};
use crate::smtp::tls;

/// Runs Tern with `config` until `shutdown` resolves, binding the
/// configured listener addresses.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("cannot listen on {}", l.address))?;
        bound.push(listener);
    }
    run_with_listeners(config, bound, shutdown).await
}

/// Runs Tern on already-bound listeners (`bound[i]` serves
/// `config.listeners[i]`), so that tests can bind port 0.
pub async fn run_with_listeners(
    config: Config,
    bound: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        bound.len() == config.listeners.len(),
        "one bound socket per configured listener is needed"
    );
    let queue = open_queue(&config).await?;
    let credentials = Arc::new(Credentials::new(&config.auth));
    let memory = MemoryBudget::new(config.server.max_message_memory.0);
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let (sessions, mut sessions_done) = mpsc::channel::<()>(1);
    let mut accept_loops = Vec::new();
    for (l, listener) in config.listeners.iter().zip(bound) {
        let ctx = Arc::new(session_context(
            &config,
            l,
            queue.clone(),
            credentials.clone(),
            memory.clone(),
        )?);
        let address = listener
            .local_addr()
            .map_or_else(|_| l.address.to_string(), |a| a.to_string());
        tracing::info!(%address, starttls = ctx.tls.is_some(), auth = credentials.any(), "listening for SMTP");
        accept_loops.push(tokio::spawn(server::serve(
            listener,
            ctx,
            phase_rx.clone(),
            sessions.clone(),
        )));
    }
    drop(sessions);
    tracing::info!(hostname = %config.server.hostname, spool = %config.queue.path.display(), "tern is running");

    shutdown.await;
    let grace = config.server.shutdown_grace.get();
    tracing::info!(grace = %config.server.shutdown_grace, "shutting down: no new connections; transactions in flight may finish");
    let _ = phase.send(Phase::Draining);
    for a in accept_loops {
        let _ = a.await;
    }
    if tokio::time::timeout(grace, sessions_done.recv())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining sessions");
        let _ = phase.send(Phase::Abort);
        let _ = tokio::time::timeout(Duration::from_secs(10), sessions_done.recv()).await;
    }
    let q = queue.clone();
    tokio::task::spawn_blocking(move || q.close())
        .await
        .context("closing the queue")?;
    tracing::info!(queued = queue.message_count(), "queue closed; stopped");
    Ok(())
}

/// What the sessions of one listener share.
pub fn session_context(
    config: &Config,
    l: &ListenerConfig,
    queue: Arc<Queue>,
    credentials: Arc<Credentials>,
    memory: Arc<MemoryBudget>,
) -> anyhow::Result<SessionContext> {
    let tls = match l.tls_enabled() {
        true => Some(TlsAcceptor::from(tls::load_server_config(l).map_err(
            |e| anyhow::anyhow!("listener {}: {}: {}", l.address, e.key, e.message),
        )?)),
        false => None,
    };
    let settings = IntakeSettings {
        hostname: config.server.hostname.clone(),
        max_received_headers: l.max_received_headers as usize,
        add_message_id: l.add_message_id,
        add_date: l.add_date,
        max_messages: config.queue.max_messages,
    };
    Ok(SessionContext {
        hostname: config.server.hostname.clone(),
        listener: l.clone(),
        intake: Intake::new(queue, settings),
        credentials,
        tls,
        memory,
    })
}

/// Opens and recovers the spool (blocking work, off the reactor) and logs
/// the recovery report.
async fn open_queue(config: &Config) -> anyhow::Result<Arc<Queue>> {
    let opts = config.queue.options();
    let path = opts.path.clone();
    let (queue, report) = tokio::task::spawn_blocking(move || Queue::open(opts))
        .await
        .context("opening the queue")?
        .with_context(|| format!("cannot open the spool at {}", path.display()))?;
    log_recovery(&report);
    Ok(Arc::new(queue))
}

fn log_recovery(r: &RecoveryReport) {
    tracing::info!(
        messages = r.messages,
        recipients = r.recipients,
        body_bytes = r.body_bytes,
        segments = r.segments,
        elapsed_ms = r.elapsed.as_millis() as u64,
        "spool recovered"
    );
    let damaged = r.corrupt_records + r.unknown_records + r.quarantined_segments.len() as u64;
    if damaged > 0 || r.torn_tail_bytes > 0 || !r.ignored_files.is_empty() {
        tracing::warn!(
            corrupt_records = r.corrupt_records,
            torn_tail_bytes = r.torn_tail_bytes,
            unknown_records = r.unknown_records,
            quarantined_segments = r.quarantined_segments.len(),
            ignored_files = r.ignored_files.len(),
            "spool recovery found damage or foreign files: {r}"
        );
    }
}
