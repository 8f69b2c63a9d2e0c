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
//!   a status is its state u8 (0 pending, 1 delivered, 2 failed, 3 held),
//!   attempts u16, next attempt u64 (ms) and last reply (u16 length);
//! - `3` remove: id u64, reason u8;
//! - `5` state: key (u16 length, UTF-8), value (u32 length): `key` holds
//!   `value` from now on; an empty value removes `key`.
//!
//! The salt is random per segment and stored in the segment header, so bytes
//! that merely look like a record (stale data, or a record embedded in a
//! message body) never pass the checksum during resynchronisation.
//! Decoding never trusts a length: every read is bounds-checked and returns
//! [`DecodeError`] instead of panicking.

use bytes::Bytes;

use crate::types::{
    Envelope, LOWEST_PRIORITY, MAX_REPLY_LEN, MessageId, RecipientStatus, Timestamp,
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
pub(crate) const KIND_STATE: u8 = 5;

mod decode;
pub(crate) use decode::*;
#[cfg(test)]
mod props;

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

/// Longest state key, and largest state value.
pub(crate) const MAX_STATE_KEY: usize = 255;
pub(crate) const MAX_STATE_VALUE: usize = 16 << 20;

/// Encodes a state record: `key` holds `value` from now on (an empty
/// value removes it). The caller checks the sizes.
pub(crate) fn encode_state(key: &str, value: &[u8]) -> Encoded {
    let mut head = begin(KIND_STATE, 6 + key.len() + value.len());
    put_str16(&mut head, key.as_bytes());
    head.extend_from_slice(&(value.len() as u32).to_le_bytes());
    head.extend_from_slice(value);
    finish(head, Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DEFAULT_PRIORITY, EnvelopeRecipient, RecipientState};
    use std::collections::HashMap;
    use std::sync::Arc;

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
        assert_eq!(m.envelope.unpack(), env);
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
        assert_eq!((m.priority, m.envelope.unpack()), (DEFAULT_PRIORITY, env));
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
