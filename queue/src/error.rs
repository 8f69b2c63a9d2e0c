//! The queue's error type. Callers branch on the variant (the SMTP server maps
//! `Full` and `Unhealthy` to 4xx replies), never on the text.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::types::MessageId;

/// Everything the queue can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The spool is below its free-space reserve, or a write found the
    /// disk full. New messages are refused; below the reserve, outcomes
    /// still go through so the queue can drain. Clears by itself once
    /// space is free again.
    #[error("spool is full: {0}")]
    Full(Arc<str>),

    /// A write or sync failed (no file descriptor, an I/O error): nothing
    /// in its batch was acknowledged, and nothing is written until a fresh
    /// segment can be started, which the queue retries by itself.
    #[error("spool is unhealthy: {0}")]
    Unhealthy(Arc<str>),

    /// A record on disk failed its checksum or could not be decoded.
    #[error("corrupt spool record in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record in that file.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
    },

    /// An I/O error outside the write path (opening, scanning, reading).
    #[error("spool I/O error: {context}: {source}")]
    Io {
        /// What the queue was doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The message is not (or no longer) queued.
    #[error("message {0} is not in the queue")]
    NotFound(MessageId),

    /// The request itself is malformed (for example a message without
    /// recipients, or a recipient index out of range).
    #[error("invalid queue request: {0}")]
    Invalid(&'static str),

    /// Another process holds the spool's lock file.
    #[error("spool {0} is locked by another process (is tern already running?)")]
    Locked(PathBuf),

    /// The queue was closed.
    #[error("the queue is shut down")]
    Closed,
}

impl QueueError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error is about the spool's condition (full, unhealthy,
    /// shut down) rather than about this request: the caller should answer
    /// with a temporary failure and try again later.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::Full(_) | Self::Unhealthy(_) | Self::Closed | Self::Io { .. }
        )
    }
}
