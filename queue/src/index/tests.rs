//! Unit tests of the index's bookkeeping.
use super::*;
use crate::packed::Packed;
use crate::types::{DomainCount, Envelope, EnvelopeRecipient, MessageInfo};

fn env(n: usize) -> Packed {
    Packed::pack(&Envelope {
        sender: "s@x".into(),
        meta: Box::default(),
        recipients: (0..n)
            .map(|i| EnvelopeRecipient::new(format!("r{i}@d{i}.example")))
            .collect(),
    })
}

fn loc(seg: SegId, offset: u32) -> Loc {
    Loc {
        seg,
        offset,
        len: 100,
        body_offset: 60,
    }
}

fn pending(n: usize, at: u64) -> Box<[RecipientStatus]> {
    vec![RecipientStatus::pending(Timestamp::from_millis(at)); n].into()
}

fn done() -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Delivered,
        ..RecipientStatus::pending(Timestamp::default())
    }
}

/// Queues message `id` with `n` recipients due at `at`, homed in `seg`.
fn put(ix: &mut Index, id: u64, n: usize, at: u64, seg: SegId) -> MessageId {
    let id = MessageId::from_u64(id);
    ix.apply_full(
        id,
        env(n),
        pending(n, at),
        (Timestamp::default(), 1),
        loc(seg, 32),
        None,
    );
    id
}

fn index_with_segments(ids: &[SegId]) -> Index {
    let mut ix = Index::new(0);
    for id in ids {
        ix.seg(*id);
    }
    ix.active = *ids.last().unwrap();
    ix
}

#[test]
fn last_recipient_done_removes_and_pins_the_tombstone_segment() {
    let mut ix = index_with_segments(&[1, 2, 3]);
    let id = put(&mut ix, 1, 2, 0, 1);
    assert_eq!(ix.pending_recipients(), 2);
    assert_eq!(
        ix.apply_status(id, &[(0, done())], 2, true),
        Some(UpdateOutcome::StillQueued)
    );
    assert_eq!(ix.segments[&2].refs, 1);
    assert_eq!(
        ix.apply_status(id, &[(1, done())], 2, true),
        Some(UpdateOutcome::Removed)
    );
    assert_eq!(ix.message_count() as usize, 0);
    assert_eq!(ix.pending_recipients(), 0);
    // Segment 2 holds the record that ended a message homed in 1: 1 must go first.
    assert_eq!(ix.deletable(), vec![1]);
    ix.segments.remove(&1);
    assert_eq!(ix.deletable(), vec![2]);
}

#[test]
fn relocation_supersedes_and_releases_old_segments() {
    let mut ix = index_with_segments(&[1, 2, 3]);
    let id = put(&mut ix, 1, 2, 0, 1);
    ix.apply_status(id, &[(0, done())], 2, true);
    let current = ix.entry(id).unwrap().statuses.clone();
    ix.apply_full(
        id,
        env(2),
        current,
        (Timestamp::default(), 1),
        loc(3, 32),
        None,
    );
    assert_eq!(ix.segments[&1].refs, 0);
    assert_eq!(ix.segments[&2].refs, 0);
    assert_eq!(ix.segments[&3].refs, 1);
    assert_eq!(ix.pending_recipients(), 1);
    assert!(ix.segments[&3].deps.contains(&1));
    assert_eq!(ix.deletable(), vec![1, 2]);
}

#[test]
fn due_order_and_in_flight() {
    let mut ix = index_with_segments(&[1]);
    for (i, at) in [(1u64, 30u64), (2, 10), (3, 20)] {
        ix.apply_full(
            MessageId::from_u64(i),
            env(1),
            pending(1, at),
            (Timestamp::default(), 1),
            loc(1, 0),
            None,
        );
    }
    assert_eq!(ix.next_due(), Some(Timestamp::from_millis(10)));
    let got: Vec<u64> = ix
        .take_due(Timestamp::from_millis(25), 10)
        .iter()
        .map(|m| m.id.as_u64())
        .collect();
    assert_eq!(got, vec![2, 3]);
    assert!(
        ix.take_due(Timestamp::from_millis(25), 10).is_empty(),
        "in flight is not handed out twice"
    );
    assert!(ix.release(MessageId::from_u64(2)));
    assert_eq!(ix.take_due(Timestamp::from_millis(25), 10).len(), 1);
    let mut later = RecipientStatus::pending(Timestamp::from_millis(100));
    later.attempts = 1;
    ix.apply_status(MessageId::from_u64(3), &[(0, later)], 1, true);
    assert_eq!(ix.next_due(), Some(Timestamp::from_millis(30)));
}

