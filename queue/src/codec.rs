//! Record encoding and decoding: the byte layout of everything the queue
//! writes, and the only code that interprets those bytes.
//!
//! A record is a 12-byte header and a payload:
//!
//! ```text
//! magic   u32  0xD1E6_5254 (little-endian bytes 54 52 E6 D1)
//! len     u32  payload length in bytes, 1..=MAX_PAYLOAD
//! crc     u32  crc32c(len bytes ++ payload) XOR the segment's salt
//! payload      kind (u8) then the kind's fields, little-endian
//! ```
//!
//! Kinds:
//! - `4` message: id u64, arrival u64 (ms), priority u8, sender, meta,
//!   recipient count, per recipient its address, parameters and status,
//!   then the body as the rest of the payload;
//! - `1` message as written before priorities: the same without the
//!   priority byte (read as [`DEFAULT_PRIORITY`]; never written now);
//! - `2` status: id u64, then per changed recipient its index and status;
//! - `3` remove: id u64, reason u8.
//!
//! The salt is random per segment and stored in the segment header, so bytes
//! that merely look like a record (stale data, or a record embedded in a
//! message body) never pass the checksum during resynchronisation.
//! Decoding never trusts a length: every read is bounds-checked and returns
//! [`DecodeError`] instead of panicking.

use std::sync::Arc;

use bytes::Bytes;

use crate::types::{
    DEFAULT_PRIORITY, Envelope, EnvelopeRecipient, LOWEST_PRIORITY, MAX_REPLY_LEN, MessageId,
    RecipientState, RecipientStatus, Timestamp,
};

/// Marks the start of every record.
pub(crate) const RECORD_MAGIC: [u8; 4] = 0xD1E6_5254u32.to_le_bytes();
/// Bytes before the payload.
pub(crate) const RECORD_HEADER_LEN: usize = 12;
/// Largest payload accepted (1 GiB): anything claiming more is corrupt.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_STATUS: u8 = 2;
pub(crate) const KIND_REMOVE: u8 = 3;
pub(crate) const KIND_MESSAGE_PRIORITY: u8 = 4;

/// Most recipients one message may have in the spool format.
pub(crate) const MAX_RECIPIENTS: usize = 1_000_000;

/// A record ready to be written: `head` holds the header and every payload
/// byte before the body; `body` is the message body (empty for other kinds),
/// referenced, not copied.
pub(crate) struct Encoded {
    pub head: Vec<u8>,
    pub body: Bytes,
}

impl Encoded {
    /// Total bytes on disk.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Mixes the segment salt into the checksum; called once, by the writer,
    /// when it knows which segment the record goes to.
    pub fn seal(&mut self, salt: u32) {
        let crc = u32::from_le_bytes(self.head[8..12].try_into().expect("4 bytes")) ^ salt;
        self.head[8..12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Starts a record's head buffer with room for the header.
fn begin(kind: u8, capacity: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(RECORD_HEADER_LEN + capacity);
    head.extend_from_slice(&RECORD_MAGIC);
    head.extend_from_slice(&[0; 8]); // len and crc, filled by `finish`
    head.push(kind);
    head
}

/// Fills in length and (unsalted) checksum.
fn finish(mut head: Vec<u8>, body: Bytes) -> Encoded {
    let payload_len = head.len() - RECORD_HEADER_LEN + body.len();
    let len = u32::try_from(payload_len).expect("payload size checked by the caller");
    head[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&len.to_le_bytes()),
        &head[RECORD_HEADER_LEN..],
    );
    let crc = crc32c::crc32c_append(crc, &body);
    head[8..12].copy_from_slice(&crc.to_le_bytes());
    Encoded { head, body }
}

fn put_str16(buf: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("length checked by the caller");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s);
}

fn put_status(buf: &mut Vec<u8>, st: &RecipientStatus) {
    buf.push(st.state as u8);
    buf.extend_from_slice(&st.attempts.to_le_bytes());
    buf.extend_from_slice(&st.next_attempt.as_millis().to_le_bytes());
    let reply = st.last_reply.as_deref().unwrap_or("");
    put_str16(buf, truncate_reply(reply).as_bytes());
}

/// Cuts a reply to at most [`MAX_REPLY_LEN`] bytes at a char boundary.
pub(crate) fn truncate_reply(reply: &str) -> &str {
    if reply.len() <= MAX_REPLY_LEN {
        return reply;
    }
    let mut end = MAX_REPLY_LEN;
    while !reply.is_char_boundary(end) {
        end -= 1;
    }
    &reply[..end]
}

/// Checks what the format can hold; run before encoding a new message.
pub(crate) fn check_message(env: &Envelope, body_len: usize) -> Result<(), &'static str> {
    if env.recipients.is_empty() {
        return Err("a message needs at least one recipient");
    }
    if env.recipients.len() > MAX_RECIPIENTS {
        return Err("too many recipients for one message");
    }
    if env.sender.len() > u16::MAX as usize {
        return Err("sender address too long");
    }
    if env
        .recipients
        .iter()
        .any(|r| r.address.len() > u16::MAX as usize || r.params.len() > u16::MAX as usize)
    {
        return Err("recipient address or parameters too long");
    }
    let rcpt_bytes: usize = env
        .recipients
        .iter()
        .map(|r| r.address.len() + r.params.len() + 4 + STATUS_LEN_MAX)
        .sum();
    if body_len + env.meta.len() + env.sender.len() + rcpt_bytes + 64 > MAX_PAYLOAD {
        return Err("message too large for the spool format");
    }
    Ok(())
}

