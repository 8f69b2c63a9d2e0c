//! Scale-in without loss: a node hands its queue to its peers before it
//! is switched off (`tern drain`), and takes over a draining peer's.
//!
//! | part | owns |
//! |---|---|
//! | [`send`] | the drain: stop taking mail, batches to peers, the journal, resuming after a crash |
//! | [`receive`] | taking over: held writes, de-duplication by origin, commits |
//! | [`wire`] | the batch format and the JSON answers |
//! | [`peer`] | the HTTP call to a peer's admin API |
//!
//! Transfers ride on the admin listener (HTTP, the fleet's bearer
//! token) rather than SMTP: a message travels with what SMTP cannot
//! carry (each recipient's status and attempts, its due time, priority,
//! tenant and pool), many messages go in one request and one fsync on the
//! peer, and the two-step hand-over (held, then committed) is what makes
//! it exactly once. See docs/DESIGN.md.

pub mod peer;
pub mod receive;
pub mod send;
pub mod wire;

pub use receive::Receiver;
pub use send::{Drainer, Progress};
