//! The daemon's spool: opened off the reactor, and its background
//! recovery watched (delivery woken as queued mail comes back; the report
//! logged at the end).

use std::sync::Arc;

use anyhow::Context;
use queue::{Queue, RecoveryReport};
use tokio::sync::Notify;

use crate::config::Config;

/// Opens and recovers the spool (blocking work, off the reactor) and logs
/// the recovery report.
pub(super) async fn open_queue(config: &Config) -> anyhow::Result<Arc<Queue>> {
    let opts = config.queue.options();
    let path = opts.path.clone();
    let (queue, report) = tokio::task::spawn_blocking(move || Queue::open(opts))
        .await
        .context("opening the queue")?
        .with_context(|| format!("cannot open the spool at {}", path.display()))?;
    if queue.is_recovering() {
        tracing::info!(
            bytes_read = report.bytes_read,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "spool glanced at: taking new mail while the queued mail is recovered"
        );
    }
    Ok(Arc::new(queue))
}

/// Wakes delivery each time a background recovery of the spool brings
/// queued mail back, and logs the recovery once it has ended (at once
/// unless it runs in the background).
pub(super) async fn watch_recovery(queue: Arc<Queue>, wake: Arc<Notify>) {
    let mut recovery = queue.watch_recovery();
    loop {
        let now = recovery.borrow_and_update().clone();
        wake.notify_one();
        match now {
            queue::Recovery::Done(report) => return log_recovery(&report),
            queue::Recovery::Failed(why) => {
                tracing::error!(%why, "the spool's queued mail could not be recovered: it stays on disk for the next start");
                return;
            }
            queue::Recovery::Running { .. } => {}
        }
        if recovery.changed().await.is_err() {
            return;
        }
    }
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
