//! The [`Queue`] handle (opened in `open.rs`): the write API (answered after commit),
//! and the read API (served from the in-memory index).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::body;
use crate::codec;
use crate::error::QueueError;
use crate::index::{BodySource, Index};
use crate::recovery::{self, RecoveryReport};
use crate::shared::{Health, IoStats, Shared, lock};
use crate::types::{
    DomainCount, MessageId, MessageInfo, NewMessage, QueueStats, RecipientStatus, Timestamp,
    UpdateOutcome,
};
use crate::writer::{Cmd, Done, Mark, Op, Request};

/// A durable message queue in one spool directory. Cheap to share behind an
/// `Arc`; every method takes `&self`.
pub struct Queue {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Cmd>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// The spool's lock, held until [`Queue::close`].
    pub(crate) lock: Mutex<Option<File>>,
}

impl Queue {
    /// Makes `msg` durable and returns its id. Returns only after the
    /// message's record is on stable storage (see [`crate::Durability`]);
    /// concurrent calls share one write and one sync.
    ///
    /// If the future is dropped after the request was handed over, the
    /// message may still be queued (the caller never saw an id, so the
    /// client retries and the message may be delivered twice, as RFC 5321
    /// allows; it is never lost).
    pub async fn enqueue(&self, msg: NewMessage) -> Result<MessageId, QueueError> {
        self.insert(msg, false).await
    }

    /// Like [`Queue::enqueue`] for a message the queue's own work makes (a
    /// bounce): it is taken below the free-space reserve as outcomes are,
    /// since it is what a failure's outcome consists of.
    pub async fn enqueue_notice(&self, msg: NewMessage) -> Result<MessageId, QueueError> {
        self.insert(msg, true).await
    }

    /// Like [`Queue::enqueue`] for a message that comes with its
    /// recipients' statuses (one per recipient, in envelope order): a
    /// message handed over by another node, with what was already done
    /// and tried. Recipients already delivered or failed are kept as such
    /// (never sent again); the message is due when its pending ones are.
    pub async fn adopt(
        &self,
        msg: NewMessage,
        statuses: Vec<RecipientStatus>,
    ) -> Result<MessageId, QueueError> {
        if statuses.len() != msg.envelope.recipients.len() {
            return Err(QueueError::Invalid(
                "an adopted message needs one status per recipient",
            ));
        }
        if statuses.iter().all(|s| s.state.is_final()) {
            return Err(QueueError::Invalid(
                "an adopted message needs a pending recipient",
            ));
        }
        self.insert_with(msg, false, Some(statuses.into())).await
    }

    async fn insert(&self, msg: NewMessage, notice: bool) -> Result<MessageId, QueueError> {
        self.insert_with(msg, notice, None).await
    }

    async fn insert_with(
        &self,
        msg: NewMessage,
        notice: bool,
        statuses: Option<Box<[RecipientStatus]>>,
    ) -> Result<MessageId, QueueError> {
        codec::check_message(&msg.envelope, msg.body.len()).map_err(QueueError::Invalid)?;
        match self.health() {
            Health::Healthy => {}
            Health::Full(_) if notice => {}
            Health::Full(r) => return Err(QueueError::Full(r)),
            Health::Unhealthy(r) => return Err(QueueError::Unhealthy(r)),
        }
        let id = msg.id.unwrap_or_else(|| self.allocate_id());
        let n = msg.envelope.recipients.len();
        let statuses =
            statuses.unwrap_or_else(|| vec![RecipientStatus::pending(msg.first_attempt); n].into());
        let priority = msg.priority.min(crate::types::LOWEST_PRIORITY);
        let rec = codec::encode_message(
            id,
            (msg.arrival, priority),
            &msg.envelope,
            &statuses,
            msg.body.clone(),
        );
        let op = Op::Insert {
            id,
            env: crate::packed::Packed::pack(&msg.envelope),
            statuses,
            arrival: (msg.arrival, priority),
            body: msg.body,
            notice,
        };
        self.submit(op, Some(rec)).await.map(|_| id)
    }

