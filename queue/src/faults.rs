//! Fault injection for tests (compiled only for this crate's tests or with
//! the `fault-injection` feature): make the next write or sync of one queue
//! fail with a chosen error, as a full or failing disk would; and a hook
//! run after each sync of the active segment, where a power-loss
//! simulation takes its snapshots of what is durable.

use std::io;
use std::sync::Mutex;

/// A function run on the writer's thread after each sync.
type SyncHook = Box<dyn Fn() + Send + Sync>;

/// Failures to inject into one queue's writer.
#[derive(Default)]
pub struct Faults {
    write: Mutex<Option<io::ErrorKind>>,
    sync: Mutex<Option<io::ErrorKind>>,
    /// Keep failing writes until cleared (a disk that stays full).
    sticky_write: std::sync::atomic::AtomicBool,
    after_sync: Mutex<Option<SyncHook>>,
    /// Hold a background recovery once it has released this many messages.
    recovery_held: Mutex<Option<u64>>,
    /// Fail the background recovery once it has read every old segment.
    recovery_fails: std::sync::atomic::AtomicBool,
    recovery_gate: std::sync::Condvar,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("write", &self.write)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// Fail writes with `kind`, once or until cleared (`sticky`).
    pub fn fail_writes(&self, kind: io::ErrorKind, sticky: bool) {
        *self.write.lock().unwrap() = Some(kind);
        self.sticky_write
            .store(sticky, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stop failing writes.
    pub fn clear_writes(&self) {
        *self.write.lock().unwrap() = None;
    }

    /// Fail the next `fdatasync` with `kind`.
    pub fn fail_next_sync(&self, kind: io::ErrorKind) {
        *self.sync.lock().unwrap() = Some(kind);
    }

    /// Runs `hook` on the writer's thread after every successful sync of
    /// the active segment (before the writes it made durable are
    /// answered): what is on disk then is exactly what survives a power
    /// loss at that moment.
    pub fn on_sync(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.after_sync.lock().unwrap() = Some(Box::new(hook));
    }

    /// Makes a background recovery wait before it releases any message to
    /// the queue, until [`Faults::release_recovery`]: tests of what the
    /// queue does meanwhile.
    pub fn hold_recovery(&self) {
        self.hold_recovery_after(0);
    }

    /// Makes a background recovery wait once it has released `messages`
    /// (it releases them in batches of a segment's or a couple of
    /// thousand), before its next release or its merge.
    pub fn hold_recovery_after(&self, messages: u64) {
        *self.recovery_held.lock().unwrap() = Some(messages);
        self.recovery_gate.notify_all();
    }

    /// Makes the background recovery fail with an I/O error once it has
    /// read (and released from) every old segment, before its merge.
    pub fn fail_recovery(&self) {
        self.recovery_fails
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The error the recovery is to end in, if one was asked for.
    pub(crate) fn recovery_outcome(&self) -> Result<(), crate::QueueError> {
        match self
            .recovery_fails
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            true => Err(crate::QueueError::io(
                "recover the spool",
                io::Error::other("injected recovery failure"),
            )),
            false => Ok(()),
        }
    }

    /// Lets a held background recovery go on.
    pub fn release_recovery(&self) {
        *self.recovery_held.lock().unwrap() = None;
        self.recovery_gate.notify_all();
    }

    /// Waits while the recovery is held, `released` messages released so
    /// far (`u64::MAX` before the merge), at most a minute: a test that
    /// forgets to release it fails rather than hangs.
    pub(crate) fn before_release(&self, released: u64) {
        let held = self.recovery_held.lock().unwrap();
        let _unused = self
            .recovery_gate
            .wait_timeout_while(held, std::time::Duration::from_secs(60), |h| {
                h.is_some_and(|n| released >= n)
            })
            .unwrap();
    }

    pub(crate) fn synced(&self) {
        if let Some(hook) = &*self.after_sync.lock().unwrap() {
            hook();
        }
    }

    pub(crate) fn before_write(&self) -> io::Result<()> {
        let mut w = self.write.lock().unwrap();
        let sticky = self.sticky_write.load(std::sync::atomic::Ordering::SeqCst);
        match if sticky { *w } else { w.take() } {
            Some(kind) => Err(io::Error::from(kind)),
            None => Ok(()),
        }
    }

    pub(crate) fn before_sync(&self) -> io::Result<()> {
        match self.sync.lock().unwrap().take() {
            Some(kind) => Err(io::Error::from(kind)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::time::Duration;

    use bytes::Bytes;

    use crate::{
        Envelope, EnvelopeRecipient, Health, NewMessage, Queue, QueueError, QueueOptions,
        RecipientState, RecipientStatus, Timestamp,
    };

    fn msg(n: u64) -> NewMessage {
        NewMessage {
            id: None,
            envelope: Envelope {
                sender: "s@x.example".into(),
                meta: Box::default(),
                recipients: vec![EnvelopeRecipient::new(format!("r{n}@y.example"))].into(),
            },
            arrival: Timestamp::from_millis(n),
            first_attempt: Timestamp::from_millis(n),
            priority: crate::types::DEFAULT_PRIORITY,
            body: Bytes::from(format!("Subject: {n}\r\n\r\nx\r\n")),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn disk_full_refuses_then_resumes_without_acking_anything_lost() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (q, _) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        let kept = rt.block_on(q.enqueue(msg(1))).unwrap();
        q.faults().fail_writes(ErrorKind::StorageFull, true);
        assert!(matches!(
            rt.block_on(q.enqueue(msg(2))),
            Err(QueueError::Full(_))
        ));
        assert!(
            matches!(q.health(), Health::Unhealthy(_)),
            "nothing can be written"
        );
        assert!(rt.block_on(q.enqueue(msg(3))).is_err(), "still full");
        assert_eq!(q.stats().messages, 1, "nothing unpersisted is visible");
        q.faults().clear_writes();
        // The writer retries a fresh segment by itself (every 20 ms under test).
        for _ in 0..500 {
            if q.health() == Health::Healthy {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = rt
            .block_on(q.enqueue(msg(4)))
            .expect("resumes once space is back");
        assert_eq!(q.health(), Health::Healthy);
        q.close();
        drop(q);
        let (q, report) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        assert_eq!(report.corrupt_records, 0);
        let ids: Vec<_> = q.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![kept, after]);
    }

    fn wait_healthy(q: &Queue) {
        for _ in 0..500 {
            if q.health() == Health::Healthy {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("still {:?}", q.health());
    }

    fn delivered() -> RecipientStatus {
        RecipientStatus {
            state: RecipientState::Delivered,
            ..RecipientStatus::pending(Timestamp::default())
        }
    }

    #[test]
    fn a_failed_sync_fails_its_batch_and_the_queue_heals_in_a_fresh_segment() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (q, _) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        let id = rt.block_on(q.enqueue(msg(1))).unwrap();
        q.faults().fail_next_sync(ErrorKind::Other);
        assert!(matches!(
            rt.block_on(q.enqueue(msg(2))),
            Err(QueueError::Unhealthy(_))
        ));
        assert!(matches!(q.health(), Health::Unhealthy(_)));
        assert!(q.health_since().is_some());
        // The next writes go to a fresh segment once the writer has
        // started one (it retries by itself).
        wait_healthy(&q);
        let later = rt.block_on(q.enqueue(msg(3))).expect("healthy again");
        assert_eq!(
            rt.block_on(q.update(id, vec![(0, delivered())])).unwrap(),
            crate::UpdateOutcome::Removed
        );
        q.close();
        drop(q);
        let (q, _) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        let ids: Vec<_> = q.page(None, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![later], "the failed batch was never acknowledged");
    }

    #[test]
    fn no_file_descriptor_for_a_new_segment_heals_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let mut opts = QueueOptions::new(dir.path());
        opts.segment_size = 64 << 10;
        let (q, _) = Queue::open(opts).unwrap();
        // EMFILE on every write and segment creation for a while.
        q.faults().fail_writes(ErrorKind::Other, true);
        assert!(rt.block_on(q.enqueue(msg(1))).is_err());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            matches!(q.health(), Health::Unhealthy(_)),
            "retried, still failing"
        );
        q.faults().clear_writes();
        wait_healthy(&q);
        assert!(rt.block_on(q.enqueue(msg(2))).is_ok());
    }

    /// A spool in `dir` holding one message, closed; its id.
    fn spool_of_one(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> crate::MessageId {
        let (q, _) = Queue::open(QueueOptions::new(dir)).unwrap();
        let id = rt.block_on(q.enqueue(msg(1))).unwrap();
        q.close();
        id
    }

    #[test]
    fn a_queue_opens_on_a_spool_where_no_segment_can_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let id = spool_of_one(dir.path(), &rt);
        let faults = std::sync::Arc::new(crate::faults::Faults::default());
        faults.fail_writes(ErrorKind::StorageFull, false);
        let mut opts = QueueOptions::new(dir.path());
        opts.faults = Some(faults);
        let (q, report) = Queue::open(opts).expect("opens, appending to the last segment");
        assert_eq!(report.messages, 1);
        assert_eq!(
            rt.block_on(q.update(id, vec![(0, delivered())])).unwrap(),
            crate::UpdateOutcome::Removed,
            "outcomes are written"
        );
        q.close();
        drop(q);
        let (q, _) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        assert_eq!(q.stats().messages, 0, "the outcome was durable");
    }

    #[test]
    fn the_reserve_file_is_released_when_the_disk_fills_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let mut opts = QueueOptions::new(dir.path());
        opts.min_free_space = 4 << 20;
        let (q, _) = Queue::open(opts).unwrap();
        let reserve = dir.path().join(crate::writer::RESERVE_FILE);
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20);
        let id = rt.block_on(q.enqueue(msg(1))).unwrap();
        q.faults().fail_writes(ErrorKind::StorageFull, false);
        assert!(rt.block_on(q.update(id, vec![(0, delivered())])).is_err());
        wait_healthy(&q);
        assert!(rt.block_on(q.update(id, vec![(0, delivered())])).is_ok());
        for _ in 0..500 {
            if reserve.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            let _ = rt.block_on(q.enqueue(msg(9)));
        }
        assert!(reserve.exists(), "made again once there is room");
        let (q2, report) = crate::SpoolSnapshot::read(dir.path()).unwrap();
        assert!(
            report.ignored_files.is_empty(),
            "{:?}",
            report.ignored_files
        );
        drop(q2);
    }

    #[test]
    fn below_the_reserve_deferrals_stay_in_memory_and_outcomes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (q, _) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        let a = rt.block_on(q.enqueue(msg(1))).unwrap();
        let b = rt.block_on(q.enqueue(msg(2))).unwrap();
        q.close();
        drop(q);
        let mut opts = QueueOptions::new(dir.path());
        opts.min_free_space = u64::MAX;
        let (q, _) = Queue::open(opts.clone()).unwrap();
        assert!(matches!(q.health(), Health::Full(_)));
        assert_eq!(q.take_due(Timestamp::from_millis(10), 10).len(), 2);
        let records = q.io_stats().records;
        let later = Timestamp::from_millis(5_000);
        let mut deferred = RecipientStatus::pending(later);
        deferred.attempts = 1;
        rt.block_on(q.update(a, vec![(0, deferred)])).unwrap();
        assert_eq!(q.io_stats().records, records, "a deferral is not written");
        assert!(
            q.take_due(Timestamp::from_millis(4_000), 10).is_empty(),
            "but it holds in memory: not handed out before its time"
        );
        rt.block_on(q.update(b, vec![(0, delivered())])).unwrap();
        assert_eq!(q.io_stats().records, records + 1, "a delivery is written");
        q.close();
        drop(q);
        let (q, _) = Queue::open(opts).unwrap();
        let m = q.get(a).unwrap();
        assert_eq!(m.statuses[0].attempts, 0, "a restart forgets the deferral");
        assert!(q.get(b).is_none());
    }

    #[test]
    fn free_space_reserve_refuses_new_mail_but_lets_the_queue_drain() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let id = spool_of_one(dir.path(), &rt);
        let mut opts = QueueOptions::new(dir.path());
        opts.min_free_space = u64::MAX;
        let (q, _) = Queue::open(opts).unwrap();
        assert!(matches!(q.health(), Health::Full(_)));
        assert!(matches!(
            rt.block_on(q.enqueue(msg(2))),
            Err(QueueError::Full(_))
        ));
        assert_eq!(
            rt.block_on(q.update(id, vec![(0, delivered())])).unwrap(),
            crate::UpdateOutcome::Removed
        );
    }

    #[test]
    fn a_failing_disk_during_compaction_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let mut opts = QueueOptions::new(dir.path());
        opts.segment_size = 64 << 10;
        let (q, _) = Queue::open(opts.clone()).unwrap();
        let ids: Vec<_> = (0..2000)
            .map(|n| rt.block_on(q.enqueue(msg(n))).unwrap())
            .collect();
        // Every tenth stays, pinning old segments; the rest is delivered,
        // which wakes the compactor, and the disk fails while it works.
        let kept: Vec<_> = ids.iter().step_by(10).copied().collect();
        for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 10 != 0) {
            if n == 1001 {
                q.faults().fail_writes(ErrorKind::Other, true);
            }
            let _ = rt.block_on(q.update(*id, vec![(0, delivered())]));
        }
        std::thread::sleep(Duration::from_millis(300));
        q.faults().clear_writes();
        wait_healthy(&q);
        for id in ids.iter().skip(1000).filter(|id| !kept.contains(id)) {
            let _ = rt.block_on(q.update(*id, vec![(0, delivered())]));
        }
        let spool = || -> u64 {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        };
        let shrunk = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            let n = rt.block_on(q.enqueue(msg(9999))).unwrap();
            rt.block_on(q.update(n, vec![(0, delivered())])).unwrap();
            spool() < 3 * (64 << 10)
        });
        assert!(
            shrunk,
            "compaction went on after the disk healed: {} bytes",
            spool()
        );
        q.close();
        drop(q);
        let (q, report) = Queue::open(opts).unwrap();
        assert_eq!(report.corrupt_records, 0);
        let left: Vec<_> = q.page(None, 10_000).iter().map(|m| m.id).collect();
        assert_eq!(left, kept, "exactly the kept ones, none lost");
    }
}
