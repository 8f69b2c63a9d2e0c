//! The writer's segment files: creating, rotating, syncing and deleting them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::{Active, Writer};
use crate::segment::{self, SEGMENT_HEADER_LEN, SegId};

impl Writer {
    /// Seals the active segment and starts the next one.
    pub(super) fn rotate(&mut self) -> io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        self.shared.faults.before_write()?;
        if self.unsynced.is_some() {
            self.active.file.sync_data()?;
            self.unsynced = None;
        }
        let next = create_segment(&self.shared.dir, &self.dir, self.next_segment_id())?;
        self.active = next;
        self.register_active();
        Ok(())
    }

    pub(super) fn next_segment_id(&self) -> SegId {
        let ix = self.shared.index();
        ix.segments
            .keys()
            .next_back()
            .map_or(1, |last| last + 1)
            .max(self.active.id + 1)
    }

    /// Makes everything written so far durable (buffered mode, status
    /// records waiting for a sync).
    pub(super) fn flush(&mut self) {
        if self.unsynced.is_none() {
            return;
        }
        self.unsynced = None;
        self.shared
            .io
            .syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.sync_active() {
            // What was written since the last sync may be lost (buffered
            // mode's risk, or outcomes repeated after a power loss);
            // continue in a fresh segment.
            let size = self.active.size;
            self.write_failed(size, e);
        }
    }

    /// Syncs the active segment (through the fault-injection hooks).
    pub(super) fn sync_active(&self) -> io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        self.shared.faults.before_sync()?;
        self.active.file.sync_data()?;
        #[cfg(any(test, feature = "fault-injection"))]
        self.shared.faults.synced();
        Ok(())
    }

    /// Deletes every segment nothing depends on any more, then syncs the
    /// directory so that a later deletion never overtakes this one.
    pub(crate) fn collect_garbage(&mut self) {
        if self.unsynced.is_some() {
            return; // what made them deletable may not be durable yet
        }
        let victims = self.shared.index().deletable();
        if victims.is_empty() {
            return;
        }
        let mut gone = Vec::with_capacity(victims.len());
        for id in victims {
            let path = self.shared.dir.join(segment::file_name(id));
            match fs::remove_file(&path) {
                Ok(()) => gone.push(id),
                Err(e) if e.kind() == io::ErrorKind::NotFound => gone.push(id),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete spool segment")
                }
            }
        }
        if let Err(e) = self.dir.sync_all() {
            tracing::warn!(error = %e, "cannot sync spool directory after deleting segments");
            return; // keep them listed: their dependants must wait for a durable delete
        }
        let mut ix = self.shared.index();
        for id in gone {
            ix.segments.remove(&id);
        }
    }
}

/// Creates segment `id` with its header, durable (file and directory).
pub(super) fn create_segment(
    dir_path: &std::path::Path,
    dir: &File,
    id: SegId,
) -> io::Result<Active> {
    if id > segment::MAX_SEGMENT_ID {
        // Only a spool with a hand-made file name gets here; a segment
        // named beyond the limit would not be read back.
        return Err(io::Error::other("spool segment numbers exhausted"));
    }
    let path: PathBuf = dir_path.join(segment::file_name(id));
    let salt = random_u32();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)?;
    let res = (&file)
        .write_all(&segment::encode_header(id, salt))
        .and_then(|()| file.sync_data())
        .and_then(|()| dir.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(Active {
        id,
        file: Arc::new(file),
        salt,
        size: SEGMENT_HEADER_LEN as u64,
    })
}

/// A random salt (std's hasher keys come from the OS's randomness).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}
