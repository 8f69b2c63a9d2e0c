//! The writer thread: the only code that appends to the spool, rotates
//! segments and deletes them.
//!
//! It takes every request waiting in its channel as one batch, writes the
//! batch's records with `writev`, makes them durable with one `fdatasync`
//! (group commit), then applies them to the index and answers every caller.
//! So the index only ever shows committed state, and a caller is answered
//! `Ok` only after its record is on disk.
//!
//! A failed write or sync is never retried blindly: the partial write is cut
//! off, every caller in the batch gets an error (nothing in it was
//! acknowledged, so callers redo what they need), and the segment is
//! abandoned. The queue is then `Unhealthy` until a fresh segment can be
//! started, retried with back-off (`health.rs`): no space, no file
//! descriptor and I/O errors all clear by themselves when their cause does.

mod files;
mod health;
mod ops;

pub use health::RESERVE_FILE;

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::codec::Encoded;
use crate::error::QueueError;
use crate::index::{Loc, SegInfo};
use crate::options::Durability;
use crate::segment::SegId;
use crate::shared::Shared;
use crate::types::{MessageId, RecipientStatus, Timestamp, UpdateOutcome};
use ops::{apply_op, clone_err, fail_all, first_segment};

fn open_dir(dir: &std::path::Path) -> Result<File, QueueError> {
    File::open(dir).map_err(|e| QueueError::io(format!("open {}", dir.display()), e))
}

/// Stop collecting a batch beyond this many bytes or requests.
const MAX_BATCH_BYTES: usize = 32 << 20;
const MAX_BATCH_REQUESTS: usize = 4096;
/// How often free space is measured, and a broken segment retried.
#[cfg(not(test))]
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
#[cfg(test)]
const CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// A change to the queue, as a caller asked for it.
pub(crate) enum Op {
    Insert {
        id: MessageId,
        env: crate::packed::Packed,
        statuses: Box<[RecipientStatus]>,
        /// Arrival and priority.
        arrival: (Timestamp, u8),
        body: Bytes,
        /// Made by the queue's own work (a bounce): taken below the
        /// free-space reserve.
        notice: bool,
    },
    Update {
        id: MessageId,
        changes: Vec<(u32, RecipientStatus)>,
        /// End the message's in-flight state.
        release: bool,
    },
    Remove {
        id: MessageId,
    },
    /// An operator's change to a message's recipients (see [`Mark`]),
    /// computed from committed state when admitted into `changes`.
    Mark {
        id: MessageId,
        mark: Mark,
        changes: Vec<(u32, RecipientStatus)>,
    },
    /// Rewrite a live message at the head of the log (compaction).
    Relocate {
        id: MessageId,
        from: Loc,
        body: Bytes,
    },
    /// A state key holds a new value (empty: removed).
    PutState {
        key: Box<str>,
        value: Bytes,
    },
    /// Rewrite a state key's value at the head of the log (compaction),
    /// if its record is still in `from`.
    RelocateState {
        key: Box<str>,
        from: SegId,
    },
}

/// What an operator's mark does to a message's recipients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Pending recipients due later become due at this time ("retry
    /// now"); a message handed out is left alone (its holder decides).
    Due(Timestamp),
    /// Pending recipients become held. A message handed out but not being
    /// sent is taken from its holder; one being sent is left alone.
    Hold,
    /// Held recipients become pending, due at this time.
    Release(Timestamp),
}

/// What a committed request did.
pub(crate) enum Done {
    Inserted,
    Updated(UpdateOutcome),
    Removed,
    /// Relocated, or skipped because the message changed or went away.
    Relocated,
    /// This many recipients were marked (0: none, or the message was busy).
    Marked(usize),
    /// A state key was written (or its relocation skipped).
    State,
}

pub(crate) type Reply = oneshot::Sender<Result<Done, QueueError>>;

/// One caller's request: the operation, its encoded record (relocations are
/// encoded by the writer), and where to send the answer.
pub(crate) struct Request {
    pub op: Op,
    pub rec: Option<Encoded>,
    pub reply: Reply,
}

pub(crate) enum Cmd {
    Write(Request),
    /// A background recovery merged the old segments into the index:
    /// delete what it found deletable, wake the compactor, and answer how
    /// many segments went.
    Recovered(std::sync::mpsc::SyncSender<u64>),
    Shutdown,
}

/// Requests collected for one commit.
#[derive(Default)]
struct Batch {
    reqs: Vec<Request>,
    bytes: usize,
    stop: bool,
    recovered: Option<std::sync::mpsc::SyncSender<u64>>,
}

impl Batch {
    fn take(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Write(r) => {
                self.bytes += r.rec.as_ref().map_or(0, Encoded::len);
                self.reqs.push(r);
            }
            Cmd::Recovered(reply) => self.recovered = Some(reply),
            Cmd::Shutdown => self.stop = true,
        }
    }
}

