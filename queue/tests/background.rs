//! Opening with the recovery in the background: new mail is taken,
//! handed out and finished while the old segments are read; an old
//! message appears once the last segment holding a record of it is read
//! (never handed out half-known), before the recovery ends;
//! state values are served from the glance and a key written meanwhile
//! wins over its recovered record, now and after later restarts.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{delivered, message, options, runtime};
use queue::{MessageId, Queue, QueueOptions, RecipientStatus, Recovery, Timestamp};

fn both_delivered() -> Vec<(u32, RecipientStatus)> {
    vec![(0, delivered()), (1, delivered())]
}

/// Far enough ahead that every message is due.
fn later() -> Timestamp {
    Timestamp::from_millis(4_000_000_000_000)
}

fn background(dir: &Path, faults: &Arc<queue::faults::Faults>) -> QueueOptions {
    let mut o = options(dir);
    o.recover_in_background = true;
    o.faults = Some(faults.clone());
    o
}

/// Opens in the background with the recovery held before it releases
/// any message.
fn open_held(dir: &Path) -> (Queue, queue::RecoveryReport, Arc<queue::faults::Faults>) {
    let faults = Arc::new(queue::faults::Faults::default());
    faults.hold_recovery();
    let (q, report) = Queue::open(background(dir, &faults)).unwrap();
    (q, report, faults)
}

/// `n` messages, the first `delivered` of them finished, and three state
/// keys; returns the ids of the ones left.
fn old_spool(dir: &Path, n: u64, finished: usize) -> Vec<MessageId> {
    let rt = runtime();
    let (q, _) = Queue::open(options(dir)).unwrap();
    for key in ["a", "b", "c"] {
        rt.block_on(q.put_state(key, Bytes::from_static(b"old")))
            .unwrap();
    }
    let ids: Vec<MessageId> = (0..n)
        .map(|i| rt.block_on(q.enqueue(message(i, 2))).unwrap())
        .collect();
    for id in &ids[..finished] {
        rt.block_on(q.update(*id, both_delivered())).unwrap();
    }
    q.close();
    ids[finished..].to_vec()
}

fn sorted_ids(q: &Queue) -> Vec<MessageId> {
    let mut ids: Vec<MessageId> = q
        .take_due(later(), usize::MAX)
        .iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids
}

#[test]
fn new_mail_flows_while_the_old_is_recovered_and_the_old_joins_whole() {
    let dir = tempfile::tempdir().unwrap();
    let left = old_spool(dir.path(), 600, 200);
    let rt = runtime();
    let (q, report, faults) = open_held(dir.path());
    assert!(q.is_recovering());
    assert!(report.bytes_read > 0, "the glance read the spool");
    assert_eq!(q.message_count(), 0, "old messages are not counted yet");
    assert_eq!(
        q.state("a").as_deref(),
        Some(&b"old"[..]),
        "states from the glance"
    );
    assert_eq!(q.state_keys(""), ["a", "b", "c"]);

    rt.block_on(q.put_state("a", Bytes::from_static(b"new")))
        .unwrap();
    rt.block_on(q.put_state("b", Bytes::new())).unwrap();
    assert_eq!(q.state("a").as_deref(), Some(&b"new"[..]));
    assert_eq!(q.state("b"), None, "a removal shadows the glance");
    assert_eq!(q.state_keys(""), ["a", "c"]);

    let fresh = rt.block_on(q.enqueue(message(9_000, 2))).unwrap();
    assert!(left.iter().all(|old| *old < fresh), "new ids above the old");
    assert_eq!(
        sorted_ids(&q),
        [fresh],
        "only the new message is handed out"
    );
    rt.block_on(q.update(fresh, both_delivered())).unwrap();
    assert!(q.get(left[0]).is_none(), "old messages wait for the merge");
    assert!(q.is_recovering());

    faults.release_recovery();
    let Recovery::Done(done) = rt.block_on(q.recovered()) else {
        panic!("recovery failed");
    };
    assert_eq!(done.messages, 400);
    assert!(!q.is_recovering());
    assert_eq!(q.message_count(), 400);
    assert_eq!(sorted_ids(&q), left, "every old message, none finished");
    assert_eq!(q.state("a").as_deref(), Some(&b"new"[..]));
    assert_eq!(q.state("b"), None);
    assert_eq!(q.state("c").as_deref(), Some(&b"old"[..]));
    q.close();
    drop(q);

    let (q, again) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(again.messages, 400, "the new one stays delivered");
    assert!(q.get(fresh).is_none());
    assert_eq!(q.state("a").as_deref(), Some(&b"new"[..]));
    assert_eq!(q.state("b"), None, "removed for good");
    assert_eq!(q.state_keys(""), ["a", "c"]);
}

