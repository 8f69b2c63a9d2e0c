//! The dispatcher: egress paths (one per source and site), their ready
//! queues and their connection workers. A path only ever holds what it
//! can send soon (its ready queue is bounded); everything else waits in
//! the scheduler's queues. Sends and reports outcomes; never decides
//! retries or bounces (the `outcome` module does).

mod lanes;
pub(crate) mod path;
mod send;
pub(crate) mod shaped;
mod worker;

pub(crate) use path::{Path, Room};