    /// A fresh id, unique in this spool, for a message about to be
    /// enqueued. An id allocated but never enqueued is simply unused.
    pub fn allocate_id(&self) -> MessageId {
        MessageId::from_u64(self.shared.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Messages queued (with a pending recipient); a lock-free read, cheap
    /// enough for every SMTP transaction.
    pub fn message_count(&self) -> u64 {
        self.shared.messages.load(Ordering::Relaxed)
    }

    /// Bytes of the bodies of queued messages; a lock-free read like
    /// [`Queue::message_count`].
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }

    /// Records new statuses for some recipients of `id` (by envelope index),
    /// durably, and ends the message's in-flight state. When no recipient is
    /// left pending, the message is removed.
    pub async fn update(
        &self,
        id: MessageId,
        changes: Vec<(u32, RecipientStatus)>,
    ) -> Result<UpdateOutcome, QueueError> {
        self.write_status(id, changes, true).await
    }

    /// Makes the pending recipients of `id` due at `at` if they were due
    /// later (an operator's "retry now"), durably; a message handed out is
    /// left alone (its holder decides). Returns how many recipients moved.
    pub async fn reschedule(&self, id: MessageId, at: Timestamp) -> Result<usize, QueueError> {
        self.mark(id, Mark::Due(at)).await
    }

    /// Holds the pending recipients of `id` (an operator's hold, like
    /// `postsuper -h`), durably: they are kept, never due and never
    /// expired, until [`Queue::release_held`]. A message handed out but
    /// not being sent is taken from its holder; one being sent is left
    /// alone (0). Returns how many recipients were held.
    pub async fn hold(&self, id: MessageId) -> Result<usize, QueueError> {
        self.mark(id, Mark::Hold).await
    }

    /// Makes the held recipients of `id` pending again, due at `at`,
    /// durably. Returns how many were released.
    pub async fn release_held(&self, id: MessageId, at: Timestamp) -> Result<usize, QueueError> {
        self.mark(id, Mark::Release(at)).await
    }

    async fn mark(&self, id: MessageId, mark: Mark) -> Result<usize, QueueError> {
        let op = Op::Mark {
            id,
            mark,
            changes: Vec::new(),
        };
        match self.submit(op, None).await? {
            Done::Marked(n) => Ok(n),
            _ => Err(QueueError::Invalid(
                "the writer answered a mark with another kind",
            )),
        }
    }

    /// Like [`Queue::update`] but the message stays handed out: for a
    /// delivery that records some recipients while others of the same
    /// message are still being tried.
    pub async fn record(
        &self,
        id: MessageId,
        changes: Vec<(u32, RecipientStatus)>,
    ) -> Result<UpdateOutcome, QueueError> {
        self.write_status(id, changes, false).await
    }

    async fn write_status(
        &self,
        id: MessageId,
        changes: Vec<(u32, RecipientStatus)>,
        release: bool,
    ) -> Result<UpdateOutcome, QueueError> {
        if changes.is_empty() {
            return Err(QueueError::Invalid(
                "an update needs at least one recipient",
            ));
        }
        let rec = codec::encode_status(id, &changes);
        match self
            .submit(
                Op::Update {
                    id,
                    changes,
                    release,
                },
                Some(rec),
            )
            .await?
        {
            Done::Updated(outcome) => Ok(outcome),
            _ => Err(QueueError::Invalid(
                "the writer answered an update with another kind",
            )),
        }
    }

    /// Keeps `value` under `key` durably, beside the messages and with the
    /// same crash-safety contract: it survives a crash once this returns,
    /// a later value of the key replaces it, an empty value removes it.
    /// For the application's own small state (operators' suspensions,
    /// warm-up counts): keys of at most 255 bytes, values of at most
    /// 16 MiB. Written even below the free-space reserve (like outcomes).
    pub async fn put_state(&self, key: &str, value: Bytes) -> Result<(), QueueError> {
        if key.is_empty() || key.len() > codec::MAX_STATE_KEY {
            return Err(QueueError::Invalid("a state key is 1 to 255 bytes"));
        }
        if value.len() > codec::MAX_STATE_VALUE {
            return Err(QueueError::Invalid("a state value is at most 16 MiB"));
        }
        let rec = codec::encode_state(key, &value);
        let op = Op::PutState {
            key: key.into(),
            value,
        };
        self.submit(op, Some(rec)).await.map(|_| ())
    }

    /// The value kept under `key`, if any.
    pub fn state(&self, key: &str) -> Option<Bytes> {
        self.shared.index().state(key)
    }

    /// The keys that hold a value and start with `prefix`, in order.
    pub fn state_keys(&self, prefix: &str) -> Vec<String> {
        self.shared.index().state_keys(prefix)
    }

    /// Removes a message whatever its recipients' states (purge), durably.
    pub async fn remove(&self, id: MessageId) -> Result<(), QueueError> {
        self.submit(Op::Remove { id }, Some(codec::encode_remove(id)))
            .await
            .map(|_| ())
    }

    async fn submit(&self, op: Op, rec: Option<codec::Encoded>) -> Result<Done, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Cmd::Write(Request { op, rec, reply }))
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Hands out up to `limit` messages with a recipient due at or before
    /// `now`, most urgent first, then oldest due first, and marks them
    /// taken: they are not handed out again until [`Queue::update`] or
    /// [`Queue::release`]. A holder may keep a message for as long as it
    /// waits for its turn; each send of it goes between [`Queue::begin`]
    /// and [`Queue::end`]. Hand-outs are not persisted: after a restart
    /// everything is due.
    pub fn take_due(&self, now: Timestamp, limit: usize) -> Vec<MessageInfo> {
        self.shared.index().take_due(now, limit)
    }

