//! Fault injection for tests (compiled only for this crate's tests or with
//! the `fault-injection` feature): make the next write or sync of one queue
//! fail with a chosen error, as a full or failing disk would.

use std::io;
use std::sync::Mutex;

/// Failures to inject into one queue's writer.
#[derive(Default)]
pub struct Faults {
    write: Mutex<Option<io::ErrorKind>>,
    sync: Mutex<Option<io::ErrorKind>>,
    /// Keep failing writes until cleared (a disk that stays full).
    sticky_write: std::sync::atomic::AtomicBool,
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
        assert!(matches!(q.health(), Health::Full(_)));
        assert!(
            matches!(rt.block_on(q.enqueue(msg(3))), Err(QueueError::Full(_))),
            "still full"
        );
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

    #[test]
    fn failed_sync_makes_the_queue_unhealthy_for_good() {
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
        // No retry-then-ack: everything is refused until restart.
        assert!(matches!(
            rt.block_on(q.enqueue(msg(3))),
            Err(QueueError::Unhealthy(_))
        ));
        let done = RecipientStatus {
            state: RecipientState::Delivered,
            ..RecipientStatus::pending(Timestamp::default())
        };
        assert!(matches!(
            rt.block_on(q.update(id, vec![(0, done)])),
            Err(QueueError::Unhealthy(_))
        ));
        assert_eq!(q.stats().messages, 1);
    }

    #[test]
    fn free_space_reserve_refuses_new_mail_but_lets_the_queue_drain() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (q, _) = Queue::open(QueueOptions::new(dir.path())).unwrap();
        let id = rt.block_on(q.enqueue(msg(1))).unwrap();
        q.close();
        drop(q);
        let mut opts = QueueOptions::new(dir.path());
        opts.min_free_space = u64::MAX;
        let (q, _) = Queue::open(opts).unwrap();
        assert!(matches!(q.health(), Health::Full(_)));
        assert!(matches!(
            rt.block_on(q.enqueue(msg(2))),
            Err(QueueError::Full(_))
        ));
        let done = RecipientStatus {
            state: RecipientState::Delivered,
            ..RecipientStatus::pending(Timestamp::default())
        };
        assert_eq!(
            rt.block_on(q.update(id, vec![(0, done)])).unwrap(),
            crate::UpdateOutcome::Removed
        );
    }
}
