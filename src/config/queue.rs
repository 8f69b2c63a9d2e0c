//! `[queue]`: the durable spool.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::{ByteSize, Duration};

/// When an accepted message counts as safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Answer 250 only after the message is fsync'ed (group-committed).
    /// Survives process, kernel and power failures.
    Fsync,
    /// Answer 250 once the message is written to the kernel; fsync every
    /// `flush_interval`. Survives a process crash; a kernel crash or power
    /// loss can lose the last `flush_interval` of accepted mail.
    Buffered,
}

impl std::fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fsync => "fsync",
            Self::Buffered => "buffered",
        })
    }
}

/// `[queue]`: where and how messages are kept until delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The spool directory, relative to the working directory unless absolute.
    pub path: PathBuf,
    /// `fsync` (default) or `buffered`; see `DurabilityMode`.
    pub durability: DurabilityMode,
    /// With `durability = "buffered"`: how often writes are forced to disk.
    pub flush_interval: Duration,
    /// With `durability = "fsync"`: how long delivery outcomes may wait for
    /// their fsync. They are written at once (a crash of Tern cannot lose
    /// them) and synced with the next new message or when this ends, which
    /// halves the syncs per message at moderate load; a kernel crash or
    /// power loss within it can deliver those recipients again (never
    /// loses mail). "0s" syncs every outcome before going on. At most 10s.
    pub outcome_sync_delay: Duration,
    /// Size at which a spool segment file is closed and the next started
    /// (64KiB to 1GiB).
    pub segment_size: ByteSize,
    /// RAM for fresh message bodies awaiting their first delivery attempt,
    /// so that delivery need not read them back from disk.
    pub body_cache: ByteSize,
    /// New mail is refused with a temporary error while the spool's file
    /// system has less free space than this; "0B" disables the check.
    pub min_free_space: ByteSize,
    /// New mail is refused with a temporary error while this many messages
    /// are queued (each costs about 500 bytes of RAM plus its recipients);
    /// 0 means no limit.
    pub max_messages: u64,
    /// New mail is refused with a temporary error while the queued message
    /// bodies take more than this on disk (a bound on the backlog of a
    /// burst); "0B" means no limit.
    pub max_spool_size: ByteSize,
    /// After a restart, take new mail while the queued mail is recovered:
    /// the listeners open after a quick read of the spool (its saved
    /// state and highest id; about a quarter of a full recovery), and each
    /// queued message joins delivery, the counts and the views as soon as
    /// the last spool file holding a record of it has been read (all of
    /// them within about 2-4 s per million messages). Until then
    /// `max_messages` counts only the mail back so far, and bulk
    /// operations (hold, purge, bounce, retry, rebind, drain) wait for
    /// the whole spool. `false` recovers everything before listening.
    pub recover_in_background: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./var/spool"),
            durability: DurabilityMode::Fsync,
            flush_interval: Duration::from_millis(100),
            outcome_sync_delay: Duration::from_millis(50),
            segment_size: ByteSize(64 << 20),
            body_cache: ByteSize(64 << 20),
            min_free_space: ByteSize(200_000_000),
            max_messages: 1_000_000,
            max_spool_size: ByteSize(0),
            recover_in_background: true,
        }
    }
}

impl QueueConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if self.path.as_os_str().is_empty() {
            issues.push(Issue::new(at("queue").field("path"), "must not be empty"));
        }
        if !queue::SEGMENT_SIZE_RANGE.contains(&self.segment_size.0) {
            issues.push(Issue::new(
                at("queue").field("segment_size"),
                format!("{} is outside 64KiB..1GiB", self.segment_size),
            ));
        }
        if self.durability == DurabilityMode::Buffered && self.flush_interval.get().is_zero() {
            issues.push(Issue::new(
                at("queue").field("flush_interval"),
                "must be above 0s with buffered durability",
            ));
        }
        if self.outcome_sync_delay.get() > Self::MAX_OUTCOME_SYNC_DELAY {
            issues.push(Issue::new(
                at("queue").field("outcome_sync_delay"),
                format!("{} is above the most, 10s", self.outcome_sync_delay),
            ));
        }
    }

    /// Longest `outcome_sync_delay`: the window of possible repeats after
    /// a power loss stays short.
    const MAX_OUTCOME_SYNC_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

    /// The queue crate's options for this section.
    pub fn options(&self) -> queue::QueueOptions {
        let mut o = queue::QueueOptions::new(&self.path);
        o.durability = match self.durability {
            DurabilityMode::Fsync => queue::Durability::Fsync,
            DurabilityMode::Buffered => queue::Durability::Buffered {
                flush_interval: self.flush_interval.get(),
            },
        };
        o.status_sync_delay = self.outcome_sync_delay.get();
        o.segment_size = self.segment_size.0;
        o.body_cache = self.body_cache.0;
        o.min_free_space = self.min_free_space.0;
        o.recover_in_background = self.recover_in_background;
        o
    }
}