#[test]
fn a_key_removed_during_recovery_stays_removed_as_old_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let left = old_spool(dir.path(), 400, 0);
    let rt = runtime();
    let (q, _, faults) = open_held(dir.path());
    rt.block_on(q.put_state("a", Bytes::new())).unwrap();
    // Enough new mail to fill several fresh segments, all delivered: the
    // removal's segment has nothing live left in it.
    for i in 0..1500 {
        let id = rt.block_on(q.enqueue(message(10_000 + i, 2))).unwrap();
        rt.block_on(q.update(id, both_delivered())).unwrap();
    }
    assert!(q.stats().segments > 2, "the writer moved on");
    faults.release_recovery();
    assert!(matches!(rt.block_on(q.recovered()), Recovery::Done(_)));
    q.close();
    drop(q);
    // The removal's segment had nothing live left: the merge let it go,
    // but not before the old value's segment (which old mail keeps).
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(q.state("a"), None, "the old value never comes back");
    // Finish every old message: their segments go too.
    for id in &left {
        rt.block_on(q.update(*id, both_delivered())).unwrap();
    }
    assert_eq!(q.message_count(), 0);
    q.close();
    drop(q);
    for _ in 0..2 {
        let (q, report) = Queue::open(options(dir.path())).unwrap();
        assert_eq!(report.messages, 0);
        assert_eq!(q.state("a"), None, "the old value never comes back");
        assert_eq!(q.state("c").as_deref(), Some(&b"old"[..]));
        q.close();
    }
}

#[test]
fn an_empty_spool_or_a_foreground_open_is_recovered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let faults = Arc::new(queue::faults::Faults::default());
    let (q, _) = Queue::open(background(dir.path(), &faults)).unwrap();
    assert!(!q.is_recovering(), "nothing to recover");
    assert!(matches!(rt.block_on(q.recovered()), Recovery::Done(_)));
    q.close();
    drop(q);
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    assert!(matches!(q.recovery(), Recovery::Done(_)));
}

#[test]
fn a_torn_tail_is_cut_before_new_writes_start_in_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    let left = old_spool(dir.path(), 50, 0);
    // A write torn by a power loss: half a record at the end of the last
    // segment.
    let last = common::segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let (off, len, _) = *common::records(&bytes).last().unwrap();
    std::fs::write(&last, &bytes[..off + len / 2]).unwrap();
    let rt = runtime();
    let (q, report, faults) = open_held(dir.path());
    assert_eq!(report.torn_tail_bytes, (len / 2) as u64);
    // Before anything is recovered or written, only the last segment on
    // disk may end in a torn write: the old one is cut already.
    assert_eq!(std::fs::metadata(&last).unwrap().len(), off as u64);
    rt.block_on(q.enqueue(message(7_000, 2))).unwrap();
    faults.release_recovery();
    let Recovery::Done(done) = rt.block_on(q.recovered()) else {
        panic!("recovery failed");
    };
    assert_eq!(done.torn_tail_bytes, (len / 2) as u64);
    assert_eq!(done.corrupt_records, 0);
    assert_eq!(done.messages, 49, "the torn message was never acknowledged");
    q.close();
    drop(q);
    let (q, again) = Queue::open(options(dir.path())).unwrap();
    assert_eq!((again.corrupt_records, again.torn_tail_bytes), (0, 0));
    assert_eq!(again.messages, 50, "49 old and the new one");
    assert!(left[..49].iter().all(|id| q.get(*id).is_some()));
}

fn deferred_until(t: Timestamp) -> RecipientStatus {
    RecipientStatus {
        state: queue::RecipientState::Pending,
        attempts: 1,
        next_attempt: t,
        last_reply: Some("451 later".into()),
    }
}