const STATUS_LEN_MAX: usize = 13 + MAX_REPLY_LEN;

/// Encodes a full message record (a new message, or a relocated one with
/// its current statuses).
pub(crate) fn encode_message(
    id: MessageId,
    (arrival, priority): (Timestamp, u8),
    env: &Envelope,
    statuses: &[RecipientStatus],
    body: Bytes,
) -> Encoded {
    debug_assert_eq!(env.recipients.len(), statuses.len());
    let estimate = 32
        + env.sender.len()
        + env.meta.len()
        + env
            .recipients
            .iter()
            .map(|r| r.address.len() + r.params.len() + 17)
            .sum::<usize>();
    let mut head = begin(KIND_MESSAGE_PRIORITY, estimate);
    head.extend_from_slice(&id.as_u64().to_le_bytes());
    head.extend_from_slice(&arrival.as_millis().to_le_bytes());
    head.push(priority.min(LOWEST_PRIORITY));
    put_str16(&mut head, env.sender.as_bytes());
    head.extend_from_slice(&(env.meta.len() as u32).to_le_bytes());
    head.extend_from_slice(&env.meta);
    head.extend_from_slice(&(env.recipients.len() as u32).to_le_bytes());
    for (r, st) in env.recipients.iter().zip(statuses) {
        put_str16(&mut head, r.address.as_bytes());
        put_str16(&mut head, &r.params);
        put_status(&mut head, st);
    }
    finish(head, body)
}

/// Encodes a status record: new statuses for some recipients of `id`.
pub(crate) fn encode_status(id: MessageId, changes: &[(u32, RecipientStatus)]) -> Encoded {
    let mut head = begin(KIND_STATUS, 12 + changes.len() * 20);
    head.extend_from_slice(&id.as_u64().to_le_bytes());
    head.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for (index, st) in changes {
        head.extend_from_slice(&index.to_le_bytes());
        put_status(&mut head, st);
    }
    finish(head, Bytes::new())
}

