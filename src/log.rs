//! The delivery log: product output for operators and analytics, one JSON
//! line per event (reception, delivery, transient failure, bounce,
//! expiry), separate from the diagnostic log.
//!
//! Lines are buffered and written in blocks (a periodic flush bounds how
//! long a line waits); the file is rotated by size (`.1` is the newest
//! rotated file). A write error is reported in the diagnostic log and
//! never stops mail.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

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
}

/// One line of the delivery log. Every field that does not apply is left
/// out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The queue id.
    pub queue_id: String,
    /// The Message-ID header, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The envelope sender ("" for `<>`).
    pub sender: String,
    /// The recipient, for per-recipient events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Recipients, for a reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<usize>,
    /// Message size in bytes, for a reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The client, for a reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The egress pool, for delivery outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The destination site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The egress source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The remote host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    /// The remote address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    /// The SMTP reply or local reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Delivery attempts so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u16>,
    /// Milliseconds since reception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_time_ms: Option<u64>,
    /// For a reception with signing on: the `domain/selector` of each DKIM
    /// signature, `none` (no key for its domains) or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
    /// For a suspension: the rule, what it suspends, and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// See `rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// See `rule` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// For a slow-down: the path's new rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
}

impl Record {
    /// A record of `kind` for `queue_id` at `time`, other fields empty.
    pub fn new(kind: Kind, time: SystemTime, queue_id: String, sender: String) -> Self {
        Self {
            time: crate::clock::rfc3339(time),
            kind,
            queue_id,
            message_id: None,
            sender,
            recipient: None,
            recipients: None,
            size: None,
            client: None,
            pool: None,
            site: None,
            source: None,
            remote_host: None,
            remote_ip: None,
            reply: None,
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

struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_size: u64,
    keep: u32,
    failed: bool,
}

/// The delivery log (or nothing, when disabled).
pub struct DeliveryLog {
    file: Option<Mutex<LogFile>>,
}

impl DeliveryLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self { file: None }
    }

    /// Opens (appending to) the log the config names; disabled if it names
    /// none.
    pub fn open(cfg: &LogConfig) -> std::io::Result<Self> {
        if cfg.deliveries.as_os_str().is_empty() {
            return Ok(Self::disabled());
        }
        let path = cfg.deliveries.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let log = LogFile {
            path,
            out: BufWriter::with_capacity(64 << 10, file),
            size,
            max_size: cfg.deliveries_max_size.0.max(1),
            keep: cfg.deliveries_keep,
            failed: false,
        };
        Ok(Self {
            file: Some(Mutex::new(log)),
        })
    }

    /// Appends one record.
    pub fn write(&self, record: &Record) {
        let Some(file) = &self.file else { return };
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, queue_id = %record.queue_id, "cannot encode a delivery log record");
                return;
            }
        };
        line.push(b'\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if f.size + line.len() as u64 > f.max_size && f.size > 0 {
            f.rotate();
        }
        let res = f.out.write_all(&line);
        f.size += line.len() as u64;
        f.note(res);
    }

    /// Writes out buffered records (called periodically and at shutdown).
    pub fn flush(&self) {
        if let Some(file) = &self.file {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let res = f.out.flush();
            f.note(res);
        }
    }
}

impl LogFile {
    fn note(&mut self, res: std::io::Result<()>) {
        match res {
            Err(e) if !self.failed => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the delivery log");
                self.failed = true;
            }
            Ok(()) => self.failed = false,
            Err(_) => {}
        }
    }

    /// Renames `path` to `path.1` (shifting older ones) and starts afresh.
    fn rotate(&mut self) {
        let _ = self.out.flush();
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                let _ = fs::rename(name(n), name(n + 1));
            }
            let _ = fs::rename(&self.path, name(1));
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                self.out = BufWriter::with_capacity(64 << 10, f);
                self.size = 0;
            }
            Err(e) => self.note(Err(e)),
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
        let log = DeliveryLog::open(&cfg).unwrap();
        for i in 0..10 {
            let mut r = Record::new(
                Kind::Delivery,
                SystemTime::UNIX_EPOCH,
                format!("{i:016X}"),
                "a@b.example".into(),
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
}
