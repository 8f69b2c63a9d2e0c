//! The values the queue stores and hands out: ids, timestamps, envelopes and
//! per-recipient status. Plain data; no I/O happens here.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// A queued message's id: unique within one spool, roughly ordered by
/// arrival, printed as 16 upper-case hex digits (`0006284A1F03C2D1`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(u64);

impl MessageId {
    /// The id as a number (stable: it is what the spool stores).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from its numeric form.
    pub const fn from_u64(raw: u64) -> Self {
        Self(raw)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// The text was not a queue id (1 to 16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id: {0:?} (expected up to 16 hex digits)")]
pub struct ParseMessageIdError(String);

impl FromStr for MessageId {
    type Err = ParseMessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 {
            return Err(ParseMessageIdError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(MessageId)
            .map_err(|_| ParseMessageIdError(s.to_owned()))
    }
}

/// A point in wall-clock time with millisecond resolution, as the spool
/// stores it (milliseconds since the Unix epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// From milliseconds since the Unix epoch.
    pub fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// From a `SystemTime`; times before the epoch become the epoch.
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// This time plus `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this time is (zero if it is not later).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecipientState {
    /// Not yet delivered: due at `next_attempt`.
    Pending = 0,
    /// Accepted by the next hop; never sent again.
    Delivered = 1,
    /// Failed for good (bounced, expired or purged); never sent again.
    Failed = 2,
    /// Held by an operator: kept, never due, until released (then pending
    /// again). Not final.
    Held = 3,
}

impl RecipientState {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Pending),
            1 => Some(Self::Delivered),
            2 => Some(Self::Failed),
            3 => Some(Self::Held),
            _ => None,
        }
    }

    /// True for `Delivered` and `Failed`: nothing is left to do.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed)
    }
}

/// The status of one recipient, as the scheduler last recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientStatus {
    /// Pending, delivered or failed.
    pub state: RecipientState,
    /// Delivery attempts made so far.
    pub attempts: u16,
    /// When the recipient is next due (meaningful while `Pending`).
    pub next_attempt: Timestamp,
    /// The last reply or error seen for this recipient, if any (kept for
    /// delayed and expiry notices; capped at [`MAX_REPLY_LEN`] bytes).
    /// Share one `Arc` across recipients that got the same reply.
    pub last_reply: Option<Arc<str>>,
}

/// Longest reply text the queue keeps per recipient; longer text is cut at a
/// character boundary.
pub const MAX_REPLY_LEN: usize = 1024;

impl RecipientStatus {
    /// A recipient that is due at `at` and has not been tried yet.
    pub fn pending(at: Timestamp) -> Self {
        Self {
            state: RecipientState::Pending,
            attempts: 0,
            next_attempt: at,
            last_reply: None,
        }
    }
}

/// One recipient of a message, as given at intake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeRecipient {
    /// The forward path, `local@domain`, without angle brackets.
    pub address: Box<str>,
    /// Opaque per-recipient data kept for the application (for example the
    /// DSN `NOTIFY` and `ORCPT` parameters). The queue stores it verbatim.
    pub params: Box<[u8]>,
}

impl EnvelopeRecipient {
    /// A recipient with no extra parameters.
    pub fn new(address: impl Into<Box<str>>) -> Self {
        Self {
            address: address.into(),
            params: Box::default(),
        }
    }

    /// The domain part of the address (after the last `@`), or the whole
    /// address when it has none.
    pub fn domain(&self) -> &str {
        match self.address.rfind('@') {
            Some(at) => &self.address[at + 1..],
            None => &self.address,
        }
    }
}

/// The immutable part of a queued message: who sent it to whom, plus the
/// application's routing data. Shared (`Arc`) between the index and views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path without angle brackets; empty for the null sender `<>`.
    pub sender: Box<str>,
    /// Opaque message-level data kept for the application (routing keys such
    /// as tenant, pool and priority; DSN `RET`/`ENVID`). Stored verbatim.
    pub meta: Box<[u8]>,
    /// The recipients, in the order given at intake. Status updates address
    /// a recipient by its index in this list.
    pub recipients: Box<[EnvelopeRecipient]>,
}

