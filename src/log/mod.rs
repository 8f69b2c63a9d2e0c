//! The delivery log: product output for operators and analytics, one JSON
//! line per event (reception, delivery, transient failure, bounce,
//! expiry), separate from the diagnostic log.
//!
//! A line is encoded by the caller and added to a bounded buffer in
//! memory; a thread of its own ([`file`]) writes the buffer out at least
//! every second and rotates the file by size or age (`.1` is the newest
//! rotated file). Delivery never waits for the disk: when the buffer is
//! full (a slow or stuck disk), lines are dropped and counted
//! (`tern_delivery_log_dropped_total`). A write error is reported in the
//! diagnostic log and never stops mail.
//!
//! Every line is an event: it starts with its `event_id`, a sequence
//! number (hexadecimal, increasing in file order, and above any used
//! before, even after the files are removed: it starts from the clock in
//! microseconds) and the node's name. The event exporter ([`crate::events`])
//! reads the files from a durable cursor on that number.

mod file;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::LogConfig;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Accepted from a client (or generated: a bounce).
    Reception,
    /// Accepted by the next hop.
    Delivery,
    /// Deferred; will be retried.
    TransientFailure,
    /// Failed permanently; a bounce was generated if one was due.
    Bounce,
    /// Undelivered when `max_age` ran out; bounced.
    Expiration,
    /// A shaping rule suspended a path, source, site or provider (the
    /// message is the one whose reply triggered it).
    Suspension,
    /// A shaping rule slowed a path down (`rate` is the new rate).
    SlowDown,
    /// Removed from the queue by an operator, undelivered and unbounced.
    Purged,
    /// The outcomes of a delivery could not be written to the spool (full
    /// or failing): the message is held while Tern retries the write; if
    /// Tern stops before it goes through, the message may be delivered
    /// twice.
    Unrecorded,
    /// Handed to another node of the fleet by a drain (`target` is the
    /// node), which now holds it durably; removed from this queue.
    Moved,
    /// Taken over from another node of the fleet (`target` is that node
    /// and its queue id there); sent from here once the hand-over is
    /// committed.
    Adopted,
}

/// One line of the delivery log. Every field that does not apply is left
/// out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The queue id.
    pub queue_id: Cow<'a, str>,
    /// The Message-ID header, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Cow<'a, str>>,
    /// The envelope sender ("" for `<>`).
    pub sender: Cow<'a, str>,
    /// The recipient, for per-recipient events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Cow<'a, str>>,
    /// Recipients, for a reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<usize>,
    /// Message size in bytes, for a reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The client, for a reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Cow<'a, str>>,
    /// The tenant the message belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Cow<'a, str>>,
    /// The injecting application's own id (HTTP API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<Cow<'a, str>>,
    /// The injecting application's own data (HTTP API), a JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The egress pool, for delivery outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Cow<'a, str>>,
    /// The destination site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<Cow<'a, str>>,
    /// The egress source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Cow<'a, str>>,
    /// The address the receiver saw the connection come from (the
    /// source's; behind a proxy, the public address it sends from), when
    /// the source has a fixed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<Cow<'a, str>>,
    /// The egress proxy the connection went through (without password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Cow<'a, str>>,
    /// The remote host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<Cow<'a, str>>,
    /// The remote address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<Cow<'a, str>>,
    /// The connection's TLS for a delivery outcome: `verified`
    /// (certificate checked against the MX name), `tls` (encrypted,
    /// unchecked) or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// The TLS policy the delivery was held to: `off`, `opportunistic`,
    /// `required`, `verify` (the configured `tls`), `mta-sts` (the
    /// domain's MTA-STS policy in `enforce` mode: verified TLS to a host
    /// it names) or `mta-sts-testing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_policy: Option<&'static str>,
    /// The SMTP reply or local reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Cow<'a, str>>,
    /// The reply's code, for delivery outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The reply's enhanced status code (`5.1.1`), for delivery outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced_code: Option<Cow<'a, str>>,
    /// For a failure or deferral: its class (`config/bounces.toml`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce_class: Option<&'static str>,
    /// For a failure or deferral: `hard` (5xx) or `soft`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce_kind: Option<&'static str>,
    /// Delivery attempts so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u16>,
    /// Milliseconds since reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_time_ms: Option<u64>,
    /// For a reception with signing on: the `domain/selector` of each DKIM
    /// signature, `none` (no key for its domains) or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim: Option<Cow<'a, str>>,
    /// For a suspension: the rule, what it suspends, and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Cow<'a, str>>,
    /// See `rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Cow<'a, str>>,
    /// See `rule` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Cow<'a, str>>,
    /// For a slow-down: the path's new rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Cow<'a, str>>,
}

