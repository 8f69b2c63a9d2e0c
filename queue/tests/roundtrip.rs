//! Round trip and restart: what is acknowledged comes back, exactly.

mod common;

use std::sync::Arc;

use common::{body, message, open, runtime};
use queue::{
    MessageId, Queue, QueueError, QueueOptions, RecipientState, RecipientStatus, Timestamp,
    UpdateOutcome,
};

fn delivered() -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Delivered,
        attempts: 1,
        next_attempt: Timestamp::default(),
        last_reply: Some("250 2.0.0 ok".into()),
    }
}

fn deferred(at: u64, reply: &str) -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Pending,
        attempts: 1,
        next_attempt: Timestamp::from_millis(at),
        last_reply: Some(reply.into()),
    }
}

#[test]
fn enqueue_get_body_update_remove() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, report) = open(dir.path());
    assert_eq!(report.messages, 0);
    let msg = message(1, 3);
    let id = rt.block_on(q.enqueue(msg.clone())).unwrap();
    let info = q.get(id).unwrap();
    assert_eq!(*info.envelope, msg.envelope);
    assert_eq!(info.arrival, msg.arrival);
    assert_eq!(info.body_len, msg.body.len() as u64);
    assert_eq!(q.body(id).unwrap(), msg.body);
    assert_eq!(q.cached_body(id), Some(msg.body.clone()), "fresh: in RAM");
    assert_eq!(q.stats().recipients, 3);

    let out = rt
        .block_on(q.update(
            id,
            vec![(0, delivered()), (2, deferred(5, "451 4.7.1 later"))],
        ))
        .unwrap();
    assert_eq!(out, UpdateOutcome::StillQueued);
    let info = q.get(id).unwrap();
    assert_eq!(info.statuses[0].state, RecipientState::Delivered);
    assert_eq!(
        info.statuses[2].last_reply.as_deref(),
        Some("451 4.7.1 later")
    );
    assert_eq!(q.stats().recipients, 2);
    // The body is read back from disk once the first attempt is recorded.
    assert_eq!(q.cached_body(id), None);
    assert_eq!(q.body(id).unwrap(), msg.body);

    let out = rt
        .block_on(q.update(id, vec![(1, delivered()), (2, delivered())]))
        .unwrap();
    assert_eq!(out, UpdateOutcome::Removed);
    assert!(q.get(id).is_none());
    assert!(matches!(q.body(id), Err(QueueError::NotFound(_))));
    assert!(matches!(
        rt.block_on(q.update(id, vec![(0, delivered())])),
        Err(QueueError::NotFound(_))
    ));
    assert_eq!(q.stats().messages, 0);
}

#[test]
fn invalid_requests_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let mut m = message(1, 1);
    m.envelope.recipients = Box::default();
    assert!(matches!(
        rt.block_on(q.enqueue(m)),
        Err(QueueError::Invalid(_))
    ));
    let id = rt.block_on(q.enqueue(message(2, 1))).unwrap();
    assert!(matches!(
        rt.block_on(q.update(id, vec![(1, delivered())])),
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        rt.block_on(q.update(id, vec![])),
        Err(QueueError::Invalid(_))
    ));
    assert_eq!(q.io_stats().records, 1);
}

#[test]
fn restart_restores_exactly_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut ids = Vec::new();
    {
        let (q, _) = open(dir.path());
        for n in 0..200 {
            ids.push(rt.block_on(q.enqueue(message(n, 2))).unwrap());
        }
        // Every 3rd: first recipient delivered; every 5th: finished; every 7th: purged.
        for (n, id) in ids.iter().enumerate() {
            if n % 3 == 0 {
                rt.block_on(q.update(*id, vec![(0, delivered()), (1, deferred(99, "421 busy"))]))
                    .unwrap();
            }
            if n % 5 == 0 {
                rt.block_on(q.update(*id, vec![(0, delivered()), (1, delivered())]))
                    .unwrap();
            }
            if n % 7 == 0 && n % 5 != 0 {
                rt.block_on(q.remove(*id)).unwrap();
            }
        }
        q.close();
    }
    let (q, report) = open(dir.path());
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(report.torn_tail_bytes, 0);
    for (n, id) in ids.iter().enumerate() {
        let n = n as u64;
        let got = q.get(*id);
        if n.is_multiple_of(5) || n.is_multiple_of(7) {
            assert!(got.is_none(), "message {n} should be gone");
            continue;
        }
        let info = got.unwrap_or_else(|| panic!("message {n} lost"));
        assert_eq!(*info.envelope, message(n, 2).envelope);
        assert_eq!(q.body(*id).unwrap(), body(n));
        if n.is_multiple_of(3) {
            assert_eq!(info.statuses[0], delivered());
            assert_eq!(info.statuses[1], deferred(99, "421 busy"));
        } else {
            assert!(
                info.statuses
                    .iter()
                    .all(|s| *s == RecipientStatus::pending(message(n, 2).first_attempt))
            );
        }
    }
    let expected = (0..200u64).filter(|n| n % 5 != 0 && n % 7 != 0).count() as u64;
    assert_eq!(report.messages, expected);
    assert_eq!(q.stats().messages, expected);
    // New ids never collide with recovered ones.
    let fresh = rt.block_on(q.enqueue(message(999, 1))).unwrap();
    assert!(fresh > *ids.iter().max().unwrap());
}

