//! Decoding: the bounds-checked reading of record payloads, and the
//! check of a record's framing and checksum. Never trusts a length; every
//! bad byte is a [`DecodeError`], never a panic.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    KIND_MESSAGE, KIND_MESSAGE_PRIORITY, KIND_REMOVE, KIND_STATE, KIND_STATUS, MAX_PAYLOAD,
    MAX_RECIPIENTS, RECORD_HEADER_LEN, RECORD_MAGIC,
};
use crate::packed::{Packed, Packer};
use crate::types::{
    DEFAULT_PRIORITY, LOWEST_PRIORITY, MessageId, RecipientState, RecipientStatus, Timestamp,
};

/// Why a record could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the record claims.
    Truncated,
    /// A field holds a value the format does not allow.
    Invalid(&'static str),
}

impl DecodeError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "record shorter than its fields",
            Self::Invalid(why) => why,
        }
    }
}

/// Bounds-checked little-endian reader over a payload.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn str16(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes16()?).map_err(|_| DecodeError::Invalid("text is not UTF-8"))
    }
    fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        out
    }
}

/// Interns reply texts so that recipients sharing a reply share memory.
pub(crate) trait ReplyInterner {
    fn intern(&mut self, text: &str) -> Arc<str>;
}

fn get_status(
    r: &mut Reader<'_>,
    replies: &mut dyn ReplyInterner,
) -> Result<RecipientStatus, DecodeError> {
    let state =
        RecipientState::from_u8(r.u8()?).ok_or(DecodeError::Invalid("unknown recipient state"))?;
    let attempts = r.u16()?;
    let next_attempt = Timestamp::from_millis(r.u64()?);
    let reply = r.str16()?;
    Ok(RecipientStatus {
        state,
        attempts,
        next_attempt,
        last_reply: (!reply.is_empty()).then(|| replies.intern(reply)),
    })
}

/// A decoded message record. `body_offset` is where the body starts,
/// counted from the start of the record (header included).
pub(crate) struct MessageRecord {
    pub id: MessageId,
    pub arrival: Timestamp,
    pub priority: u8,
    pub envelope: Packed,
    pub statuses: Box<[RecipientStatus]>,
    pub body_offset: u32,
}

/// A decoded status record.
pub(crate) struct StatusRecord {
    pub id: MessageId,
    pub changes: Vec<(u32, RecipientStatus)>,
}

/// Any decoded record.
pub(crate) enum Record {
    Message(MessageRecord),
    Status(StatusRecord),
    Remove(MessageId),
    /// A state record: the key and its new value (empty: removed).
    State(Box<str>, Bytes),
    /// A kind this version does not know (written by a newer version, or a
    /// checksum collision): reported and skipped.
    Unknown(u8),
}

/// Decodes a payload whose checksum already matched.
pub(crate) fn decode(
    payload: &[u8],
    replies: &mut dyn ReplyInterner,
) -> Result<Record, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    match r.u8()? {
        KIND_MESSAGE => decode_message(&mut r, replies, false).map(Record::Message),
        KIND_MESSAGE_PRIORITY => decode_message(&mut r, replies, true).map(Record::Message),
        KIND_STATUS => {
            let id = MessageId::from_u64(r.u64()?);
            let n = r.u32()? as usize;
            // Each change takes at least 17 bytes: no allocation beyond the input.
            if n > (payload.len() / 17) + 1 {
                return Err(DecodeError::Truncated);
            }
            let mut changes = Vec::with_capacity(n);
            for _ in 0..n {
                let index = r.u32()?;
                changes.push((index, get_status(&mut r, replies)?));
            }
            Ok(Record::Status(StatusRecord { id, changes }))
        }
        KIND_REMOVE => {
            let id = MessageId::from_u64(r.u64()?);
            let _reason = r.u8()?;
            Ok(Record::Remove(id))
        }
        KIND_STATE => {
            let key = r.str16()?.into();
            let n = r.u32()? as usize;
            let value = Bytes::copy_from_slice(r.take(n)?);
            Ok(Record::State(key, value))
        }
        other => Ok(Record::Unknown(other)),
    }
}

fn decode_message(
    r: &mut Reader<'_>,
    replies: &mut dyn ReplyInterner,
    with_priority: bool,
) -> Result<MessageRecord, DecodeError> {
    let id = MessageId::from_u64(r.u64()?);
    let arrival = Timestamp::from_millis(r.u64()?);
    let priority = match with_priority {
        true => r.u8()?.min(LOWEST_PRIORITY),
        false => DEFAULT_PRIORITY,
    };
    let sender = r.str16()?;
    let meta_len = r.u32()? as usize;
    let meta = r.take(meta_len)?;
    let n = r.u32()? as usize;
    // Each recipient takes at least 17 bytes: bound the allocation by the input.
    if n == 0 || n > MAX_RECIPIENTS || n > r.buf.len() / 17 {
        return Err(DecodeError::Invalid("bad recipient count"));
    }
    // The envelope goes straight into its packed form: one allocation of
    // the exact size, measured by a first pass over the recipients.
    let mut probe = Reader {
        buf: r.buf,
        pos: r.pos,
    };
    let mut size = sender.len() + meta.len();
    for _ in 0..n {
        size += 4 + probe.bytes16()?.len() + probe.bytes16()?.len();
        probe.take(11)?; // state, attempts, next attempt
        probe.bytes16()?; // last reply
    }
    let mut envelope = Packer::new(sender.as_bytes(), meta, n as u32, size);
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let address = r.str16()?;
        let params = r.bytes16()?;
        envelope.recipient(address.as_bytes(), params);
        statuses.push(get_status(r, replies)?);
    }
    let body_offset = (RECORD_HEADER_LEN + r.pos) as u32;
    let _body = r.rest();
    Ok(MessageRecord {
        id,
        arrival,
        priority,
        envelope: envelope.finish(),
        statuses: statuses.into_boxed_slice(),
        body_offset,
    })
}

/// What [`check_record`] found at a position.
pub(crate) enum Check<'a> {
    /// A whole record with a good checksum: its payload and total length.
    Valid { payload: &'a [u8], total: usize },
    /// Not a record (bad magic, bad length or checksum).
    Invalid(&'static str),
    /// The bytes end before the record does (a torn write at the tail).
    Incomplete,
}

/// Validates the record starting at `buf[0]` against `salt`.
pub(crate) fn check_record(buf: &[u8], salt: u32) -> Check<'_> {
    if buf.len() < RECORD_HEADER_LEN {
        return Check::Incomplete;
    }
    if buf[..4] != RECORD_MAGIC {
        return Check::Invalid("bad record magic");
    }
    let len_bytes: [u8; 4] = buf[4..8].try_into().expect("4");
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Check::Invalid("bad record length");
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Check::Incomplete;
    }
    let stored = u32::from_le_bytes(buf[8..12].try_into().expect("4")) ^ salt;
    let payload = &buf[RECORD_HEADER_LEN..total];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
    if crc != stored {
        return Check::Invalid("checksum mismatch");
    }
    Check::Valid { payload, total }
}