#[test]
fn domains_count_messages_once() {
    let mut ix = index_with_segments(&[1]);
    let e = Packed::pack(&Envelope {
        sender: "".into(),
        meta: Box::default(),
        recipients: vec![
            EnvelopeRecipient::new("a@X.example"),
            EnvelopeRecipient::new("b@x.example"),
        ]
        .into(),
    });
    ix.apply_full(
        MessageId::from_u64(1),
        e,
        pending(2, 0),
        (Timestamp::default(), 1),
        loc(1, 0),
        None,
    );
    ix.apply_full(
        MessageId::from_u64(2),
        env(1),
        pending(1, 0),
        (Timestamp::default(), 1),
        loc(1, 0),
        None,
    );
    let d = ix.domains();
    assert_eq!(
        d[0],
        DomainCount {
            domain: "x.example".into(),
            messages: 1,
            recipients: 2
        }
    );
    assert_eq!(
        d[1],
        DomainCount {
            domain: "d0.example".into(),
            messages: 1,
            recipients: 1
        }
    );
}

#[test]
fn body_cache_respects_budget_and_ends_at_first_attempt() {
    let mut ix = index_with_segments(&[1]);
    ix.cache_budget = 10;
    let body = Bytes::from_static(b"0123456789");
    ix.apply_full(
        MessageId::from_u64(1),
        env(1),
        pending(1, 0),
        (Timestamp::default(), 1),
        loc(1, 0),
        Some(body.clone()),
    );
    ix.apply_full(
        MessageId::from_u64(2),
        env(1),
        pending(1, 0),
        (Timestamp::default(), 1),
        loc(1, 0),
        Some(body),
    );
    assert!(ix.is_cached(MessageId::from_u64(1)));
    assert!(!ix.is_cached(MessageId::from_u64(2)));
    let mut st = RecipientStatus::pending(Timestamp::from_millis(5));
    st.attempts = 1;
    ix.apply_status(MessageId::from_u64(1), &[(0, st)], 1, true);
    assert!(!ix.is_cached(MessageId::from_u64(1)));
    assert_eq!(ix.cache_used, 0);
}

#[test]
fn equal_replies_of_different_messages_share_one_copy() {
    let mut ix = index_with_segments(&[1]);
    let a = put(&mut ix, 1, 1, 0, 1);
    let b = put(&mut ix, 2, 1, 0, 1);
    let deferred = |text: &str| RecipientStatus {
        attempts: 1,
        last_reply: Some(text.into()),
        ..RecipientStatus::pending(Timestamp::from_millis(9))
    };
    // Separate allocations of the same text, as two jobs produce them.
    ix.apply_status(a, &[(0, deferred("421 4.7.0 try later"))], 1, true);
    ix.apply_status(b, &[(0, deferred("421 4.7.0 try later"))], 1, true);
    let reply = |ix: &Index, id| {
        ix.entry(id).unwrap().statuses[0]
            .last_reply
            .clone()
            .unwrap()
    };
    assert!(Arc::ptr_eq(&reply(&ix, a), &reply(&ix, b)));
    ix.apply_status(b, &[(0, deferred("451 other"))], 1, true);
    assert_eq!(&*reply(&ix, b), "451 other");
    assert!(!Arc::ptr_eq(&reply(&ix, a), &reply(&ix, b)));
}

#[test]
fn due_messages_are_taken_in_priority_order() {
    let mut ix = index_with_segments(&[1]);
    let queue = |ix: &mut Index, id: u64, at: u64, priority: u8| {
        ix.apply_full(
            MessageId::from_u64(id),
            env(1),
            pending(1, at),
            (Timestamp::default(), priority),
            loc(1, 32),
            None,
        );
    };
    queue(&mut ix, 1, 10, 1); // bulk, due first
    queue(&mut ix, 2, 11, 1);
    queue(&mut ix, 3, 50, 0); // urgent, due later
    queue(&mut ix, 4, 1000, 0); // urgent, not due yet
    assert_eq!(ix.next_due(), Some(Timestamp::from_millis(10)));
    let ids = |v: Vec<MessageInfo>| v.iter().map(|m| m.id.as_u64()).collect::<Vec<_>>();
    assert_eq!(
        ids(ix.take_due(Timestamp::from_millis(100), 2)),
        [3, 1],
        "urgent first"
    );
    assert_eq!(ids(ix.take_due(Timestamp::from_millis(100), 10)), [2]);
    assert_eq!(ix.next_due(), Some(Timestamp::from_millis(1000)));
    let info = ix
        .entry(MessageId::from_u64(4))
        .unwrap()
        .info(MessageId::from_u64(4));
    assert_eq!(info.priority, 0);
}

#[test]
fn a_claimed_message_is_not_handed_out_until_released() {
    let mut ix = index_with_segments(&[1]);
    let id = put(&mut ix, 7, 2, 5_000, 1);
    let claimed = ix.claim(id).expect("queued and not being sent");
    assert_eq!(claimed.id, id);
    let later = Timestamp::from_millis(10_000);
    assert!(
        ix.take_due(later, 10).is_empty(),
        "a claimed message is not due"
    );
    assert!(ix.release(id));
    assert_eq!(ix.take_due(later, 10).len(), 1, "due again once released");
    assert!(ix.claim(MessageId::from_u64(99)).is_none());
}