#[test]
fn take_due_hands_each_message_out_once_until_updated_or_released() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let a = rt.block_on(q.enqueue(message(1, 1))).unwrap();
    let b = rt.block_on(q.enqueue(message(2, 1))).unwrap();
    let now = message(1, 1).first_attempt;
    assert_eq!(q.next_due(), Some(now));
    let due: Vec<MessageId> = q.take_due(now, 10).iter().map(|m| m.id).collect();
    assert_eq!(due, vec![a, b]);
    assert!(q.take_due(now, 10).is_empty());
    assert!(q.release(a));
    assert_eq!(q.take_due(now, 10)[0].id, a);
    let later = now.as_millis() + 60_000;
    rt.block_on(q.update(b, vec![(0, deferred(later, "451 later"))]))
        .unwrap();
    assert!(q.take_due(now, 10).is_empty());
    assert_eq!(q.next_due(), Some(Timestamp::from_millis(later)));
    assert_eq!(q.take_due(Timestamp::from_millis(later), 10)[0].id, b);
}

#[test]
fn concurrent_writers_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let q = Arc::new(q);
    let tasks: Vec<_> = (0..64u64)
        .map(|w| {
            let q = q.clone();
            rt.spawn(async move {
                for i in 0..20 {
                    q.enqueue(message(w * 100 + i, 1)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let io = q.io_stats();
    assert_eq!(io.records, 64 * 20);
    assert!(
        io.syncs < io.records / 2,
        "group commit should batch: {io:?}"
    );
    assert_eq!(q.page(None, 10_000).len(), 64 * 20);
}

#[test]
fn paging_walks_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let ids: Vec<_> = (0..25)
        .map(|n| rt.block_on(q.enqueue(message(n, 1))).unwrap())
        .collect();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = q.page(after, 7);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id);
        seen.extend(page.into_iter().map(|m| m.id));
    }
    assert_eq!(seen, ids);
}

#[test]
fn a_second_process_cannot_open_a_locked_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(dir.path());
    assert!(matches!(
        Queue::open(QueueOptions::new(dir.path())),
        Err(QueueError::Locked(_))
    ));
    q.close();
    drop(q);
    assert!(Queue::open(QueueOptions::new(dir.path())).is_ok());
}

#[test]
fn closed_queue_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    q.close();
    assert!(matches!(
        rt.block_on(q.enqueue(message(1, 1))),
        Err(QueueError::Closed)
    ));
}

#[test]
fn domains_summary_counts_pending_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    for n in 0..4 {
        rt.block_on(q.enqueue(message(n, 3))).unwrap(); // domains d0, d1, d2
    }
    let d = q.domains();
    assert_eq!(d.len(), 3);
    assert!(d.iter().all(|c| c.messages == 4 && c.recipients == 4));
    q.close();
    let (snap, _) = queue::SpoolSnapshot::read(dir.path()).unwrap();
    assert_eq!(snap.domains(), d);
    assert_eq!(snap.stats().messages, 4);
}

#[test]
fn buffered_durability_acks_before_sync_and_syncs_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut opts = common::options(dir.path());
    opts.durability = queue::Durability::Buffered {
        flush_interval: std::time::Duration::from_millis(20),
    };
    let (q, _) = Queue::open(opts.clone()).unwrap();
    let ids: Vec<_> = (0..50)
        .map(|n| rt.block_on(q.enqueue(message(n, 1))).unwrap())
        .collect();
    assert!(
        q.io_stats().syncs < 50,
        "buffered writes are acknowledged without a sync each"
    );
    let mut synced = false;
    for _ in 0..500 {
        if q.io_stats().syncs > 0 {
            synced = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(synced, "the idle writer syncs after flush_interval");
    q.close();
    drop(q);
    let (q, report) = Queue::open(opts).unwrap();
    assert_eq!(report.messages, 50);
    assert!(ids.iter().all(|id| q.get(*id).is_some()));
}

#[test]
fn record_keeps_the_message_handed_out_until_update() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let id = rt.block_on(q.enqueue(message(1, 3))).unwrap();
    let now = message(1, 3).first_attempt;
    assert_eq!(q.take_due(now, 10).len(), 1);
    // One domain's recipients are done; the others are still being tried.
    rt.block_on(q.record(id, vec![(0, delivered())])).unwrap();
    assert!(q.take_due(now, 10).is_empty(), "not handed out twice");
    assert!(q.get(id).unwrap().scheduled);
    let later = now.as_millis() + 1000;
    rt.block_on(q.update(
        id,
        vec![(1, delivered()), (2, deferred(later, "451 later"))],
    ))
    .unwrap();
    assert!(!q.get(id).unwrap().scheduled);
    assert!(
        q.take_due(now, 10).is_empty(),
        "the deferred one is due later"
    );
    assert_eq!(q.take_due(Timestamp::from_millis(later), 10).len(), 1);
    // record() that finishes the message removes it like update() would.
    assert_eq!(
        rt.block_on(q.record(id, vec![(2, delivered())])).unwrap(),
        UpdateOutcome::Removed
    );
}