pub(crate) struct Active {
    id: SegId,
    file: Arc<File>,
    salt: u32,
    size: u64,
}

impl Active {
    pub fn id(&self) -> SegId {
        self.id
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Cmd>,
    dir: File,
    active: Active,
    /// Set after a failed write or sync: the active segment must not be
    /// appended to, and nothing is written until a fresh one is started.
    broken: Option<health::Broken>,
    /// Free space and the reserve.
    space: health::Space,
    /// Since when something written is not yet synced: buffered mode, or
    /// status records waiting for the next sync (see [`Writer::must_sync`]).
    /// Segments are deleted only while this is `None`.
    unsynced: Option<Instant>,
}

impl Writer {
    /// Creates the writer with a fresh active segment `first_id`.
    pub fn start(
        shared: Arc<Shared>,
        rx: Receiver<Cmd>,
        first_id: SegId,
    ) -> Result<Self, QueueError> {
        let dir = open_dir(&shared.dir)?;
        let active = first_segment(&shared, &dir, first_id)?;
        Ok(Self::start_on(shared, rx, dir, active))
    }

    /// Creates the writer on an active segment already started (with
    /// [`Writer::fresh_segment`]).
    pub fn start_on(shared: Arc<Shared>, rx: Receiver<Cmd>, dir: File, active: Active) -> Self {
        let mut w = Self {
            shared,
            rx,
            dir,
            active,
            broken: None,
            space: Default::default(),
            unsynced: None,
        };
        w.register_active();
        w.check_space();
        w.hold_reserve();
        w
    }

    /// Starts segment `id` for a writer to come, with the spool
    /// directory's handle; an error if it cannot be created (no space).
    pub fn fresh_segment(dir: &std::path::Path, id: SegId) -> Result<(File, Active), QueueError> {
        let dir_file = open_dir(dir)?;
        let active = files::create_segment(dir, &dir_file, id)
            .map_err(|e| QueueError::io(format!("create segment {id:016x}"), e))?;
        Ok((dir_file, active))
    }

    /// Makes the active segment known to the index (a recovered segment
    /// appended to at start keeps what recovery counted in it).
    fn register_active(&self) {
        let mut ix = self.shared.index();
        ix.segments
            .entry(self.active.id)
            .or_insert_with(|| SegInfo {
                refs: 0,
                deps: Default::default(),
                size: self.active.size,
                live: 0,
                salt: self.active.salt,
                file: Some(self.active.file.clone()),
            });
        ix.active = self.active.id;
    }

    /// Runs until shut down; every request gets an answer.
    pub fn run(mut self) {
        self.collect_garbage();
        while let Some(first) = self.next_command() {
            let mut batch = Batch::default();
            batch.take(first);
            while !batch.stop
                && batch.bytes < MAX_BATCH_BYTES
                && batch.reqs.len() < MAX_BATCH_REQUESTS
            {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.take(cmd),
                    Err(_) => break,
                }
            }
            if !batch.reqs.is_empty() {
                self.commit(batch.reqs);
            }
            if let Some(reply) = batch.recovered {
                let before = self.shared.index().segments.len();
                self.collect_garbage();
                self.maybe_wake_compactor();
                let after = self.shared.index().segments.len();
                let _ = reply.send(before.saturating_sub(after) as u64);
            }
            if batch.stop {
                break;
            }
        }
        self.flush();
    }

