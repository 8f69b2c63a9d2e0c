//! The writer's segment files: creating, rotating, syncing and deleting them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::{Active, Writer};
use crate::segment::{self, SEGMENT_HEADER_LEN, SegId};

impl Writer {
    /// Whether the batch about to be written starts a new segment: the
    /// active one is full, or it was not written ahead and a segment that
    /// was is ready (right after open, so the saving starts at once).
    pub(super) fn should_rotate(&self) -> bool {
        self.active.size >= self.shared.opts.segment_size
            || (!self.active.preallocated
                && self.shared.opts.preallocate
                && self.shared.prepared.is_ready())
    }

    /// Seals the active segment and starts the next one: the segment
    /// written ahead if one is ready, else a new empty file.
    pub(super) fn rotate(&mut self) -> io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        self.shared.faults.before_write()?;
        if self.unsynced.is_some() {
            self.active.file.sync_data()?;
            self.unsynced = None;
        }
        let id = self.next_segment_id();
        let ready = match self.shared.opts.preallocate {
            true => self.shared.prepared.take(),
            false => None,
        };
        let next = match ready {
            Some(file) => {
                let adopted = adopt_prepared(&self.shared.dir, &self.dir, id, file);
                match adopted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use the spool segment written ahead; starting an empty one");
                        create_segment(&self.shared.dir, &self.dir, id)?
                    }
                }
            }
            None => create_segment(&self.shared.dir, &self.dir, id)?,
        };
        if self.active.preallocated {
            // The zeros the sealed segment did not use (recovery would
            // drop them too).
            let _ = self.active.file.set_len(self.active.size);
        }
        let lasted = self.active_since.elapsed();
        self.active = next;
        self.active_since = std::time::Instant::now();
        if self.shared.opts.preallocate && lasted >= super::prepare::ASK_IF_LASTED {
            self.shared.prepared.ask(); // after the rename above
        }
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
    let path: PathBuf = dir_path.join(segment::file_name(id));
    let salt = random_u32();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
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
        preallocated: false,
    })
}

/// Makes the file written ahead segment `id`: its header over the first
/// zeros, then its name, both durable.
fn adopt_prepared(
    dir_path: &std::path::Path,
    dir: &File,
    id: SegId,
    file: File,
) -> io::Result<Active> {
    use std::os::unix::fs::FileExt;
    let salt = random_u32();
    file.write_all_at(&segment::encode_header(id, salt), 0)?;
    file.sync_data()?;
    let from = dir_path.join(super::PREPARED_FILE);
    fs::rename(&from, dir_path.join(segment::file_name(id)))?;
    dir.sync_all()?;
    Ok(Active {
        id,
        file: Arc::new(file),
        salt,
        size: SEGMENT_HEADER_LEN as u64,
        preallocated: true,
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
