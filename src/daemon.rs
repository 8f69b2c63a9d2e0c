//! Wiring: builds every component from the config, runs until the shutdown
//! future resolves, then stops them in order so that nothing accepted is
//! lost. Owns no protocol logic.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use queue::{Queue, RecoveryReport};

use crate::config::Config;

/// Runs Tern with `config` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let queue = open_queue(&config).await?;
    tracing::info!(
        hostname = %config.server.hostname,
        spool = %config.queue.path.display(),
        "tern is running (SMTP listener and delivery arrive with their issues)"
    );
    shutdown.await;
    tracing::info!("shutting down");
    let q = queue.clone();
    tokio::task::spawn_blocking(move || q.close())
        .await
        .context("closing the queue")?;
    tracing::info!(queued = queue.stats().messages, "queue closed; stopped");
    Ok(())
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
