//! How messages travel from a draining node to a peer: a binary batch
//! (`application/x-tern-transfer`), each message whole (envelope,
//! application data, each recipient with its parameters and status,
//! priority, arrival, due time, and the body byte for byte, so its DKIM
//! signature stays valid). Decoding checks every length against what is
//! left and every text for UTF-8: a damaged or hostile batch is an error,
//! never a panic. Owns the format; never touches a queue.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use queue::{EnvelopeRecipient, RecipientState, RecipientStatus, Timestamp};

/// The first bytes of a batch.
const MAGIC: &[u8; 8] = b"TERNXFR1";
/// Most messages in one batch.
pub const MAX_BATCH: usize = 100_000;
/// Most recipients of one message.
const MAX_RECIPIENTS: usize = 100_000;

/// One message as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Its queue id on the node that hands it over.
    pub origin_id: u64,
    /// When it was received, in milliseconds since the epoch.
    pub arrival_ms: u64,
    /// When its pending recipients are due, in milliseconds since the
    /// epoch.
    pub due_ms: u64,
    /// Its delivery priority.
    pub priority: u8,
    /// The reverse path.
    pub sender: Box<str>,
    /// Tern's message metadata (pool, tenant, DSN parameters...), encoded.
    pub meta: Box<[u8]>,
    /// Each recipient and where it stands.
    pub recipients: Vec<(EnvelopeRecipient, RecipientStatus)>,
    /// The content, as it will be sent.
    pub body: Bytes,
}

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// It does not start as a batch does.
    #[error("not a Tern transfer batch (bad magic)")]
    Magic,
    /// It ends inside a field.
    #[error("the batch is cut short in {0}")]
    Short(&'static str),
    /// A count or a value is out of range.
    #[error("{0} is out of range")]
    Range(&'static str),
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
}

/// A peer's answer to a batch: the messages it holds durably now (the
/// sender may remove its copies of these), and those it refused.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Taken {
    /// Origin ids held durably.
    pub accepted: Vec<u64>,
    /// Origin ids refused, with why.
    pub refused: Vec<Refused>,
}

/// A message a peer refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Refused {
    /// Its origin id.
    pub id: u64,
    /// Why.
    pub error: String,
}

/// `POST /v1/cluster/commit`: the sender removed its copies of these.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Commit {
    /// Origin ids.
    pub ids: Vec<u64>,
}

/// The answer to a commit.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Committed {
    /// Messages made due (ids already committed are not counted).
    pub released: u64,
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.put_slice(&b[..b.len().min(u32::MAX as usize)]);
}

/// Encodes a batch.
pub fn encode(batch: &[Moved]) -> Bytes {
    let size: usize = batch.iter().map(|m| m.body.len() + 256).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    out.put_slice(MAGIC);
    out.put_u32_le(batch.len() as u32);
    for m in batch {
        out.put_u64_le(m.origin_id);
        out.put_u64_le(m.arrival_ms);
        out.put_u64_le(m.due_ms);
        out.put_u8(m.priority);
        put_bytes(&mut out, m.sender.as_bytes());
        put_bytes(&mut out, &m.meta);
        out.put_u32_le(m.recipients.len() as u32);
        for (r, s) in &m.recipients {
            put_bytes(&mut out, r.address.as_bytes());
            put_bytes(&mut out, &r.params);
            out.put_u8(s.state as u8);
            out.put_u16_le(s.attempts);
            out.put_u64_le(s.next_attempt.as_millis());
            match &s.last_reply {
                Some(reply) => {
                    out.put_u8(1);
                    put_bytes(&mut out, reply.as_bytes());
                }
                None => out.put_u8(0),
            }
        }
        put_bytes(&mut out, &m.body);
    }
    out.freeze()
}

