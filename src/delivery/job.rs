//! A job: some due recipients of one message, all at one domain, routed to
//! a site. Plain data: it waits in its destination's scheduled queue, then
//! in an egress path's ready queue, costing a hundred bytes or so and
//! nothing else (no body, no in-flight slot, no connection, no timer).
//! The message itself stays in the spool; a send reads what it needs when
//! it starts ([`queue::Queue::begin`]).

use std::sync::Arc;

use queue::{MessageId, Timestamp};
use smallvec::SmallVec;

use super::scheduler::Dest;
use crate::dns::route::Route;

/// Recipient indexes (in the envelope) of one job; most jobs have one.
pub(crate) type Rcpts = SmallVec<[u32; 2]>;

/// Some recipients of one message for one domain.
pub(crate) struct Job {
    /// The message.
    pub id: MessageId,
    /// Which hand-out of the message this job belongs to: a stale one
    /// (the message was purged, bounced or moved since) is dropped.
    pub handout: u32,
    /// Its recipients.
    pub rcpts: Rcpts,
    /// Their domain (lowercase, shared by every job to it).
    pub domain: Arc<str>,
    /// Where the domain's mail goes.
    pub route: Arc<Route>,
    /// The message's tenant (shared by every job of the tenant).
    pub tenant: Option<Arc<str>>,
    /// The message's priority class (0 first).
    pub priority: u8,
    /// When the message was received.
    pub arrival: Timestamp,
    /// Size of its body (what a send will hold in RAM).
    pub size: u32,
    /// The scheduled queue it belongs to (and goes back to when its path
    /// cannot send it).
    pub dest: Arc<Dest>,
}

impl Job {
    /// Its tenant's name, for suspensions and views.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Its size in KiB, at least 1 (the unit of the in-flight byte budget).
    pub fn kib(&self) -> u32 {
        self.size.div_ceil(1024).max(1)
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("rcpts", &self.rcpts)
            .field("domain", &self.domain)
            .field("site", &self.route.site)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_waiting_job_is_small() {
        // What a scheduled job costs in its queue, besides the message's
        // entry in the queue's index.
        let size = std::mem::size_of::<super::Job>();
        assert!(size <= 112, "a job takes {size} bytes");
    }
}