    /// A send of message `id`, handed out as generation `handout`, starts: the
    /// message's current metadata, counted as being sent (operators'
    /// actions wait for it) until [`Queue::end`]. `None` if the hand-out
    /// is stale: the message was removed, claimed by an operator, or
    /// released and handed out again since.
    pub fn begin(&self, id: MessageId, handout: u32) -> Option<MessageInfo> {
        self.shared.index().begin(id, handout)
    }

    /// A send that [`Queue::begin`] started is over (call it after the
    /// send's statuses are written).
    pub fn end(&self, id: MessageId) {
        self.shared.index().end(id)
    }

    /// True while hand-out `handout` of message `id` still holds it.
    pub fn is_current(&self, id: MessageId, handout: u32) -> bool {
        self.shared.index().is_current(id, handout)
    }

    /// How many times a handed-out message has been taken from its holder
    /// (claimed or removed by an operator) since open: a holder that sees
    /// it change checks its hand-outs with [`Queue::is_current`].
    pub fn disturbed(&self) -> u64 {
        self.shared.index().disturbed
    }

    /// Ends a message's hand-out without changing it. False if the
    /// message is not queued.
    pub fn release(&self, id: MessageId) -> bool {
        self.shared.index().release(id)
    }

    /// Takes message `id`, due or not, and hands it out as
    /// [`Queue::take_due`] would: for an operator acting on one message (a
    /// bounce). A message waiting with another holder changes hands (that
    /// hand-out becomes stale). `None` if it is gone or being sent. End it
    /// with [`Queue::update`] or [`Queue::release`].
    pub fn claim(&self, id: MessageId) -> Option<MessageInfo> {
        self.shared.index().claim(id)
    }

