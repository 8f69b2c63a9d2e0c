//! `[server]` and `[log]`: who this MTA says it is, and how it logs.

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::{ByteSize, Duration};

/// `[server]`: the identity of this MTA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The host name announced in the SMTP banner and EHLO reply and written
    /// in Received headers. Default: the machine's host name.
    pub hostname: String,
    /// On SIGTERM, how long transactions in flight may take to finish
    /// before their sessions are closed with `421 4.3.2`.
    pub shutdown_grace: Duration,
    /// RAM for message data held by all SMTP sessions while they receive
    /// it; beyond it, new DATA and BDAT get `452 4.3.1` until data is
    /// handed to the queue. "0B" means no limit.
    pub max_message_memory: ByteSize,
    /// Threads that run the SMTP sessions, delivery and the admin API. 0
    /// (the default): one less than the machine's cores, at least one, so
    /// the spool's writer, the DKIM signers and the kernel's network and
    /// disk work keep a core; fewer threads also wake each other less per
    /// message. At most 1024.
    pub worker_threads: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: default_hostname(),
            shutdown_grace: Duration::from_secs(30),
            max_message_memory: ByteSize(1 << 30),
            worker_threads: 0,
        }
    }
}

/// The kernel's host name, or `localhost` when it cannot be read.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl ServerConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if !super::names::is_hostname(&self.hostname) {
            issues.push(Issue::new(
                at("server").field("hostname"),
                format!("{:?} is not a valid host name", self.hostname),
            ));
        }
        if self.worker_threads > 1024 {
            issues.push(Issue::new(
                at("server").field("worker_threads"),
                format!("{} is above the most, 1024", self.worker_threads),
            ));
        }
    }

    /// How many worker threads the runtime gets (`worker_threads`, or
    /// from the cores when 0).
    pub fn runtime_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n as usize,
        }
    }
}

/// `[log]`: diagnostic logging (stderr). The delivery log, a separate
/// product output, is configured elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which events to log: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`) or per-module directives such as `info,queue=debug`. The
    /// `RUST_LOG` environment variable, when set, takes precedence.
    pub level: String,
    /// The delivery log: one JSON line per reception, delivery, deferral,
    /// bounce and expiry. Empty: no delivery log.
    pub deliveries: std::path::PathBuf,
    /// The delivery log is rotated (`.1`, `.2`, ...) at this size.
    pub deliveries_max_size: ByteSize,
    /// Rotated delivery logs kept.
    pub deliveries_keep: u32,
    /// The delivery log is also rotated when it has been open this long
    /// (for example "1d"); "0s": by size only.
    pub deliveries_rotate_after: Duration,
    /// Most lines kept in memory while the disk is slow, in bytes; past
    /// it lines are dropped and counted, and delivery never waits.
    pub deliveries_buffer: ByteSize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            deliveries: "./var/log/deliveries.jsonl".into(),
            deliveries_max_size: ByteSize(100_000_000),
            deliveries_keep: 10,
            deliveries_rotate_after: Duration::from_secs(0),
            deliveries_buffer: ByteSize(16_000_000),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl LogConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if let Err(e) = crate::logging::parse_filter(&self.level) {
            issues.push(Issue::new(
                at("log").field("level"),
                format!("invalid log filter: {e}"),
            ));
        }
    }
}
