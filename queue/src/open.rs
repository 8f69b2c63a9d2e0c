//! Opening a spool: taking its lock, recovering it (in the foreground, or
//! in the background after a glance), and starting the writer and the
//! compactor.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::compactor;
use crate::error::QueueError;
use crate::index::Index;
use crate::options::{QueueOptions, SEGMENT_SIZE_RANGE};
use crate::queue::{Queue, now_micros};
use crate::recovery::{self, LOCK_FILE, Recovery, RecoveryReport};
use crate::segment::SegId;
use crate::shared::Shared;
use crate::types::MessageId;
use crate::writer::{Cmd, Writer};

impl Queue {
    /// Opens (creating if needed) and recovers the spool, then starts the
    /// writer and compactor threads. Blocking: call it from a thread where
    /// blocking is fine (for example `spawn_blocking`).
    ///
    /// With [`QueueOptions::recover_in_background`], returns after a
    /// glance (the report then counts only what the glance read) and
    /// recovers the messages on a thread of its own: see
    /// [`Queue::recovered`].
    pub fn open(opts: QueueOptions) -> Result<(Queue, RecoveryReport), QueueError> {
        if !SEGMENT_SIZE_RANGE.contains(&opts.segment_size) {
            return Err(QueueError::Invalid(
                "segment_size must be between 64 KiB and 1 GiB",
            ));
        }
        let started = Instant::now();
        let dir = opts.path.clone();
        create_durable_dir(&dir)?;
        let lock_file = take_lock(&dir)?;
        let mut report = RecoveryReport::default();
        let ids = recovery::list_segments(&dir, &mut report)?;
        if opts.recover_in_background
            && let Some(&last) = ids.last()
        {
            let glance = recovery::glance(&dir, &ids)?;
            if let Some((seg, valid_end, bytes)) = glance.torn_tail {
                let path = dir.join(crate::segment::file_name(seg));
                tracing::warn!(path = %path.display(), offset = valid_end, bytes, "truncating torn tail of the last spool segment");
                recovery::truncate(&path, valid_end)?;
                report.torn_tail_bytes += bytes;
            }
            match Writer::fresh_segment(&dir, last + 1) {
                Ok(fresh) => {
                    let early = Early { ids, glance, fresh };
                    return open_early(opts, lock_file, early, (report, started));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no fresh spool segment can be started: recovering before opening");
                }
            }
        }
        let budget = opts.body_cache;
        let loaded = recovery::load_segments(&dir, &ids, true, budget, (report, started), None)?;
        let mut report = loaded.report;
        let first_segment = loaded.last_segment.map_or(1, |last| last + 1);
        let mut index = loaded.index;
        index.active = first_segment;
        let segments_before = index.segments.len();
        let shared = Arc::new(Shared::new(
            opts,
            index,
            loaded.max_id,
            Recovery::done(&report),
        ));
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::start(shared.clone(), rx, first_segment)?;
        writer.collect_garbage();
        report.deleted_segments =
            (segments_before + 1).saturating_sub(shared.index().segments.len()) as u64;
        let threads = vec![
            spawn("tern-queue-writer", move || writer.run())?,
            spawn_compactor(&shared, &tx)?,
        ];
        Ok((handle(shared, tx, threads, lock_file), report))
    }
}

/// What a background open starts from.
struct Early {
    /// The old segments, ascending.
    ids: Vec<SegId>,
    glance: recovery::Glance,
    /// The fresh segment new writes go to, and the directory's handle.
    fresh: (File, crate::writer::Active),
}

/// Opens on a fresh segment with the glance's states, and recovers the old
/// segments on a thread that merges them into the index when done.
fn open_early(
    opts: QueueOptions,
    lock_file: File,
    early: Early,
    (mut report, started): (RecoveryReport, Instant),
) -> Result<(Queue, RecoveryReport), QueueError> {
    let Early { ids, glance, fresh } = early;
    let mentions = glance.mentions;
    let index = Index::recovering(opts.body_cache, glance.states, fresh.1.id());
    let running = Recovery::Running { released: 0 };
    let shared = Arc::new(Shared::new(opts, index, glance.max_id, running));
    let (tx, rx) = mpsc::channel();
    let writer = Writer::start_on(shared.clone(), rx, fresh.0, fresh.1);
    // The full recovery's report starts from what the open found (ignored
    // files, a torn tail cut); the glance's figures are this report's own.
    let full = report.clone();
    report.bytes_read = glance.bytes;
    report.elapsed = started.elapsed();
    let threads = vec![
        spawn("tern-queue-writer", move || writer.run())?,
        spawn_compactor(&shared, &tx)?,
        spawn("tern-queue-recover", {
            let (shared, tx) = (shared.clone(), tx.clone());
            move || recover_in_background(shared, tx, (ids, mentions), (full, started))
        })?,
    ];
    Ok((handle(shared, tx, threads, lock_file), report))
}