#[test]
fn priorities_order_due_messages_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let bulk = rt.block_on(q.enqueue(message(1, 1))).unwrap();
    let mut urgent = message(2, 1);
    urgent.priority = 0;
    urgent.first_attempt = Timestamp::from_millis(urgent.first_attempt.as_millis() + 5);
    let urgent = rt.block_on(q.enqueue(urgent)).unwrap();
    q.close();
    drop(q);
    let (q, _) = open(dir.path());
    let now = Timestamp::from_millis(message(1, 1).first_attempt.as_millis() + 10);
    let due = q.take_due(now, 10);
    let order: Vec<(MessageId, u8)> = due.iter().map(|m| (m.id, m.priority)).collect();
    assert_eq!(order, [(urgent, 0), (bulk, queue::DEFAULT_PRIORITY)]);
}

#[test]
fn reschedule_makes_deferred_recipients_due_now_durably_but_never_handed_out_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let id = rt.block_on(q.enqueue(message(1, 2))).unwrap();
    let now = message(1, 2).first_attempt;
    let later = now.as_millis() + 3_600_000;
    assert_eq!(q.take_due(now, 10).len(), 1);
    assert_eq!(
        rt.block_on(q.reschedule(id, now)).unwrap(),
        0,
        "handed out: left alone"
    );
    rt.block_on(q.update(
        id,
        vec![(0, deferred(later, "451 later")), (1, delivered())],
    ))
    .unwrap();
    assert_eq!(q.next_due(), Some(Timestamp::from_millis(later)));
    assert_eq!(
        rt.block_on(q.reschedule(id, now)).unwrap(),
        1,
        "one pending recipient"
    );
    assert_eq!(q.next_due(), Some(now));
    assert_eq!(
        rt.block_on(q.reschedule(id, now)).unwrap(),
        0,
        "already due"
    );
    let info = q.get(id).unwrap();
    assert_eq!(info.statuses[0].attempts, 1, "an attempt is not counted");
    assert_eq!(info.statuses[0].last_reply.as_deref(), Some("451 later"));
    q.close();
    drop(q);
    let (q, _) = open(dir.path());
    assert_eq!(q.next_due(), Some(now), "durable");
    assert!(matches!(
        rt.block_on(q.reschedule(MessageId::from_u64(999), now)),
        Ok(0)
    ));
}

#[test]
fn an_adopted_message_keeps_its_statuses_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let msg = message(7, 3);
    let statuses = vec![
        delivered(),
        deferred(5, "451 4.7.1 later"),
        deferred(9, "x"),
    ];
    let bad = rt.block_on(q.adopt(msg.clone(), statuses[..2].to_vec()));
    assert!(
        matches!(bad, Err(QueueError::Invalid(_))),
        "one status per recipient"
    );
    let done = rt.block_on(q.adopt(msg.clone(), vec![delivered(); 3]));
    assert!(
        matches!(done, Err(QueueError::Invalid(_))),
        "something left to do"
    );
    let id = rt.block_on(q.adopt(msg.clone(), statuses.clone())).unwrap();
    assert_eq!(q.stats().recipients, 2, "the delivered one is not pending");
    assert_eq!(q.get(id).unwrap().statuses, statuses);
    drop(q);
    let (q, report) = open(dir.path());
    assert_eq!(report.recipients, 2);
    let info = q.get(id).unwrap();
    assert_eq!(info.statuses, statuses);
    assert_eq!(q.body(id).unwrap(), msg.body);
    assert_eq!(q.next_due(), Some(Timestamp::from_millis(5)));
}

/// With `status_sync_delay`, an outcome alone is written and answered at
/// once but synced only by the next new message or when the delay ends;
/// either way a restart finds it (a crash of the process keeps what was
/// written).
#[test]
fn outcomes_wait_for_the_next_sync_within_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut o = common::options(dir.path());
    o.status_sync_delay = std::time::Duration::from_millis(200);
    let (q, _) = Queue::open(o).unwrap();
    let a = rt.block_on(q.enqueue(message(1, 1))).unwrap();
    let b = rt.block_on(q.enqueue(message(2, 1))).unwrap();
    let synced = q.io_stats().syncs;
    rt.block_on(q.update(a, vec![(0, delivered())])).unwrap();
    assert!(q.get(a).is_none(), "applied at once");
    assert_eq!(q.io_stats().syncs, synced, "an outcome alone is not synced");
    // A new message's sync carries it.
    rt.block_on(q.enqueue(message(3, 1))).unwrap();
    assert_eq!(q.io_stats().syncs, synced + 1);
    // Alone again: synced once the delay ends (bounded wait).
    rt.block_on(q.update(b, vec![(0, delivered())])).unwrap();
    let started = std::time::Instant::now();
    while q.io_stats().syncs == synced + 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the delay's sync never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    drop(q); // no close: what was written is all there is
    let (q, _) = open(dir.path());
    assert!(q.get(a).is_none() && q.get(b).is_none());
    assert_eq!(q.stats().messages, 1);
}
