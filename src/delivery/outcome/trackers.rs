//! Messages with several jobs on their way at once (recipients at several
//! domains): how many are still active, the failures kept for one bounce,
//! and statuses that could not be written yet. A message with one job has
//! no entry, and costs nothing here.

use std::collections::HashMap;
use std::sync::Mutex;

use queue::{MessageId, RecipientStatus, Timestamp};

use super::super::job::Rcpts;
use super::{Outcome, Sorted};

/// One message's jobs.
struct Tracker {
    /// The hand-out they belong to.
    handout: u32,
    /// Jobs scheduled, ready or being sent.
    active: u32,
    /// Deferred jobs waiting for their retry time (they end with the
    /// message's last active job: their statuses are written, so the
    /// queue then retries them).
    timed: u32,
    /// Failures, bounced together when the last job ends.
    failures: Vec<(Outcome, bool)>,
    /// Statuses not yet written (a write failed).
    unrecorded: Vec<(u32, RecipientStatus)>,
}

/// What to do with a job's sorted outcomes.
pub(crate) enum Next {
    /// It was the message's last job: bounce and write everything, give
    /// the message back.
    Finish(Sorted),
    /// Other jobs go on: write these statuses now.
    Record(Vec<(u32, RecipientStatus)>),
    /// Other jobs go on and these recipients were deferred: write the
    /// statuses, and try them again at the time given while the message
    /// is still held.
    RetryLater(Vec<(u32, RecipientStatus)>, Rcpts, Timestamp),
}

/// The trackers of every message with several jobs.
#[derive(Default)]
pub(crate) struct Trackers {
    all: Mutex<HashMap<MessageId, Tracker>>,
}

impl Trackers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, Tracker>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message was handed out and split into `jobs` jobs.
    pub fn start(&self, id: MessageId, handout: u32, jobs: usize) {
        if jobs > 1 {
            let t = Tracker {
                handout,
                active: jobs as u32,
                timed: 0,
                failures: Vec::new(),
                unrecorded: Vec::new(),
            };
            self.lock().insert(id, t);
        }
    }

    /// A job's outcomes are in; what to do with them.
    pub fn settle(&self, (id, handout): (MessageId, u32), mut sorted: Sorted) -> Next {
        let mut all = self.lock();
        let Some(t) = all.get_mut(&id).filter(|t| t.handout == handout) else {
            return Next::Finish(sorted);
        };
        t.active = t.active.saturating_sub(1);
        if t.active == 0 {
            let t = all.remove(&id).expect("found above");
            sorted.failures.extend(t.failures);
            sorted.record.extend(t.unrecorded);
            return Next::Finish(sorted);
        }
        t.failures.append(&mut sorted.failures);
        match sorted.next {
            Some(at) => {
                t.timed += 1;
                Next::RetryLater(sorted.record, sorted.deferred, at)
            }
            None => Next::Record(sorted.record),
        }
    }

    /// Statuses of `id` that could not be written: written with its last
    /// job.
    pub fn keep(&self, id: MessageId, record: Vec<(u32, RecipientStatus)>) {
        if let Some(t) = self.lock().get_mut(&id) {
            t.unrecorded.extend(record);
        }
    }

    /// A job of a hand-out that no longer holds its message (purged,
    /// bounced or moved by an operator) was dropped: the tracker goes with
    /// its last job, writing nothing.
    pub fn forget(&self, (id, handout): (MessageId, u32)) {
        let mut all = self.lock();
        if let Some(t) = all.get_mut(&id).filter(|t| t.handout == handout) {
            t.active = t.active.saturating_sub(1);
            if t.active == 0 {
                all.remove(&id);
            }
        }
    }

    /// A retry held by [`Next::RetryLater`] is due: true if its message is
    /// still held by the same hand-out, and the job is active again (it
    /// goes back to its queue); false if the message was given back.
    pub fn resume(&self, (id, handout): (MessageId, u32)) -> bool {
        let mut all = self.lock();
        match all.get_mut(&id).filter(|t| t.handout == handout) {
            Some(t) => {
                t.timed = t.timed.saturating_sub(1);
                t.active += 1;
                true
            }
            None => false,
        }
    }
}
