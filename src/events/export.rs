//! The export of events to each `[[events.webhook]]`: a task per webhook
//! reads the delivery log after its cursor ([`super::reader`]), keeps the
//! event types it wants, posts batches ([`super::webhook`]) and, once a
//! batch is acknowledged (2xx), keeps the cursor in the spool (a state
//! record), so a restart resumes after the last acknowledged event: at
//! least once, in order. A batch that keeps failing is retried with
//! back-off for `retry_window`, then appended to
//! `<delivery log>.parked-<name>` and counted, and the next goes. It
//! never slows delivery: it only reads the log's files, on a blocking
//! thread, and the files are its buffer (what rotates away before it is
//! read is counted as lost).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use queue::Queue;
use tokio::sync::watch;
use tokio::time::Instant;

use super::reader::LogReader;
use super::webhook::Webhook;
use crate::config::{Config, WebhookConfig};
use crate::metrics::Metrics;

/// How often an idle exporter looks for new events.
const POLL: Duration = Duration::from_millis(200);
/// The longest wait between two tries of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The running exporters.
pub struct Exporters {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Exporters {
    /// Starts one exporter per webhook of `config`.
    pub fn start(config: &Config, queue: &Arc<Queue>, metrics: &Arc<Metrics>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for w in &config.events.webhook {
            match Export::new(config, w, queue.clone(), metrics.clone(), stopped.clone()) {
                Ok(e) => tasks.push(tokio::spawn(e.run())),
                Err(e) => tracing::error!(webhook = %w.name, error = %e, "webhook not started"),
            }
        }
        Self { stop, tasks }
    }

    /// Stops them: each sends what the log holds (at most `grace`), and
    /// keeps its cursor.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(grace, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// One webhook's exporter.
struct Export {
    name: String,
    hook: Webhook,
    reader: Arc<Mutex<LogReader>>,
    /// The wanted event types (empty: every type).
    wanted: Vec<Vec<u8>>,
    batch_size: usize,
    latency: Duration,
    retry_window: Duration,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    parked: PathBuf,
    stopped: watch::Receiver<bool>,
    /// The last event acknowledged (or passed over), as kept.
    cursor: u64,
}

/// The state key of a webhook's cursor.
fn cursor_key(name: &str) -> String {
    format!("events/cursor/{name}")
}

impl Export {
    fn new(
        config: &Config,
        w: &WebhookConfig,
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
        stopped: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let cursor = queue
            .state(&cursor_key(&w.name))
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0);
        let log = &config.log.deliveries;
        let reader = LogReader::new(log, config.log.deliveries_keep, cursor);
        Ok(Self {
            name: w.name.clone(),
            hook: Webhook::new(w)?,
            reader: Arc::new(Mutex::new(reader)),
            wanted: (w.events.iter()).map(|t| t.as_bytes().to_vec()).collect(),
            batch_size: w.batch_size as usize,
            latency: w.batch_latency.get(),
            retry_window: w.retry_window.get(),
            queue,
            metrics,
            parked: PathBuf::from(format!("{}.parked-{}", log.display(), w.name)),
            stopped,
            cursor,
        })
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Exports until stopped; once stopped, what the log holds is still
    /// sent (the daemon bounds that by a grace period), so a clean stop
    /// leaves nothing behind for the next start.
    async fn run(mut self) {
        tracing::info!(webhook = %self.name, after = self.cursor, "event export started");
        loop {
            let (batch, last, caught_up) = self.collect().await;
            if batch.is_empty() {
                if last > self.cursor {
                    self.keep_cursor(last).await;
                }
                if caught_up && self.stopping() {
                    return;
                }
                continue;
            }
            if !self.deliver(&batch).await {
                return;
            }
            let n = batch.len() as u64;
            self.metrics.events(&self.name, "exported", n);
            self.keep_cursor(last).await;
        }
    }

    /// A batch: up to `batch_size` wanted events, gathered for at most
    /// `latency` after the first; the last event read; whether the log
    /// had nothing more.
    async fn collect(&mut self) -> (Vec<Vec<u8>>, u64, bool) {
        let mut batch = Vec::new();
        let mut last = self.cursor;
        let mut first: Option<Instant> = None;
        loop {
            let want = self.batch_size - batch.len();
            let reader = self.reader.clone();
            let lines = tokio::task::spawn_blocking(move || {
                let mut r = reader.lock().unwrap_or_else(|p| p.into_inner());
                // No more than the batch can take: every line read is
                // either sent or passed over, never left behind.
                let lines = r.next(want);
                let lost = std::mem::take(&mut r.lost);
                (lines, lost)
            })
            .await
            .unwrap_or_default();
            if lines.1 > 0 {
                tracing::warn!(webhook = %self.name, lost = lines.1, "events rotated out of the delivery log before they were exported");
                self.metrics.events(&self.name, "lost", lines.1);
            }
            let got = !lines.0.is_empty();
            for (seq, line) in lines.0 {
                last = seq;
                if self.wanted(&line) {
                    batch.push(line);
                    first.get_or_insert_with(Instant::now);
                }
                if batch.len() >= self.batch_size {
                    return (batch, last, false);
                }
            }
            if !got && self.stopping() {
                return (batch, last, true);
            }
            let waited = first.map(|f| f.elapsed());
            if waited.is_some_and(|w| w >= self.latency) {
                return (batch, last, !got);
            }
            if !got {
                if first.is_none() && last > self.cursor {
                    return (batch, last, true);
                }
                let nap = waited.map_or(POLL, |w| POLL.min(self.latency - w));
                let mut stopped = self.stopped.clone();
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }

    /// True when the webhook wants this event's type.
    fn wanted(&self, line: &[u8]) -> bool {
        let kind = crate::log::line_type(line);
        self.wanted.is_empty() || (self.wanted.iter()).any(|n| kind == Some(n.as_slice()))
    }

    /// Posts a batch until it is acknowledged, or parks it after the
    /// retry window; false when stopped first (the batch goes again after
    /// the restart).
    async fn deliver(&mut self, batch: &[Vec<u8>]) -> bool {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let started = Instant::now();
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.hook.post(&refs).await {
                Ok(()) => return true,
                Err(e) => {
                    self.metrics.events(&self.name, "failed_posts", 1);
                    tracing::warn!(webhook = %self.name, events = batch.len(), error = %e, "webhook post failed; retrying");
                }
            }
            if started.elapsed() >= self.retry_window {
                self.park(batch).await;
                return true;
            }
            let mut stopped = self.stopped.clone();
            if *stopped.borrow() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped.changed() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Keeps a batch that could not be delivered in the parked file.
    async fn park(&self, batch: &[Vec<u8>]) {
        let path = self.parked.clone();
        let mut text = Vec::new();
        for line in batch {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(&text)?;
            f.sync_data()
        })
        .await;
        let n = batch.len() as u64;
        self.metrics.events(&self.name, "parked", n);
        match written {
            Ok(Ok(())) => {
                tracing::error!(webhook = %self.name, events = n, file = %self.parked.display(), "webhook kept failing; batch parked on disk")
            }
            _ => {
                tracing::error!(webhook = %self.name, events = n, "webhook kept failing and the batch could not be parked: dropped")
            }
        }
    }

    /// Keeps the cursor in the spool (durable when it returns).
    async fn keep_cursor(&mut self, last: u64) {
        let value = Bytes::from(last.to_string());
        match self.queue.put_state(&cursor_key(&self.name), value).await {
            Ok(()) => self.cursor = last,
            Err(e) => {
                tracing::warn!(webhook = %self.name, error = %e, "cannot keep the webhook's cursor; events may be sent again after a restart")
            }
        }
    }
}
