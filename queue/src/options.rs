//! How a queue is opened: where, how durable, how big its files get.
//! Plain values; the application maps its own configuration onto them.

use std::path::PathBuf;
use std::time::Duration;

/// When an acknowledged write is on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `enqueue` and `update` return only after `fdatasync` of the batch
    /// that holds them: an acknowledged message survives a crash of the
    /// process, the kernel or the machine. The default.
    Fsync,
    /// Return once the batch is written to the kernel (`write`), and
    /// `fdatasync` every `flush_interval`. Survives a crash of the process;
    /// a kernel crash or power loss can lose what was acknowledged in the
    /// last `flush_interval`. Opt-in, for operators who accept that window.
    Buffered {
        /// How often buffered writes are forced to disk.
        flush_interval: Duration,
    },
}

/// Options for [`crate::Queue::open`].
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// The spool directory (created if missing).
    pub path: PathBuf,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// With [`Durability::Fsync`]: how long a batch of status records
    /// alone (delivery outcomes, from `update` and `record`) may wait for
    /// its `fdatasync`. Such a batch is written at once, so a crash of the
    /// process cannot lose it, and its callers are answered; it is synced
    /// with the next batch that must be (a new message, an operator's
    /// change) or when this delay ends, and no segment is deleted before.
    /// A kernel crash or power loss in that window can make a recipient
    /// delivered in it be delivered again; it never loses a message.
    /// Zero (the default) syncs every batch.
    pub status_sync_delay: Duration,
    /// A segment file is closed and a new one started once it reaches this
    /// size (bytes). Between 64 KiB and 1 GiB.
    pub segment_size: u64,
    /// Bytes of fresh message bodies kept in RAM until their first delivery
    /// attempt, so that delivery does not read them back from disk.
    pub body_cache: u64,
    /// New messages are refused with [`crate::QueueError::Full`] while the
    /// file system has less free space than this (bytes); 0 disables the check.
    pub min_free_space: u64,
    /// Open at once and recover the spool's messages on a thread of its
    /// own. [`crate::Queue::open`] then returns after a glance that reads
    /// and checks the segments for the state values and the highest id
    /// (about a quarter of a full recovery's time), and new messages are
    /// taken and delivered from then on; an old one joins the queue once
    /// the last segment holding a record of it has been read (until then
    /// it is not handed out, listed or counted), and every one has when
    /// [`crate::Queue::recovered`] returns. No segment is deleted or
    /// compacted before then (should the recovery fail, the old ones stay
    /// untouched until the next open). If no fresh segment can be
    /// started (a full disk), the open recovers in the foreground as
    /// without this option. Off by default.
    pub recover_in_background: bool,
    /// Failures to inject, set before the queue opens (tests of opening on
    /// a failing disk); otherwise the queue makes its own.
    #[cfg(any(test, feature = "fault-injection"))]
    pub faults: Option<std::sync::Arc<crate::faults::Faults>>,
}

/// Smallest and largest segment sizes.
pub const SEGMENT_SIZE_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

impl QueueOptions {
    /// Defaults for a spool at `path`: full durability, 64 MiB segments,
    /// a 64 MiB body cache, no free-space reserve.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Fsync,
            status_sync_delay: Duration::ZERO,
            segment_size: 64 << 20,
            body_cache: 64 << 20,
            min_free_space: 0,
            recover_in_background: false,
            #[cfg(any(test, feature = "fault-injection"))]
            faults: None,
        }
    }
}
