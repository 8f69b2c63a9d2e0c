//! Tern's durable message queue.
//!
//! This crate owns durability and nothing else: no SMTP, no DNS, no
//! configuration files. The application hands it envelopes and bodies; it
//! hands back ids, due messages, bodies and counts.
//!
//! # The crash-safety contract
//!
//! - [`Queue::enqueue`] returns `Ok(id)` only once the message's record is on
//!   stable storage: written and `fdatasync`ed (with [`Durability::Fsync`],
//!   the default). Concurrent calls share one write and one sync (group
//!   commit), so durability costs one sync per batch, not per message.
//! - [`Queue::update`] and [`Queue::remove`] are durable in the same way: a
//!   recipient acknowledged as delivered is never handed out again, and a
//!   removed message never comes back, whatever happens after the call
//!   returns. One exception, opted into with
//!   [`QueueOptions::status_sync_delay`]: a batch of status records alone
//!   (`update`, `record`) is written and answered before its sync, which
//!   comes with the next batch that needs one or when the delay ends. A
//!   crash of the process keeps it (it is in the kernel); a kernel crash
//!   or power loss within the delay may hand those recipients out again
//!   (delivered twice, never lost). No segment is deleted while anything
//!   written waits for a sync.
//! - Nothing is acknowledged that was not persisted. A failed write or sync
//!   (no space, no file descriptor, an I/O error) fails every request of its
//!   batch and abandons the segment; the queue refuses every write
//!   ([`Health::Unhealthy`]) until a fresh segment can be started, which it
//!   retries by itself with back-off. Callers redo what was refused.
//! - Below the free-space reserve ([`QueueOptions::min_free_space`],
//!   counted on every write, not only when measured), new messages are
//!   refused ([`QueueError::Full`]) while outcomes are still written; a
//!   deferral (an update that leaves its recipients pending) is then kept in
//!   memory only, so a stuck backlog's retries never use the space that
//!   outcomes need. A reserve file (`RESERVE`) is released when a write
//!   finds the disk full, and opening a spool on a full disk appends to its
//!   last segment rather than failing.
//! - Opening recovers whatever is on disk: a torn tail is truncated, a
//!   corrupt record is skipped and reported (never handed out as a
//!   message), and everything else is restored. No byte sequence in the
//!   spool directory makes opening fail or panic; only I/O errors do.
//! - With [`QueueOptions::recover_in_background`], opening returns after a
//!   glance (the highest id and the state values, from every valid
//!   record) and new messages are written to a fresh segment at once; the
//!   old messages are recovered on a thread, and each joins the queue
//!   once the last segment holding a record of it has been read (the
//!   glance notes where each message's records end), so none is handed
//!   out without its latest status. No segment is deleted or compacted
//!   before every old segment is read; if the recovery fails, the old
//!   segments stay untouched until the next open while the new ones are
//!   collected as usual.
//! - An operator's marks ([`Queue::reschedule`], [`Queue::hold`],
//!   [`Queue::release_held`]) are durable the same way; a held recipient
//!   is kept and never due until released, across restarts and
//!   compaction.
//! - A message may be handed out again after a crash if its delivery was not
//!   yet recorded (at-least-once delivery), never lost.
//! - [`Queue::put_state`] keeps the application's small state values (its
//!   operators' suspensions, warm-up counts) beside the messages under the
//!   same contract: durable on return, the latest value of a key wins, an
//!   empty value removes it, and compaction carries a value along.
//!
//! # On disk
//!
//! The spool is a directory of segment files, each an append-only log of
//! length-prefixed, CRC32C-checked records (the `codec` module documents
//! the layout): a
//! message record (envelope, recipient statuses, body), then small status
//! records as recipients are delivered or deferred, and remove records for
//! purges. The writer thread appends to the newest segment and starts a new
//! one past `segment_size`. A segment is deleted once nothing in it is
//! needed; the compactor relocates the few live messages that keep an old
//! segment alive. A `LOCK` file keeps a second process from opening the
//! same spool.
//!
//! # In memory
//!
//! Metadata of every queued message (envelope, per-recipient status, where
//! the body is), an index by priority and due time (due messages are taken
//! most urgent first, then oldest first), and fresh bodies until their first
//! delivery attempt (within `body_cache`). Bodies are read back from disk
//! when needed. Measured by a counting allocator (`tests/memory.rs`): 207
//! bytes of heap per queued single-recipient message after a recovery,
//! deferred or not (about 250 while the queue grows message by message),
//! 61 per further recipient: the envelope packed in one allocation, a
//! single status and the first later status segment kept in place (a
//! 104-byte entry), entries boxed in the id map, 16-byte due keys, and the
//! id map and due set rebuilt with full B-tree nodes after recovery.
//!
//! # Layout
//!
//! - [`queue`](crate::Queue): the handle, its API and opening;
//! - `writer`: the one thread that appends, syncs, rotates and deletes;
//! - `index`: the in-memory state, shared by recovery and the writer;
//! - `open`: opening, in the foreground or in the background;
//! - `recovery`: scanning and repairing a spool at open, and the glance;
//! - `compactor`: relocation of live messages out of old segments;
//! - `body`: reading a body back from its segment, checksum-verified;
//! - `codec` and `segment`: the byte layout of records and segment files.

mod body;
mod codec;
mod compactor;
mod error;
#[cfg(any(test, feature = "fault-injection"))]
pub mod faults;
#[cfg(any(fuzzing, feature = "fault-injection"))]
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod open;
mod options;
mod packed;
mod queue;
mod recovery;
mod segment;
mod shared;
mod types;
mod writer;

pub use error::QueueError;
pub use options::{Durability, QueueOptions, SEGMENT_SIZE_RANGE};
pub use queue::{Queue, SpoolSnapshot};
pub use recovery::{CorruptRegion, LOCK_FILE, QUARANTINE_DIR, Recovery, RecoveryReport};
pub use shared::{Health, IoStats};
pub use types::{
    DEFAULT_PRIORITY, DomainCount, Envelope, EnvelopeRecipient, LOWEST_PRIORITY, MAX_REPLY_LEN,
    MessageId, MessageInfo, NewMessage, ParseMessageIdError, QueueStats, RecipientState,
    RecipientStatus, Timestamp, UpdateOutcome,
};