#[test]
fn old_mail_is_handed_out_once_its_last_segment_is_read_before_the_recovery_ends() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let ids: Vec<MessageId> = (0..1200)
        .map(|i| rt.block_on(q.enqueue(message(i, 2))).unwrap())
        .collect();
    // Written last, in the last segments: a deferral of the first ten, the
    // removal of the next ten and the delivery of the ten after.
    let far = Timestamp::from_millis(5_000_000_000_000);
    for id in &ids[..10] {
        let changes = vec![(0, deferred_until(far)), (1, deferred_until(far))];
        rt.block_on(q.update(*id, changes)).unwrap();
    }
    for id in &ids[10..20] {
        rt.block_on(q.remove(*id)).unwrap();
    }
    for id in &ids[20..30] {
        rt.block_on(q.update(*id, both_delivered())).unwrap();
    }
    assert!(q.stats().segments > 3, "the spool spans several segments");
    q.close();
    drop(q);

    let faults = Arc::new(queue::faults::Faults::default());
    faults.hold_recovery_after(1);
    let (q, _) = Queue::open(background(dir.path(), &faults)).unwrap();
    let mut watch = q.watch_recovery();
    let released = rt.block_on(async {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            watch.wait_for(|r| matches!(r, Recovery::Running { released } if *released > 0)),
        );
        match &*r.await.expect("a first release").unwrap() {
            Recovery::Running { released } => *released,
            other => panic!("{other:?}"),
        }
    });
    assert!(q.is_recovering(), "held before the rest");
    assert_eq!(q.message_count(), released);
    let early = sorted_ids(&q);
    assert_eq!(early.len() as u64, released, "every released one is due");
    assert!(
        early.iter().all(|id| *id >= ids[30] && *id < ids[1199]),
        "none whose later records are still unread: {:?}",
        &early[..3]
    );
    // Half of them delivered while the recovery still runs; the other half
    // stay queued in the old segments, which must outlive the merge.
    let (delivered, kept): (Vec<MessageId>, Vec<MessageId>) =
        early.iter().partition(|id| id.as_u64() % 2 == 0);
    for id in &delivered {
        rt.block_on(q.update(*id, both_delivered())).unwrap();
    }
    for id in &kept {
        assert!(q.release(*id), "handed back");
    }

    faults.release_recovery();
    let Recovery::Done(done) = rt.block_on(q.recovered()) else {
        panic!("recovery failed");
    };
    let rest: Vec<MessageId> = ids[30..]
        .iter()
        .filter(|id| !delivered.contains(id))
        .copied()
        .collect();
    assert_eq!(sorted_ids(&q), rest, "the others, none delivered twice");
    for id in &ids[..10] {
        let m = q.get(*id).expect("deferred, queued");
        assert_eq!(m.statuses[0].next_attempt, far, "with its later retry time");
    }
    for id in &ids[10..30] {
        assert!(q.get(*id).is_none(), "removed or delivered later: gone");
    }
    assert_eq!(
        done.messages,
        10 + rest.len() as u64 + delivered.len() as u64
    );
    let count = q.message_count();
    assert_eq!(count, 10 + rest.len() as u64);
    q.close();
    drop(q);

    // What is on disk agrees once the old segments are collected.
    let (q, again) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(again.messages, count);
    assert!(delivered.iter().all(|id| q.get(*id).is_none()));
    assert!(kept.iter().all(|id| q.get(*id).is_some()));
}

#[test]
fn a_failed_recovery_keeps_the_old_segments_and_collects_the_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let left = old_spool(dir.path(), 600, 200);
    let old_files = common::segments(dir.path());
    let rt = runtime();
    let faults = Arc::new(queue::faults::Faults::default());
    faults.fail_recovery();
    let (q, _) = Queue::open(background(dir.path(), &faults)).unwrap();
    assert!(matches!(rt.block_on(q.recovered()), Recovery::Failed(_)));
    assert_eq!(q.message_count(), 400, "released before the failure");
    let (delivered, kept) = left.split_at(100);
    for id in delivered {
        rt.block_on(q.update(*id, both_delivered())).unwrap();
    }
    // New mail through many fresh segments, all delivered.
    for i in 0..1500 {
        let id = rt.block_on(q.enqueue(message(10_000 + i, 2))).unwrap();
        rt.block_on(q.update(id, both_delivered())).unwrap();
    }
    let files = common::segments(dir.path());
    assert!(
        old_files.iter().all(|f| files.contains(f)),
        "no old segment goes without its accounting"
    );
    let new = files.len() - old_files.len();
    assert!(new <= 3, "the fresh segments are collected: {new} left");
    q.close();
    drop(q);

    let (q, again) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(again.messages, kept.len() as u64);
    assert!(delivered.iter().all(|id| q.get(*id).is_none()));
    assert!(kept.iter().all(|id| q.get(*id).is_some()));
}