/// A message handed to [`crate::Queue::enqueue`].
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The id to queue it under, taken earlier from
    /// [`crate::Queue::allocate_id`] (so that headers written before the
    /// data arrived can name it), or `None` to allocate one now.
    pub id: Option<MessageId>,
    /// Sender, recipients and application data.
    pub envelope: Envelope,
    /// When the message was received.
    pub arrival: Timestamp,
    /// When the recipients are first due for delivery (normally `arrival`).
    pub first_attempt: Timestamp,
    /// Delivery priority, 0 (first) to [`LOWEST_PRIORITY`]; messages due at
    /// once are taken in priority order ([`DEFAULT_PRIORITY`] normally).
    pub priority: u8,
    /// The message content as it will be sent (headers and body, CRLF line
    /// ends). Shared, never copied by the queue.
    pub body: Bytes,
}

/// The lowest delivery priority (higher numbers are clamped to it).
pub const LOWEST_PRIORITY: u8 = 3;
/// The priority of messages that were given none.
pub const DEFAULT_PRIORITY: u8 = 1;

/// A snapshot of one queued message's metadata (never its body).
#[derive(Clone, Debug)]
pub struct MessageInfo {
    /// The queue id.
    pub id: MessageId,
    /// When the message was received.
    pub arrival: Timestamp,
    /// Sender, recipients and application data.
    pub envelope: Arc<Envelope>,
    /// Per-recipient status, in envelope order.
    pub statuses: Vec<RecipientStatus>,
    /// Size of the body in bytes.
    pub body_len: u64,
    /// Delivery priority (0 first).
    pub priority: u8,
    /// True while a send of it is under way ([`crate::Queue::begin`] ..
    /// [`crate::Queue::end`]): operators' actions wait for it.
    pub in_flight: bool,
    /// True while it is handed out (by [`crate::Queue::take_due`]) and
    /// waiting with its holder, no send under way.
    pub scheduled: bool,
    /// Which hand-out this is (see [`crate::Queue::begin`]).
    pub handout: u32,
}

impl MessageInfo {
    /// Indices and addresses of the recipients still pending.
    pub fn pending(&self) -> impl Iterator<Item = (usize, &EnvelopeRecipient)> {
        self.envelope
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| self.statuses[*i].state == RecipientState::Pending)
    }

    /// Indices and addresses of the recipients left to do: pending or held.
    pub fn remaining(&self) -> impl Iterator<Item = (usize, &EnvelopeRecipient)> {
        self.envelope
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.statuses[*i].state.is_final())
    }

    /// True when an operator holds any of its recipients.
    pub fn is_held(&self) -> bool {
        self.statuses
            .iter()
            .any(|s| s.state == RecipientState::Held)
    }
}

/// What an update did to its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Some recipients are still pending; the message stays queued.
    StillQueued,
    /// No recipient is left pending; the message was removed from the queue.
    Removed,
}

/// Counts of what is queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages with at least one recipient left to do (pending or held).
    pub messages: u64,
    /// Pending recipients over all messages (held ones not included).
    pub recipients: u64,
    /// Recipients held by an operator.
    pub held: u64,
    /// Body bytes of the queued messages.
    pub body_bytes: u64,
    /// Bytes of spool files on disk.
    pub disk_bytes: u64,
    /// Spool segment files.
    pub segments: u64,
}

/// Queued messages and pending recipients for one recipient domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainCount {
    /// The recipient domain, lower-cased.
    pub domain: String,
    /// Messages with at least one pending recipient in this domain.
    pub messages: u64,
    /// Pending recipients in this domain.
    pub recipients: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_round_trips_as_hex() {
        let id = MessageId::from_u64(0x0006_284A_1F03_C2D1);
        assert_eq!(id.to_string(), "0006284A1F03C2D1");
        assert_eq!("0006284A1F03C2D1".parse::<MessageId>().unwrap(), id);
        assert_eq!("6284a1f03c2d1".parse::<MessageId>().unwrap(), id);
        assert!("".parse::<MessageId>().is_err());
        assert!("0006284A1F03C2D1F".parse::<MessageId>().is_err());
        assert!("xyz".parse::<MessageId>().is_err());
    }

    #[test]
    fn domain_is_after_the_last_at() {
        assert_eq!(EnvelopeRecipient::new("a@b.example").domain(), "b.example");
        assert_eq!(
            EnvelopeRecipient::new("\"a@x\"@b.example").domain(),
            "b.example"
        );
        assert_eq!(EnvelopeRecipient::new("postmaster").domain(), "postmaster");
    }
}