impl<'a> Record<'a> {
    /// A record of `kind` for `queue_id` at `time`, other fields empty.
    pub fn new(
        kind: Kind,
        time: SystemTime,
        queue_id: impl Into<Cow<'a, str>>,
        sender: impl Into<Cow<'a, str>>,
    ) -> Self {
        Self {
            time: crate::clock::rfc3339(time),
            kind,
            queue_id: queue_id.into(),
            message_id: None,
            sender: sender.into(),
            recipient: None,
            recipients: None,
            size: None,
            client: None,
            tenant: None,
            custom_id: None,
            metadata: None,
            pool: None,
            site: None,
            source: None,
            source_ip: None,
            proxy: None,
            remote_host: None,
            remote_ip: None,
            tls: None,
            tls_policy: None,
            reply: None,
            code: None,
            enhanced_code: None,
            bounce_class: None,
            bounce_kind: None,
            attempts: None,
            queue_time_ms: None,
            dkim: None,
            rule: None,
            target: None,
            until: None,
            rate: None,
        }
    }
}

/// Lines waiting for the writer, and the flush handshake.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The next line's sequence number.
    seq: u64,
    /// Flushes asked for, and written (a flush waits for its number).
    asked: u64,
    written: u64,
    stop: bool,
}

/// What the callers and the writer thread share.
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    wake: Condvar,
    /// Tells flushers their lines are written.
    done: Condvar,
    /// Most bytes the buffer holds before lines are dropped.
    budget: usize,
    dropped: AtomicU64,
    /// The open file; the writer holds it while writing.
    file: Mutex<file::LogFile>,
    /// The node name as JSON string content (escaped), for event ids.
    node: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The delivery log (or nothing, when disabled).
pub struct DeliveryLog {
    shared: Option<Arc<Shared>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// How long a flush waits for the disk at most.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Block size from which the writer is woken at once.
const BLOCK: usize = 64 << 10;

impl DeliveryLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            shared: None,
            writer: None,
        }
    }

    /// Opens (appending to) the log the config names and starts its
    /// writer thread; disabled if it names none. `node` ends each event id.
    pub fn open(cfg: &LogConfig, node: &str) -> std::io::Result<Self> {
        if cfg.deliveries.as_os_str().is_empty() {
            return Ok(Self::disabled());
        }
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            wake: Condvar::new(),
            done: Condvar::new(),
            budget: usize::try_from(cfg.deliveries_buffer.0)
                .unwrap_or(usize::MAX)
                .max(BLOCK),
            dropped: AtomicU64::new(0),
            file: Mutex::new(file::LogFile::open(cfg)?),
            node: json_text(node),
        });
        shared.lock().seq = first_seq(&cfg.deliveries);
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("tern-log".into())
            .spawn(move || file::run(&s))?;
        Ok(Self {
            shared: Some(shared),
            writer: Some(writer),
        })
    }

    /// Appends one record; never waits for the disk.
    pub fn write(&self, record: &Record<'_>) {
        let Some(shared) = &self.shared else { return };
        // Sized for a typical line up front (serde_json would start at 128
        // bytes and grow it two or three times).
        let mut line = Vec::with_capacity(1024);
        let line = match serde_json::to_writer(&mut line, record) {
            Ok(()) => line,
            Err(e) => {
                tracing::error!(error = %e, queue_id = %record.queue_id, "cannot encode a delivery log record");
                return;
            }
        };
        let mut p = shared.lock();
        if p.buf.len() + line.len() + 64 > shared.budget {
            drop(p);
            let n = shared.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(queue_id = %record.queue_id, dropped = n + 1,
                    "the delivery log's disk is not keeping up; lines are dropped, delivery goes on");
            }
            return;
        }
        // The event id goes first, numbered under the lock so that the
        // numbers increase in file order.
        let seq = p.seq;
        p.seq += 1;
        frame(seq, &shared.node, &line, &mut p.buf);
        if p.buf.len() >= BLOCK {
            shared.wake.notify_one();
        }
    }

    /// Waits (at most 10 s) until the lines written so far are on their
    /// way to the disk (at shutdown, and for tests).
    pub fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let mut p = shared.lock();
        p.asked += 1;
        let target = p.asked;
        shared.wake.notify_one();
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        while p.written < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("the delivery log's disk did not take its lines in time");
                return;
            }
            p = shared
                .done
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Lines dropped since the start because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }
}

