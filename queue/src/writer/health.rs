//! The writer's health: free-space checks, what a failed write does, and
//! the repair after `ENOSPC`.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::{CHECK_INTERVAL, Writer};
use crate::error::QueueError;
use crate::shared::Health;

impl Writer {
    /// After a failed write: cut off what may have been written, abandon
    /// the segment, and set the health the error calls for.
    pub(super) fn write_failed(&mut self, base: u64, e: io::Error) -> QueueError {
        let _ = self.active.file.set_len(base);
        let reason: Arc<str> = format!("writing segment {:016x}: {e}", self.active.id).into();
        tracing::error!(segment = %format!("{:016x}", self.active.id), error = %e, "spool write failed; no message in the batch was acknowledged");
        if is_no_space(&e) {
            self.broken = Some(reason.clone());
            self.publish_health();
            QueueError::Full(reason)
        } else {
            self.fatal = Some(reason.clone());
            self.publish_health();
            QueueError::Unhealthy(reason)
        }
    }

    /// Fails fast while unhealthy; after `ENOSPC`, tries (at most once per
    /// second) to continue in a fresh segment.
    pub(super) fn ensure_writable(&mut self) -> Result<(), QueueError> {
        if let Some(reason) = &self.fatal {
            return Err(QueueError::Unhealthy(reason.clone()));
        }
        let Some(reason) = &self.broken else {
            return Ok(());
        };
        let err = QueueError::Full(reason.clone());
        if self
            .last_repair
            .is_some_and(|t| t.elapsed() < CHECK_INTERVAL)
        {
            return Err(err);
        }
        self.last_repair = Some(Instant::now());
        match self.rotate() {
            Ok(()) => {
                tracing::info!(segment = %format!("{:016x}", self.active.id), "spool writable again");
                self.broken = None;
                self.publish_health();
                Ok(())
            }
            Err(_) => Err(err),
        }
    }

    /// Measures free space at most once per `CHECK_INTERVAL`.
    pub(super) fn check_space(&mut self) {
        let min = self.shared.opts.min_free_space;
        if min == 0
            || self
                .last_check
                .is_some_and(|t| t.elapsed() < CHECK_INTERVAL)
        {
            return;
        }
        self.last_check = Some(Instant::now());
        let Ok(st) = rustix::fs::statvfs(&self.shared.dir) else {
            return;
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let low = free < min;
        if low != self.space_low.is_some() {
            self.space_low =
                low.then(|| format!("{free} bytes free, below the reserve of {min} bytes").into());
            if low {
                tracing::warn!(
                    free,
                    reserve = min,
                    "spool free space below reserve: refusing new messages"
                );
            } else {
                tracing::info!(free, "spool free space back above reserve");
            }
            self.publish_health();
        }
    }

    pub(super) fn publish_health(&self) {
        let h = if let Some(r) = &self.fatal {
            Health::Unhealthy(r.clone())
        } else if let Some(r) = &self.broken {
            Health::Full(r.clone())
        } else if let Some(r) = &self.space_low {
            Health::Full(r.clone())
        } else {
            Health::Healthy
        };
        self.shared.health.set(&h);
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