/// Recovers the old segments, releasing each message to the live index
/// as soon as its last record has been read, and merges the rest.
fn recover_in_background(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Cmd>,
    (ids, mentions): (Vec<SegId>, Vec<(SegId, Vec<u64>)>),
    (report, started): (RecoveryReport, Instant),
) {
    let mut plan = recovery::release_plan(mentions);
    let mut released = 0;
    // What the released messages take out of the recovered index's figures.
    let mut moved = (0, 0);
    let mut after_segment = |seg: SegId, old: &mut Index| {
        if let Some(ids) = plan.remove(&seg) {
            let before = old.stats();
            released = release(&shared, old, &ids, released);
            let after = old.stats();
            moved.0 += before.recipients - after.recipients;
            moved.1 += before.body_bytes - after.body_bytes;
            let running = Recovery::Running { released };
            shared.recovery.send_replace(running);
        }
    };
    let background = recovery::Background {
        stop: &shared.stopping,
        after_segment: &mut after_segment,
    };
    let loaded = recovery::load_segments(
        &shared.dir,
        &ids,
        true,
        shared.opts.body_cache,
        (report, started),
        Some(background),
    );
    #[cfg(any(test, feature = "fault-injection"))]
    let loaded = loaded.and_then(|l| shared.faults.recovery_outcome().map(|()| l));
    let outcome = match loaded {
        Ok(loaded) => {
            #[cfg(any(test, feature = "fault-injection"))]
            shared.faults.before_release(u64::MAX);
            let mut report = loaded.report;
            report.messages += released;
            report.recipients += moved.0;
            report.body_bytes += moved.1;
            {
                let mut ix = shared.index();
                ix.absorb(loaded.index);
                shared.messages.store(ix.message_count(), Ordering::Relaxed);
                shared.body_bytes.store(ix.body_bytes(), Ordering::Relaxed);
            }
            let (reply, deleted) = mpsc::sync_channel(1);
            if tx.send(Cmd::Recovered(reply)).is_ok() {
                report.deleted_segments = deleted.recv().unwrap_or(0);
            }
            report.elapsed = started.elapsed();
            Recovery::done(&report)
        }
        Err(e) => {
            shared.index().recovery_failed();
            match e {
                QueueError::Closed => {
                    Recovery::Failed("the queue closed before recovery ended".into())
                }
                e => {
                    tracing::error!(error = %e, released, "background recovery of the spool failed: the old spool files stay on disk, untouched, until the next start (the messages released from them are delivered meanwhile)");
                    Recovery::Failed(e.to_string().into())
                }
            }
        }
    };
    shared.recovery.send_replace(outcome);
}

/// Messages moved to the live index per hold of its lock: the writer's
/// commits wait meanwhile (a couple of milliseconds).
const RELEASE_BATCH: usize = 2_000;

/// Moves messages `ids` of the recovered index `old` to the live one;
/// returns the count released so far, `released` before.
fn release(shared: &Shared, old: &mut Index, ids: &[MessageId], released: u64) -> u64 {
    let mut moved = released;
    for batch in ids.chunks(RELEASE_BATCH) {
        #[cfg(any(test, feature = "fault-injection"))]
        shared.faults.before_release(moved);
        let mut live = shared.index();
        moved += old.release_into(&mut live, batch);
        shared
            .messages
            .store(live.message_count(), Ordering::Relaxed);
        shared
            .body_bytes
            .store(live.body_bytes(), Ordering::Relaxed);
    }
    moved
}

fn spawn_compactor(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Cmd>,
) -> Result<JoinHandle<()>, QueueError> {
    let (shared, tx) = (shared.clone(), tx.clone());
    spawn("tern-queue-compact", move || compactor::run(shared, tx))
}

fn handle(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Cmd>,
    threads: Vec<JoinHandle<()>>,
    lock_file: File,
) -> Queue {
    Queue {
        shared,
        tx,
        threads: Mutex::new(threads),
        lock: Mutex::new(Some(lock_file)),
    }
}

impl Shared {
    /// The state of a queue opening on `index`, whose spool's highest id is
    /// `max_id`.
    fn new(opts: QueueOptions, index: Index, max_id: u64, recovery: Recovery) -> Self {
        #[cfg(any(test, feature = "fault-injection"))]
        let faults = opts.faults.clone().unwrap_or_default();
        Shared {
            messages: index.message_count().into(),
            body_bytes: index.body_bytes().into(),
            index: Mutex::new(index),
            health: Default::default(),
            io: Default::default(),
            next_id: (max_id + 1).max(now_micros()).into(),
            dir: opts.path.clone(),
            opts,
            compactor_wake: Default::default(),
            stopping: Default::default(),
            recovery: tokio::sync::watch::Sender::new(recovery),
            #[cfg(any(test, feature = "fault-injection"))]
            faults,
        }
    }
}

/// Creates the spool directory if needed and makes its entry in the parent
/// durable, so a power loss right after the first acknowledgement cannot
/// take the whole directory with it.
fn create_durable_dir(dir: &Path) -> Result<(), QueueError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| QueueError::io(format!("create {}", dir.display()), e))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| QueueError::io(format!("sync {}", parent.display()), e))
}

fn take_lock(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| QueueError::io(format!("open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(QueueError::Locked(dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => {
            Err(QueueError::io(format!("lock {}", path.display()), e))
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, QueueError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| QueueError::io(format!("spawn {name}"), e))
}
