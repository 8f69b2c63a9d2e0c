//! The writer's health: the free-space reserve, what a failed write does,
//! and the repair that follows it.
//!
//! - Free space is measured with `statvfs` at most once per
//!   `CHECK_INTERVAL`, and every byte written since counts against the
//!   last measure, so new mail is refused before the reserve is touched,
//!   however fast it comes. Below the reserve, new messages are refused
//!   ([`Health::Full`]); outcomes are still written, and deferrals are
//!   kept in memory only (see `admit`), so a stuck backlog's retries never
//!   eat the space that delivered mail needs to be recorded.
//! - A reserve file (`RESERVE`) holds a little space back for outcome and
//!   compaction writes: a write that finds the disk full releases it, so
//!   recording goes on and the spool can drain. It is made again once
//!   free space is well above the reserve.
//! - A failed write or sync (no space, no file descriptor, an I/O error)
//!   fails its batch (nothing in it is acknowledged), abandons the
//!   segment, and makes the queue [`Health::Unhealthy`]: nothing is written
//!   until a fresh segment can be started, retried with back-off, so the
//!   queue heals by itself when the condition clears.

use std::fs::{self, File};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CHECK_INTERVAL, Writer};
use crate::error::QueueError;
use crate::shared::Health;

/// The name of the reserve file in the spool directory.
pub const RESERVE_FILE: &str = "RESERVE";

/// The longest wait between two repairs.
const MAX_REPAIR_DELAY: Duration = Duration::from_secs(30);

/// Why nothing can be written, and when to try again.
pub(super) struct Broken {
    reason: Arc<str>,
    /// The disk was full (so the reserve is released before a retry).
    no_space: bool,
    since: Instant,
    next_try: Instant,
    delay: Duration,
}

impl Broken {
    fn error(&self) -> QueueError {
        match self.no_space {
            true => QueueError::Full(self.reason.clone()),
            false => QueueError::Unhealthy(self.reason.clone()),
        }
    }
}

/// Free space as last measured, and what was written since.
#[derive(Default)]
pub(super) struct Space {
    /// Set while free space is under the reserve.
    pub low: Option<Arc<str>>,
    last_check: Option<Instant>,
    free: u64,
    written: u64,
    /// The reserve file exists.
    reserve_held: bool,
}

impl Writer {
    /// After a failed write or sync: cut off what may have been written,
    /// abandon the segment, and wait for a repair.
    pub(super) fn write_failed(&mut self, base: u64, e: io::Error) -> QueueError {
        let _ = self.active.file.set_len(base);
        let reason: Arc<str> = format!("writing segment {:016x}: {e}", self.active.id).into();
        tracing::error!(segment = %format!("{:016x}", self.active.id), error = %e, "spool write failed; nothing in the batch was acknowledged; writing resumes by itself once a fresh segment can be started");
        let now = Instant::now();
        let b = Broken {
            reason,
            no_space: is_no_space(&e),
            since: self.broken.as_ref().map_or(now, |b| b.since),
            next_try: now,
            delay: CHECK_INTERVAL,
        };
        let err = b.error();
        self.broken = Some(b);
        self.publish_health();
        err
    }

    /// Fails fast while broken; retries a fresh segment when the back-off
    /// says (releasing the reserve first after `ENOSPC`).
    pub(super) fn ensure_writable(&mut self) -> Result<(), QueueError> {
        let Some(b) = &self.broken else {
            return Ok(());
        };
        let now = Instant::now();
        if now < b.next_try {
            return Err(b.error());
        }
        if b.no_space {
            self.release_reserve();
        }
        match self.rotate() {
            Ok(()) => {
                let b = self.broken.take().expect("checked above");
                tracing::warn!(segment = %format!("{:016x}", self.active.id), after_ms = b.since.elapsed().as_millis() as u64, "spool writable again");
                self.publish_health();
                Ok(())
            }
            Err(e) => {
                let b = self.broken.as_mut().expect("checked above");
                b.delay = (b.delay * 2).min(MAX_REPAIR_DELAY);
                b.next_try = now + b.delay;
                b.no_space = is_no_space(&e);
                tracing::debug!(error = %e, retry_in_ms = b.delay.as_millis() as u64, "spool still not writable");
                Err(b.error())
            }
        }
    }

    /// True while broken (the writer then wakes to retry).
    pub(super) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Measures free space when the last measure is old, or when what was
    /// written since may have brought it under the reserve.
    pub(super) fn check_space(&mut self) {
        let min = self.shared.opts.min_free_space;
        if min == 0 {
            return;
        }
        let fresh = self
            .space
            .last_check
            .is_some_and(|t| t.elapsed() < CHECK_INTERVAL);
        if fresh && self.free_estimate() >= min {
            return;
        }
        self.space.last_check = Some(Instant::now());
        let Ok(st) = rustix::fs::statvfs(&self.shared.dir) else {
            return;
        };
        self.space.free = st.f_bavail.saturating_mul(st.f_frsize);
        self.space.written = 0;
        let free = self.space.free;
        let low = free < min;
        if !low && free >= min + 2 * self.reserve_size() {
            self.hold_reserve();
        }
        if low != self.space.low.is_some() {
            self.space.low =
                low.then(|| format!("{free} bytes free, below the reserve of {min} bytes").into());
            match low {
                true => tracing::warn!(
                    free,
                    reserve = min,
                    "spool free space below the reserve: new messages are refused, outcomes are still written"
                ),
                false => tracing::warn!(
                    free,
                    "spool free space back above the reserve: new messages are accepted"
                ),
            }
            self.publish_health();
        }
    }

    /// Free space as last measured, less what was written since.
    pub(super) fn free_estimate(&self) -> u64 {
        self.space.free.saturating_sub(self.space.written)
    }

    /// Counts bytes written (against the last free-space measure).
    pub(super) fn wrote(&mut self, bytes: u64) {
        self.space.written = self.space.written.saturating_add(bytes);
    }

    /// The reserve file's size: a quarter of the free-space reserve, at
    /// most 64 MiB (0 without a reserve).
    fn reserve_size(&self) -> u64 {
        (self.shared.opts.min_free_space / 4).min(64 << 20)
    }

    /// Makes the reserve file if it is missing and there is room.
    pub(super) fn hold_reserve(&mut self) {
        let size = self.reserve_size();
        if size == 0 || self.space.reserve_held {
            return;
        }
        let path = self.shared.dir.join(RESERVE_FILE);
        let made = File::create(&path).and_then(|f| {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size)?;
            f.sync_all()
        });
        match made {
            Ok(()) => self.space.reserve_held = true,
            Err(e) => {
                let _ = fs::remove_file(&path);
                tracing::debug!(error = %e, "cannot make the spool's reserve file now");
            }
        }
    }

    /// Deletes the reserve file, freeing its space for outcome writes.
    pub(super) fn release_reserve(&mut self) {
        let path = self.shared.dir.join(RESERVE_FILE);
        if fs::remove_file(&path).is_ok() {
            tracing::warn!(
                bytes = self.reserve_size(),
                "spool disk full: released the reserve file so that outcomes can be written"
            );
        }
        self.space.reserve_held = false;
        self.space.last_check = None;
    }

    pub(super) fn publish_health(&self) {
        let h = if let Some(b) = &self.broken {
            Health::Unhealthy(b.reason.clone())
        } else if let Some(r) = &self.space.low {
            Health::Full(r.clone())
        } else {
            Health::Healthy
        };
        self.shared.health.set(&h);
    }
}

pub(super) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
