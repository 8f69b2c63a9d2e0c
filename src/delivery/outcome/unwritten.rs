//! Outcomes the spool could not write (it is full, or a write failed):
//! their message stays held, so it is never handed out again and sent
//! twice while Tern runs, and the write is tried again with back-off
//! until it goes through. Only if Tern stops first is the message sent
//! again after the restart (once): the delivery log says so with an
//! `unrecorded` line when the write first fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{MessageId, RecipientStatus};
use tokio::time::Instant;

use super::super::Delivery;

/// The first wait before a write is tried again, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// One message's statuses waiting to be written.
struct Held {
    id: MessageId,
    record: Vec<(u32, RecipientStatus)>,
    wait: Duration,
    next: Instant,
}

/// Every message whose outcomes wait to be written.
#[derive(Default)]
pub(crate) struct Unwritten {
    all: Mutex<Vec<Held>>,
}

impl Unwritten {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `record` of `id` to be written later (its message stays held).
    pub fn hold(&self, id: MessageId, record: Vec<(u32, RecipientStatus)>) {
        self.push(Held {
            id,
            record,
            wait: FIRST_RETRY,
            next: Instant::now() + FIRST_RETRY,
        });
    }

    fn push(&self, h: Held) {
        self.lock().push(h);
    }

    /// When the next write is to be tried.
    pub fn next(&self) -> Option<Instant> {
        self.lock().iter().map(|h| h.next).min()
    }

    /// Messages held for their outcomes.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn take_due(&self, now: Instant) -> Vec<Held> {
        let mut all = self.lock();
        let (due, rest): (Vec<Held>, Vec<Held>) = all.drain(..).partition(|h| h.next <= now);
        *all = rest;
        due
    }
}

impl Delivery {
    /// Tries again the writes that are due; each that goes through gives
    /// its message back to the queue.
    pub(crate) async fn write_held(self: Arc<Self>) {
        for mut h in self.unwritten.take_due(Instant::now()) {
            match self.queue.update(h.id, h.record.clone()).await {
                Ok(_) => {
                    tracing::warn!(queue_id = %h.id, "delivery outcomes written at last; the message is no longer held")
                }
                Err(queue::QueueError::NotFound(_)) => {} // purged meanwhile
                Err(e) => {
                    h.wait = (h.wait * 2).min(LAST_RETRY);
                    h.next = Instant::now() + h.wait;
                    tracing::debug!(queue_id = %h.id, error = %e, retry_in_s = h.wait.as_secs(), "delivery outcomes still not written");
                    self.unwritten.push(h);
                }
            }
        }
    }
}