    /// When the next message not handed out is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.shared.index().next_due()
    }

    /// One message's metadata.
    pub fn get(&self, id: MessageId) -> Option<MessageInfo> {
        self.shared.index().entry(id).map(|e| e.info(id))
    }

    /// Up to `limit` messages with ids after `after`, in id order: page
    /// through the whole queue with bounded memory.
    pub fn page(&self, after: Option<MessageId>, limit: usize) -> Vec<MessageInfo> {
        self.shared.index().page(after, limit)
    }

    /// A message's body: from RAM if still cached, otherwise read back from
    /// its segment and checksum-verified. Blocking when it reads: call it
    /// from a thread where a short disk read is fine.
    pub fn body(&self, id: MessageId) -> Result<Bytes, QueueError> {
        let source = self
            .shared
            .index()
            .body_source(id)
            .ok_or(QueueError::NotFound(id))?;
        match source {
            BodySource::Cached(b) => Ok(b),
            BodySource::OnDisk { file, loc, salt } => {
                body::read_record_body(&self.shared, &file, loc, salt)
            }
        }
    }

    /// A message's body if it is still cached in RAM: never blocks, so an
    /// async caller can try it before sending [`Queue::body`] to a thread.
    pub fn cached_body(&self, id: MessageId) -> Option<Bytes> {
        match self.shared.index().body_source(id)? {
            BodySource::Cached(b) => Some(b),
            BodySource::OnDisk { .. } => None,
        }
    }

    /// Totals of what is queued and of the files on disk.
    pub fn stats(&self) -> QueueStats {
        self.shared.index().stats()
    }

    /// Pending messages and recipients per recipient domain.
    pub fn domains(&self) -> Vec<DomainCount> {
        self.shared.index().domains()
    }

    /// What the writer has done since open (batches, records, bytes, syncs).
    pub fn io_stats(&self) -> IoStats {
        self.shared.io.get()
    }

    /// Where the recovery of the spool stands: `Running` while a
    /// background recovery reads the old segments (a message is handed
    /// out, listed and counted once the last segment holding a record of
    /// it has been read), `Done` otherwise.
    pub fn recovery(&self) -> crate::Recovery {
        self.shared.recovery.borrow().clone()
    }

    /// Whether a background recovery is still reading the old segments.
    pub fn is_recovering(&self) -> bool {
        matches!(
            *self.shared.recovery.borrow(),
            crate::Recovery::Running { .. }
        )
    }

    /// Follows the recovery: a new value each time a background recovery
    /// has released messages to the queue, and when it ends.
    pub fn watch_recovery(&self) -> tokio::sync::watch::Receiver<crate::Recovery> {
        self.shared.recovery.subscribe()
    }

    /// Waits until recovery has ended (at once when the queue was opened
    /// in the foreground): every message of the spool is then in the
    /// queue, unless it failed. Callers that act on the whole queue (a
    /// bulk hold, a drain) wait for this first.
    pub async fn recovered(&self) -> crate::Recovery {
        let mut rx = self.shared.recovery.subscribe();
        let out = rx
            .wait_for(|r| !matches!(r, crate::Recovery::Running { .. }))
            .await
            .map(|r| r.clone());
        // The sender lives as long as the queue's state: never closed here.
        out.unwrap_or_else(|_| crate::Recovery::Failed("closed".into()))
    }

    /// Whether new messages are accepted (cheap: one atomic load when healthy).
    pub fn health(&self) -> Health {
        self.shared.health.get()
    }

    /// When [`Queue::health`] last changed (`None`: healthy since open).
    pub fn health_since(&self) -> Option<std::time::SystemTime> {
        self.shared.health.since()
    }

    /// Stops the compactor and the writer after the writes already handed
    /// over are committed; later calls fail with [`QueueError::Closed`].
    /// Blocking; idempotent.
    pub fn close(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.compactor_wake.notify();
        #[cfg(any(test, feature = "fault-injection"))]
        self.shared.faults.release_recovery();
        let _ = self.tx.send(Cmd::Shutdown);
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        // Nothing more is written: another queue may open the spool now,
        // even while this handle lingers.
        lock(&self.lock).take();
    }

    /// Fault injection for tests of what callers do when the disk fails.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn faults(&self) -> &crate::faults::Faults {
        &self.shared.faults
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

/// A read-only view of a spool, for tools that run beside (or without) the
/// daemon, such as `tern queue summary`. Taken without the lock and without
/// repairing anything; if the daemon is writing, the view is a moment's
/// approximation.
pub struct SpoolSnapshot {
    index: Index,
}

impl SpoolSnapshot {
    /// Reads the spool at `path` without changing it.
    pub fn read(path: &Path) -> Result<(SpoolSnapshot, RecoveryReport), QueueError> {
        let loaded = recovery::load(path, false, 0)?;
        Ok((
            SpoolSnapshot {
                index: loaded.index,
            },
            loaded.report,
        ))
    }

    /// Totals of what is queued.
    pub fn stats(&self) -> QueueStats {
        self.index.stats()
    }

    /// Pending messages and recipients per recipient domain.
    pub fn domains(&self) -> Vec<DomainCount> {
        self.index.domains()
    }

    /// Up to `limit` messages with ids after `after`, in id order.
    pub fn page(&self, after: Option<MessageId>, limit: usize) -> Vec<MessageInfo> {
        self.index.page(after, limit)
    }

    /// The value kept under `key`, if any (see [`Queue::put_state`]).
    pub fn state(&self, key: &str) -> Option<Bytes> {
        self.index.state(key)
    }
}

pub(crate) fn now_micros() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