/// `text` as the content of a JSON string (escaped, without the quotes).
pub fn json_text(text: &str) -> String {
    let quoted = serde_json::Value::from(text).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Appends one log line to `out`: `{"event_id":"<seq>.<node>",` then the
/// fields of `record_json` (a record as serde encodes it: one JSON object
/// on one line), then a newline. `node` is JSON string content
/// ([`json_text`]).
pub fn frame(seq: u64, node: &str, record_json: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{{\"event_id\":\"{seq:016x}.{node}\",");
    out.extend_from_slice(record_json.get(1..).unwrap_or_default());
    out.push(b'\n');
}

/// The event type of a log line (`bounce`): the first `"type":"` field,
/// which is the record's own (it comes before every free-text field, and
/// quotes inside values, such as API metadata, are escaped or nested after
/// it).
pub fn line_type(line: &[u8]) -> Option<&[u8]> {
    const MARK: &[u8] = b"\"type\":\"";
    let at = memchr::memmem::find(line, MARK)? + MARK.len();
    let len = memchr::memchr(b'"', &line[at..])?;
    Some(&line[at..at + len])
}

/// The sequence number of an event id (`"<hex>.<node>"`).
pub fn event_seq(event_id: &str) -> Option<u64> {
    let hex = event_id.split('.').next()?;
    u64::from_str_radix(hex, 16).ok()
}

/// The sequence number of a log line (its leading event id).
pub fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"event_id\":\"")?;
    let end = rest.iter().position(|b| *b == b'.')?;
    u64::from_str_radix(std::str::from_utf8(&rest[..end]).ok()?, 16).ok()
}

/// The first sequence number: after the last line of the current file,
/// and never below the clock in microseconds (so numbers stay unique when
/// the files are removed).
fn first_seq(path: &std::path::Path) -> u64 {
    let clock = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let last = tail(path).and_then(|b| {
        b.split(|c| *c == b'\n')
            .rev()
            .find(|l| !l.is_empty())
            .and_then(line_seq)
    });
    last.map_or(clock, |l| clock.max(l + 1))
}

/// The last 64 KiB of a file.
fn tail(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 << 10))).ok()?;
    let mut b = Vec::new();
    f.read_to_end(&mut b).ok()?;
    Some(b)
}

impl Drop for DeliveryLog {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.lock().stop = true;
            shared.wake.notify_one();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::ByteSize;

    #[test]
    fn lines_are_json_and_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            deliveries: dir.path().join("d.jsonl"),
            deliveries_max_size: ByteSize(400),
            deliveries_keep: 2,
            ..LogConfig::default()
        };
        let log = DeliveryLog::open(&cfg, "node").unwrap();
        for i in 0..10 {
            let mut r = Record::new(
                Kind::Delivery,
                SystemTime::UNIX_EPOCH,
                format!("{i:016X}"),
                "a@b.example",
            );
            r.recipient = Some("c@d.example".into());
            r.reply = Some("250 2.0.0 ok \"quoted\"\nnext".into());
            log.write(&r);
        }
        log.flush();
        let current = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(current.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "delivery");
        assert_eq!(first["recipient"], "c@d.example");
        assert_eq!(
            first["reply"], "250 2.0.0 ok \"quoted\"\nnext",
            "escaped, still one line"
        );
        assert!(first.get("site").is_none(), "unset fields are left out");
        assert!(dir.path().join("d.jsonl.1").exists() && dir.path().join("d.jsonl.2").exists());
        assert!(!dir.path().join("d.jsonl.3").exists(), "keeps 2");
        assert!(std::fs::metadata(dir.path().join("d.jsonl")).unwrap().len() <= 400);
    }

    #[test]
    fn a_stuck_disk_never_stops_writers_it_drops_and_counts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            deliveries: dir.path().join("d.jsonl"),
            deliveries_buffer: ByteSize(1), // the floor: one block
            ..LogConfig::default()
        };
        let log = DeliveryLog::open(&cfg, "node").unwrap();
        let shared = log.shared.clone().unwrap();
        let stuck = shared.file.lock().unwrap(); // the writer cannot write
        let total = 2000;
        for i in 0..total {
            let r = Record::new(
                Kind::Delivery,
                SystemTime::UNIX_EPOCH,
                format!("{i:016X}"),
                "a@b.example",
            );
            log.write(&r);
        }
        let dropped = log.dropped();
        assert!(dropped > 0, "the buffer is bounded");
        drop(stuck);
        log.flush();
        let text = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap();
        let written = text.lines().count() as u64;
        assert!(written > 0);
        assert_eq!(written + dropped, total, "every line is written or counted");
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
            "whole lines only"
        );
    }

    #[test]
    fn the_log_rotates_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            deliveries: dir.path().join("d.jsonl"),
            deliveries_rotate_after: crate::config::values::Duration::from_secs(1),
            ..LogConfig::default()
        };
        let log = DeliveryLog::open(&cfg, "node").unwrap();
        let r = Record::new(Kind::Delivery, SystemTime::UNIX_EPOCH, "1", "");
        log.write(&r);
        log.flush();
        // As if the file had been open for two seconds.
        log.shared.as_ref().unwrap().file.lock().unwrap().opened -= Duration::from_secs(2);
        log.write(&r);
        log.flush();
        assert!(
            dir.path().join("d.jsonl.1").exists(),
            "the first file was old enough"
        );
    }
}
