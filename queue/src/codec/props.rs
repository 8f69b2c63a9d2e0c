//! Property tests of the spool format: any message or status record
//! encodes and decodes to itself; a record cut anywhere is never taken
//! for a whole one; arbitrary payload bytes decode to a record or an
//! error, never a panic.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::tests::Interner;
use super::*;
use crate::types::{EnvelopeRecipient, RecipientState};

/// The status as it reads back: an empty reply is stored as none.
fn stored(st: &RecipientStatus) -> RecipientStatus {
    let mut st = st.clone();
    st.last_reply = st.last_reply.filter(|r| !r.is_empty());
    st
}

fn status() -> impl Strategy<Value = RecipientStatus> {
    (
        0u8..4,
        any::<u16>(),
        any::<u32>(),
        proptest::option::of("[ -~]{0,300}"),
    )
        .prop_map(|(state, attempts, next, reply)| RecipientStatus {
            state: RecipientState::from_u8(state).expect("0..4"),
            attempts,
            next_attempt: Timestamp::from_millis(u64::from(next)),
            last_reply: reply.map(|r| Arc::from(r.as_str())),
        })
}

fn recipient() -> impl Strategy<Value = (EnvelopeRecipient, RecipientStatus)> {
    (
        "[a-z0-9.]{1,30}@[a-z0-9.]{1,30}",
        proptest::collection::vec(any::<u8>(), 0..40),
        status(),
    )
        .prop_map(|(address, params, st)| {
            let r = EnvelopeRecipient {
                address: address.into(),
                params: params.into(),
            };
            (r, st)
        })
}

fn sealed(mut e: Encoded, salt: u32) -> Vec<u8> {
    e.seal(salt);
    [e.head.as_slice(), &e.body].concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_message_record_round_trips(
        id in any::<u64>(),
        arrival in any::<u32>(),
        priority in 0u8..=LOWEST_PRIORITY,
        sender in "[ -~]{0,80}",
        meta in proptest::collection::vec(any::<u8>(), 0..100),
        rcpts in proptest::collection::vec(recipient(), 1..12),
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        salt in any::<u32>(),
    ) {
        let (recipients, statuses): (Vec<_>, Vec<_>) = rcpts.into_iter().unzip();
        let env = Envelope { sender: sender.into(), meta: meta.into(), recipients: recipients.into() };
        let body = Bytes::from(body);
        let at = Timestamp::from_millis(u64::from(arrival));
        let bytes = sealed(encode_message(MessageId::from_u64(id), (at, priority), &env, &statuses, body.clone()), salt);
        let Check::Valid { payload, total } = check_record(&bytes, salt) else {
            panic!("a fresh record must check")
        };
        prop_assert_eq!(total, bytes.len());
        let Ok(Record::Message(m)) = decode(payload, &mut Interner::default()) else {
            panic!("a fresh record must decode as a message")
        };
        prop_assert_eq!(m.id, MessageId::from_u64(id));
        prop_assert_eq!(m.arrival, at);
        prop_assert_eq!(m.priority, priority);
        prop_assert_eq!(&m.envelope.unpack(), &env);
        let want: Vec<RecipientStatus> = statuses.iter().map(stored).collect();
        prop_assert_eq!(&*m.statuses, &want[..]);
        prop_assert_eq!(&bytes[m.body_offset as usize..], &body[..]);
        // Cut anywhere: never a whole record.
        for cut in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let whole = matches!(check_record(&bytes[..cut], salt), Check::Valid { .. });
            prop_assert!(!whole, "a record cut at {} of {} checked", cut, bytes.len());
        }
    }

    #[test]
    fn a_status_record_round_trips(
        id in any::<u64>(),
        changes in proptest::collection::vec((any::<u32>(), status()), 0..20),
        salt in any::<u32>(),
    ) {
        let bytes = sealed(encode_status(MessageId::from_u64(id), &changes), salt);
        let Check::Valid { payload, .. } = check_record(&bytes, salt) else {
            panic!("a fresh record must check")
        };
        let Ok(Record::Status(s)) = decode(payload, &mut Interner::default()) else {
            panic!("a fresh record must decode as a status record")
        };
        prop_assert_eq!(s.id, MessageId::from_u64(id));
        let want: Vec<(u32, RecipientStatus)> = changes.iter().map(|(i, st)| (*i, stored(st))).collect();
        prop_assert_eq!(&s.changes[..], &want[..]);
    }

    #[test]
    fn arbitrary_payloads_decode_or_fail_but_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let _ = decode(&payload, &mut Interner::default());
    }
}