/// Encodes a remove record.
pub(crate) fn encode_remove(id: MessageId) -> Encoded {
    let mut head = begin(KIND_REMOVE, 9);
    head.extend_from_slice(&id.as_u64().to_le_bytes());
    head.push(0); // reason: reserved
    finish(head, Bytes::new())
}

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
    pub envelope: Envelope,
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
    let sender = r.str16()?.into();
    let meta_len = r.u32()? as usize;
    let meta = r.take(meta_len)?.into();
    let n = r.u32()? as usize;
    // Each recipient takes at least 17 bytes: bound the allocation by the input.
    if n == 0 || n > MAX_RECIPIENTS || n > r.buf.len() / 17 {
        return Err(DecodeError::Invalid("bad recipient count"));
    }
    let mut recipients = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let address = r.str16()?.into();
        let params = r.bytes16()?.into();
        recipients.push(EnvelopeRecipient { address, params });
        statuses.push(get_status(r, replies)?);
    }
    let body_offset = (RECORD_HEADER_LEN + r.pos) as u32;
    let _body = r.rest();
    Ok(MessageRecord {
        id,
        arrival,
        priority,
        envelope: Envelope {
            sender,
            meta,
            recipients: recipients.into_boxed_slice(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub(crate) struct Interner(HashMap<Box<str>, Arc<str>>);
    impl ReplyInterner for Interner {
        fn intern(&mut self, text: &str) -> Arc<str> {
            self.0
                .entry(text.into())
                .or_insert_with(|| text.into())
                .clone()
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            sender: "bounce@shop.example".into(),
            meta: vec![1, 2, 3].into(),
            recipients: vec![
                EnvelopeRecipient::new("a@x.example"),
                EnvelopeRecipient {
                    address: "b@y.example".into(),
                    params: b"NOTIFY=FAILURE".to_vec().into(),
                },
            ]
            .into(),
        }
    }

    fn sealed(mut e: Encoded, salt: u32) -> Vec<u8> {
        e.seal(salt);
        [e.head.as_slice(), &e.body].concat()
    }

    #[test]
    fn message_round_trips() {
        let env = envelope();
        let mut st = vec![RecipientStatus::pending(Timestamp::from_millis(5)); 2];
        st[1].last_reply = Some("451 4.7.1 try later".into());
        let body = Bytes::from_static(b"Subject: x\r\n\r\nhello\r\n");
        let bytes = sealed(
            encode_message(
                MessageId::from_u64(7),
                (Timestamp::from_millis(3), 2),
                &env,
                &st,
                body.clone(),
            ),
            99,
        );
        let Check::Valid { payload, total } = check_record(&bytes, 99) else {
            panic!("invalid")
        };
        assert_eq!(total, bytes.len());
        let Record::Message(m) = decode(payload, &mut Interner::default()).unwrap() else {
            panic!("kind")
        };
        assert_eq!(m.id, MessageId::from_u64(7));
        assert_eq!(m.arrival, Timestamp::from_millis(3));
        assert_eq!(m.priority, 2);
        assert_eq!(m.envelope, env);
        assert_eq!(&*m.statuses, &st[..]);
        assert_eq!(&bytes[m.body_offset as usize..], &body[..]);

        // A record written before priorities existed (kind 1: no priority
        // byte) still reads, at the default priority.
        let mut head = encode_message(
            MessageId::from_u64(7),
            (Timestamp::from_millis(3), 2),
            &env,
            &st,
            body.clone(),
        )
        .head;
        head[RECORD_HEADER_LEN] = KIND_MESSAGE;
        head.remove(RECORD_HEADER_LEN + 17); // the priority byte
        let bytes = sealed(finish(head, body.clone()), 99);
        let Check::Valid { payload, .. } = check_record(&bytes, 99) else {
            panic!("invalid old record")
        };
        let Record::Message(m) = decode(payload, &mut Interner::default()).unwrap() else {
            panic!("kind")
        };
        assert_eq!((m.priority, m.envelope), (DEFAULT_PRIORITY, env));
        assert_eq!(&bytes[m.body_offset as usize..], &body[..]);
    }

    #[test]
    fn wrong_salt_or_flipped_byte_fails_the_checksum() {
        let e = encode_remove(MessageId::from_u64(1));
        let bytes = sealed(e, 1234);
        assert!(matches!(check_record(&bytes, 1234), Check::Valid { .. }));
        assert!(matches!(
            check_record(&bytes, 1235),
            Check::Invalid("checksum mismatch")
        ));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                !matches!(check_record(&b, 1234), Check::Valid { .. }),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn short_input_is_incomplete() {
        let bytes = sealed(encode_remove(MessageId::from_u64(1)), 0);
        for cut in 0..bytes.len() {
            assert!(
                matches!(check_record(&bytes[..cut], 0), Check::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn status_and_remove_round_trip() {
        let st = RecipientStatus {
            state: RecipientState::Delivered,
            attempts: 3,
            next_attempt: Timestamp::from_millis(1),
            last_reply: Some("250 ok".into()),
        };
        let bytes = sealed(encode_status(MessageId::from_u64(9), &[(1, st.clone())]), 0);
        let Check::Valid { payload, .. } = check_record(&bytes, 0) else {
            panic!()
        };
        let Record::Status(s) = decode(payload, &mut Interner::default()).unwrap() else {
            panic!()
        };
        assert_eq!(s.id, MessageId::from_u64(9));
        assert_eq!(s.changes, vec![(1, st)]);
    }

    #[test]
    fn decoding_arbitrary_payloads_never_panics() {
        // A deterministic pseudo-random sweep over kinds and lengths.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in 0..300 {
            for _ in 0..50 {
                let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if let Some(first) = p.first_mut() {
                    *first = (*first % 4) + 1;
                }
                let _ = decode(&p, &mut Interner::default());
            }
        }
    }

    #[test]
    fn long_replies_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_REPLY_LEN);
        let cut = truncate_reply(&long);
        assert!(cut.len() <= MAX_REPLY_LEN);
        assert!(long.starts_with(cut));
    }
}
