//! One queued message as the index keeps it ([`Entry`]) and the compact
//! types inside it: where its full record is, its recipients' statuses,
//! its other status segments and its place in the due set. Sizes matter
//! here: a million queued messages hold a million entries.

use std::sync::Arc;

use crate::packed::Packed;
use crate::segment::SegId;
use crate::types::{MessageId, MessageInfo, RecipientState, RecipientStatus, Timestamp};

/// Where a message's full record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: SegId,
    pub offset: u32,
    /// Record length, header included.
    pub len: u32,
    /// Start of the body, counted from the start of the record.
    pub body_offset: u32,
}

impl Loc {
    pub fn body_len(&self) -> u64 {
        u64::from(self.len - self.body_offset)
    }
}

/// An optional segment id in 8 bytes (an `Option` takes 16): segment ids
/// stay below [`crate::segment::MAX_SEGMENT_ID`], so the largest value
/// marks "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OtherSeg(SegId);

impl OtherSeg {
    pub const NONE: OtherSeg = OtherSeg(SegId::MAX);

    pub fn some(seg: SegId) -> Self {
        debug_assert!(seg <= crate::segment::MAX_SEGMENT_ID);
        OtherSeg(seg)
    }

    pub fn get(self) -> Option<SegId> {
        (self != Self::NONE).then_some(self.0)
    }
}

/// A message's recipient statuses: the one of a single-recipient message
/// kept in place (no allocation of its own), several in a boxed slice.
#[derive(Clone, Debug)]
pub(crate) enum Statuses {
    One(RecipientStatus),
    Many(Box<[RecipientStatus]>),
}

impl From<Box<[RecipientStatus]>> for Statuses {
    fn from(b: Box<[RecipientStatus]>) -> Self {
        match <Box<[RecipientStatus; 1]>>::try_from(b) {
            Ok(one) => {
                let [s] = *one;
                Statuses::One(s)
            }
            Err(many) => Statuses::Many(many),
        }
    }
}

impl std::ops::Deref for Statuses {
    type Target = [RecipientStatus];
    fn deref(&self) -> &[RecipientStatus] {
        match self {
            Statuses::One(s) => std::slice::from_ref(s),
            Statuses::Many(b) => b,
        }
    }
}

impl std::ops::DerefMut for Statuses {
    fn deref_mut(&mut self) -> &mut [RecipientStatus] {
        match self {
            Statuses::One(s) => std::slice::from_mut(s),
            Statuses::Many(b) => b,
        }
    }
}

/// When a message is due in the due set, if it is there: a time, with
/// `u64::MAX` for "not there" (8 bytes instead of an `Option`'s 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Due(u64);

impl Due {
    pub const NONE: Due = Due(u64::MAX);

    pub fn get(self) -> Option<Timestamp> {
        (self != Self::NONE).then(|| Timestamp::from_millis(self.0))
    }

    pub fn take(&mut self) -> Option<Timestamp> {
        std::mem::replace(self, Self::NONE).get()
    }
}

impl From<Option<Timestamp>> for Due {
    fn from(t: Option<Timestamp>) -> Self {
        // A time at the far end is clamped one below the marker.
        t.map_or(Self::NONE, |t| Due(t.as_millis().min(u64::MAX - 1)))
    }
}

/// One live message.
pub(crate) struct Entry {
    pub env: Packed,
    pub statuses: Statuses,
    pub arrival: Timestamp,
    /// Delivery priority (0 first): the first part of its due-set key.
    pub priority: u8,
    pub home: Loc,
    /// The first segment other than `home.seg` that holds a status record
    /// of this message (a deferral written after it), kept in place: no
    /// allocation of its own for the common case. Further ones are in
    /// [`Index::more_others`].
    pub others: OtherSeg,
    /// The key under which the message sits in the due set, if it does.
    pub due: Due,
    /// Handed out (by `take_due` or `claim`) and not yet released: out of
    /// the due set.
    pub taken: bool,
    /// Sends of it under way (`begin` .. `end`).
    pub busy: u16,
    /// Bumped at each hand-out, so that a holder of an older hand-out can
    /// tell it no longer owns the message.
    pub handout: u32,
}

impl Entry {
    pub(super) fn pending(&self) -> impl Iterator<Item = &RecipientStatus> {
        self.statuses
            .iter()
            .filter(|s| s.state == RecipientState::Pending)
    }

    pub(super) fn due_key(&self) -> Option<Timestamp> {
        self.pending().map(|s| s.next_attempt).min()
    }

    /// True while any recipient is left to do (pending or held).
    pub(super) fn is_live(&self) -> bool {
        self.statuses.iter().any(|s| !s.state.is_final())
    }

    pub(super) fn held(&self) -> usize {
        self.statuses
            .iter()
            .filter(|s| s.state == RecipientState::Held)
            .count()
    }

    pub fn info(&self, id: MessageId) -> MessageInfo {
        MessageInfo {
            id,
            arrival: self.arrival,
            envelope: Arc::new(self.env.unpack()),
            statuses: self.statuses.to_vec(),
            body_len: self.home.body_len(),
            priority: self.priority,
            in_flight: self.busy > 0,
            scheduled: self.taken && self.busy == 0,
            handout: self.handout,
        }
    }
}