/// A cursor over a batch that never reads past its end.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        match self.0.remaining() >= n {
            true => Ok(()),
            false => Err(WireError::Short(what)),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.need(2, what)?;
        Ok(self.0.get_u16_le())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(4, what)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(8, what)?;
        Ok(self.0.get_u64_le())
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let n = self.u32(what)? as usize;
        self.need(n, what)?;
        Ok(self.0.split_to(n))
    }

    fn text(&mut self, what: &'static str) -> Result<Box<str>, WireError> {
        let b = self.bytes(what)?;
        std::str::from_utf8(&b)
            .map(Box::from)
            .map_err(|_| WireError::Utf8(what))
    }

    fn recipient(&mut self) -> Result<(EnvelopeRecipient, RecipientStatus), WireError> {
        let address = self.text("a recipient address")?;
        let params = self.bytes("a recipient's parameters")?.to_vec().into();
        let state = match self.u8("a recipient's state")? {
            0 => RecipientState::Pending,
            1 => RecipientState::Delivered,
            2 => RecipientState::Failed,
            3 => RecipientState::Held,
            _ => return Err(WireError::Range("a recipient's state")),
        };
        let attempts = self.u16("a recipient's attempts")?;
        let next_attempt = Timestamp::from_millis(self.u64("a recipient's next attempt")?);
        let last_reply = match self.u8("a recipient's last reply")? {
            0 => None,
            1 => Some(self.text("a recipient's last reply")?.into()),
            _ => return Err(WireError::Range("a recipient's last reply")),
        };
        let status = RecipientStatus {
            state,
            attempts,
            next_attempt,
            last_reply,
        };
        Ok((EnvelopeRecipient { address, params }, status))
    }

    fn message(&mut self) -> Result<Moved, WireError> {
        let origin_id = self.u64("a message id")?;
        let arrival_ms = self.u64("an arrival")?;
        let due_ms = self.u64("a due time")?;
        let priority = self.u8("a priority")?;
        let sender = self.text("a sender")?;
        let meta = self.bytes("a message's metadata")?.to_vec().into();
        let n = self.u32("a recipient count")? as usize;
        if n == 0 || n > MAX_RECIPIENTS {
            return Err(WireError::Range("a recipient count"));
        }
        let recipients = (0..n)
            .map(|_| self.recipient())
            .collect::<Result<Vec<_>, _>>()?;
        let body = self.bytes("a body")?;
        Ok(Moved {
            origin_id,
            arrival_ms,
            due_ms,
            priority,
            sender,
            meta,
            recipients,
            body,
        })
    }
}

/// Decodes a batch; the bodies share `bytes` (no copy).
pub fn decode(bytes: Bytes) -> Result<Vec<Moved>, WireError> {
    let mut r = Reader(bytes);
    r.need(MAGIC.len(), "the magic")?;
    if &r.0.split_to(MAGIC.len())[..] != MAGIC {
        return Err(WireError::Magic);
    }
    let n = r.u32("the message count")? as usize;
    if n > MAX_BATCH {
        return Err(WireError::Range("the message count"));
    }
    let batch = (0..n).map(|_| r.message()).collect::<Result<Vec<_>, _>>()?;
    match r.0.is_empty() {
        true => Ok(batch),
        false => Err(WireError::Range("the batch length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Moved {
        let status = |state, attempts, at, reply: Option<&str>| RecipientStatus {
            state,
            attempts,
            next_attempt: Timestamp::from_millis(at),
            last_reply: reply.map(Into::into),
        };
        Moved {
            origin_id: 77,
            arrival_ms: 1_700_000_000_000,
            due_ms: 1_700_000_060_000,
            priority: 0,
            sender: "app@shop.test".into(),
            meta: vec![1, 2, 3].into(),
            recipients: vec![
                (
                    EnvelopeRecipient::new("done@a.test"),
                    status(RecipientState::Delivered, 1, 0, Some("250 ok")),
                ),
                (
                    EnvelopeRecipient {
                        address: "later@b.test".into(),
                        params: vec![1, 1, 1, 0, 4].into(),
                    },
                    status(
                        RecipientState::Pending,
                        2,
                        1_700_000_060_000,
                        Some("451 later"),
                    ),
                ),
            ],
            body: Bytes::from_static(b"DKIM-Signature: v=1\r\n\r\nbody\r\n"),
        }
    }

    #[test]
    fn a_batch_round_trips_byte_for_byte() {
        let batch = vec![
            sample(),
            Moved {
                origin_id: 78,
                ..sample()
            },
        ];
        assert_eq!(decode(encode(&batch)).unwrap(), batch);
        assert_eq!(decode(encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let good = encode(&[sample()]);
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = good.to_vec();
        bad[0] = b'X';
        assert_eq!(decode(bad.into()), Err(WireError::Magic));
        let mut long = good.to_vec();
        long.push(0);
        assert!(decode(long.into()).is_err(), "trailing bytes");
        // Every single-byte change either decodes or is refused cleanly.
        for i in 0..good.len() {
            let mut b = good.to_vec();
            b[i] ^= 0xff;
            let _ = decode(b.into());
        }
    }
}