    /// Waits for the next command. While idle it still does its chores:
    /// it syncs what waits for a sync (buffered mode, deferred status
    /// records) once its window ends, and while full it re-measures free
    /// space and retries a fresh segment, so the queue recovers by itself
    /// (the handle refuses new messages early while full, so no request
    /// comes to trigger the retry).
    fn next_command(&mut self) -> Option<Cmd> {
        loop {
            let flush = self.unsynced.map(|since| {
                let window = match self.shared.opts.durability {
                    Durability::Buffered { flush_interval } => flush_interval,
                    Durability::Fsync => self.shared.opts.status_sync_delay,
                };
                window.saturating_sub(since.elapsed())
            });
            if flush.is_some_and(|left| left.is_zero()) {
                // Due even while requests keep coming.
                self.flush();
                self.collect_garbage();
                continue;
            }
            let check = (self.is_broken() || self.space.low.is_some()).then_some(CHECK_INTERVAL);
            let Some(wait) = [flush, check].into_iter().flatten().min() else {
                return self.rx.recv().ok();
            };
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => return Some(cmd),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    // A sync that came due is done at the top of the loop.
                    self.check_space();
                    let _ = self.ensure_writable();
                }
            }
        }
    }

    /// Whether a batch is synced before its callers are answered: always
    /// with fsync durability, except a batch of status records alone when
    /// `status_sync_delay` allows: those are written at once (a crash of
    /// the process cannot lose them) and synced by the next batch that
    /// must be, or when the delay ends.
    fn must_sync(&self, staged: &[Request]) -> bool {
        match self.shared.opts.durability {
            Durability::Buffered { .. } => false,
            Durability::Fsync => {
                self.shared.opts.status_sync_delay.is_zero()
                    || staged.iter().any(|r| !matches!(r.op, Op::Update { .. }))
            }
        }
    }

    /// Writes, syncs, applies and answers one batch.
    fn commit(&mut self, reqs: Vec<Request>) {
        self.check_space();
        if let Err(e) = self.ensure_writable() {
            for r in reqs {
                let _ = r.reply.send(Err(clone_err(&e)));
            }
            return;
        }
        let mut staged = self.admit(reqs);
        if staged.is_empty() {
            return;
        }
        if self.active.size >= self.shared.opts.segment_size
            && let Err(e) = self.rotate()
        {
            let err = self.write_failed(self.active.size, e);
            fail_all(staged, &err);
            return;
        }
        let base = self.active.size;
        let mut locs = Vec::with_capacity(staged.len());
        let mut end = base;
        for r in &mut staged {
            let rec = r.rec.as_mut().expect("admitted requests are encoded");
            rec.seal(self.active.salt);
            locs.push(Loc {
                seg: self.active.id,
                offset: end as u32,
                len: rec.len() as u32,
                body_offset: rec.head.len() as u32,
            });
            end += rec.len() as u64;
        }
        let synced = self.must_sync(&staged);
        if let Err(e) = self.write_batch(&staged, synced) {
            let err = self.write_failed(base, e);
            fail_all(staged, &err);
            return;
        }
        self.shared.io.add(staged.len(), end - base, synced);
        self.wrote(end - base);
        self.active.size = end;
        let replies = self.apply(staged, locs);
        for (reply, res) in replies {
            let _ = reply.send(res);
        }
        self.collect_garbage();
        self.maybe_wake_compactor();
    }

    /// Validates requests against committed state and encodes relocations.
    /// Relocations go first: each is a snapshot of committed state, so any
    /// status record in the same batch must come after it in the log.
    ///
    /// Below the free-space reserve, new messages are refused (also when
    /// the bytes this batch would add take free space under it), and a
    /// deferral (an update that leaves every recipient it changes pending)
    /// is applied in memory only: its message is not handed out again
    /// before its retry time, and if Tern stops first it is simply retried
    /// sooner. Outcomes that end recipients are always written.
    fn admit(&mut self, mut reqs: Vec<Request>) -> Vec<Request> {
        reqs.sort_by_key(|r| !matches!(r.op, Op::Relocate { .. } | Op::RelocateState { .. }));
        let mut room = ops::Room {
            left: self.free_estimate(),
            min: self.shared.opts.min_free_space,
            low: self.space.low.clone(),
            touched: Default::default(),
        };
        let ix = &mut *self.shared.index();
        reqs.into_iter()
            .filter_map(|r| ops::judge(ix, r, &mut room))
            .collect()
    }

    fn write_batch(&mut self, staged: &[Request], sync: bool) -> io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        self.shared.faults.before_write()?;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(staged.len() * 2);
        for r in staged {
            let rec = r.rec.as_ref().expect("encoded");
            slices.push(IoSlice::new(&rec.head));
            if !rec.body.is_empty() {
                slices.push(IoSlice::new(&rec.body));
            }
        }
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = (&*self.active.file).write_vectored(rest)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        if !sync {
            self.unsynced.get_or_insert_with(Instant::now);
            return Ok(());
        }
        self.sync_active()?;
        self.unsynced = None;
        Ok(())
    }

    /// Applies committed records to the index and builds the answers.
    fn apply(
        &self,
        staged: Vec<Request>,
        locs: Vec<Loc>,
    ) -> Vec<(Reply, Result<Done, QueueError>)> {
        let mut ix = self.shared.index();
        if let Some(seg) = ix.segments.get_mut(&self.active.id) {
            seg.size = self.active.size;
        }
        let mut out = Vec::with_capacity(staged.len());
        for (r, loc) in staged.into_iter().zip(locs) {
            let res = apply_op(&mut ix, r.op, loc);
            out.push((r.reply, res));
        }
        self.shared
            .messages
            .store(ix.message_count(), std::sync::atomic::Ordering::Relaxed);
        self.shared
            .body_bytes
            .store(ix.body_bytes(), std::sync::atomic::Ordering::Relaxed);
        out
    }

    fn maybe_wake_compactor(&self) {
        let (total, live) = self.shared.index().footprint();
        if crate::compactor::worth_compacting(&self.shared.opts, total, live) {
            self.shared.compactor_wake.notify();
        }
    }
}