#[test]
fn a_hand_out_is_stale_once_claimed_and_a_send_blocks_claims() {
    let mut ix = index_with_segments(&[1]);
    let id = put(&mut ix, 7, 1, 5_000, 1);
    let now = Timestamp::from_millis(10_000);
    let handout = ix.take_due(now, 10)[0].handout;
    assert!(ix.is_current(id, handout));
    let info = ix.begin(id, handout).expect("current");
    assert!(info.in_flight && !info.scheduled);
    assert!(ix.claim(id).is_none(), "being sent");
    ix.end(id);
    let waiting = ix.entry(id).unwrap().info(id);
    assert!(!waiting.in_flight && waiting.scheduled);
    let before = ix.disturbed;
    let claimed = ix.claim(id).expect("waiting: changes hands");
    assert_ne!(claimed.handout, handout);
    assert_eq!(ix.disturbed, before + 1);
    assert!(
        !ix.is_current(id, handout),
        "the scheduler's hand-out is stale"
    );
    assert!(ix.begin(id, handout).is_none());
    assert!(ix.release(id));
    assert!(
        ix.begin(id, claimed.handout).is_none(),
        "released: not taken"
    );
}

/// The per-domain counts, by walking every message (what the kept counts
/// must equal).
fn walked(ix: &Index) -> Vec<DomainCount> {
    let mut by: HashMap<String, (u64, u64)> = HashMap::new();
    for e in ix.messages.values() {
        let mut seen = HashSet::new();
        for (r, st) in e.env.unpack().recipients.iter().zip(e.statuses.iter()) {
            if st.state.is_final() {
                continue;
            }
            let d = r.domain().to_ascii_lowercase();
            let slot = by.entry(d.clone()).or_default();
            slot.1 += 1;
            if seen.insert(d) {
                slot.0 += 1;
            }
        }
    }
    let mut out: Vec<DomainCount> = by
        .into_iter()
        .map(|(domain, (messages, recipients))| DomainCount {
            domain,
            messages,
            recipients,
        })
        .collect();
    out.sort_by(|a, b| {
        b.recipients
            .cmp(&a.recipients)
            .then_with(|| a.domain.cmp(&b.domain))
    });
    out
}

#[test]
fn kept_domain_counts_equal_a_walk_through_any_changes() {
    let mut ix = index_with_segments(&[1]);
    let mut seed = 11u64;
    // A small linear congruential generator: any number below `n`.
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let domains = ["a.example", "A.example", "b.example", "c.EXAMPLE"];
    let states = [
        RecipientState::Pending,
        RecipientState::Delivered,
        RecipientState::Failed,
        RecipientState::Held,
    ];
    for step in 0..3000u64 {
        let id = MessageId::from_u64(1 + next(199));
        match next(4) {
            0 if !ix.contains(id) => {
                let n = 1 + next(5) as usize;
                let env = Packed::pack(&Envelope {
                    sender: "s@x".into(),
                    meta: Box::default(),
                    recipients: (0..n)
                        .map(|i| {
                            EnvelopeRecipient::new(format!("r{i}@{}", domains[next(4) as usize]))
                        })
                        .collect(),
                });
                let at = (Timestamp::default(), 1);
                ix.apply_full(id, env, pending(n, step), at, loc(1, 32), None);
            }
            1 => {
                ix.apply_remove(id, 1);
            }
            _ => {
                let Some(n) = ix.entry(id).map(|e| e.statuses.len()) else {
                    continue;
                };
                let st = RecipientStatus {
                    state: states[next(4) as usize],
                    ..RecipientStatus::pending(Timestamp::from_millis(step))
                };
                ix.apply_status(id, &[(next(n as u64) as u32, st)], 1, true);
            }
        }
        assert_eq!(ix.domains(), walked(&ix), "after step {step}");
    }
}

#[test]
fn status_records_in_several_later_segments_each_hold_a_reference_once() {
    let mut ix = index_with_segments(&[1, 2, 3, 4, 5]);
    let id = put(&mut ix, 7, 2, 10, 1);
    let later = RecipientStatus::pending(Timestamp::from_millis(99));
    for seg in [2, 3, 2, 4, 3] {
        ix.apply_status(id, &[(0, later.clone())], seg, true);
    }
    let refs = |ix: &Index| -> Vec<u32> { (1..=5).map(|s| ix.segments[&s].refs).collect() };
    assert_eq!(refs(&ix), [1, 1, 1, 1, 0]);
    for seg in [2, 3, 4] {
        assert_eq!(ix.referencing(seg), [(id, loc(1, 32))], "segment {seg}");
    }
    assert!(ix.referencing(5).is_empty());
    // The last recipients done (in segment 5): every reference goes.
    ix.apply_status(id, &[(0, done()), (1, done())], 5, true);
    assert_eq!(refs(&ix), [0, 0, 0, 0, 0]);
    assert!(ix.more_others.is_empty(), "nothing left behind");
}

#[test]
fn an_entry_fits_a_112_byte_malloc_chunk() {
    // A boxed entry costs its size plus malloc's 8-byte header, rounded up
    // to 16: 104 bytes take a 112-byte chunk, 112 would take 128.
    assert!(
        std::mem::size_of::<Entry>() <= 104,
        "{}",
        std::mem::size_of::<Entry>()
    );
}
