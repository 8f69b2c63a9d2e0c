//! State values kept beside the messages: durable once written, the latest
//! value wins, an empty value removes the key for good, and compaction
//! carries a value out of an old segment rather than lose it or keep the
//! segment forever.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{message, open, runtime, segments};
use queue::{QueueError, RecipientState, RecipientStatus, Timestamp};

fn done() -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Delivered,
        attempts: 1,
        next_attempt: Timestamp::default(),
        last_reply: None,
    }
}

#[test]
fn the_latest_value_survives_a_restart_and_a_removal_stays_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    rt.block_on(q.put_state("shaping/actions", Bytes::from_static(b"v1")))
        .unwrap();
    rt.block_on(q.put_state("shaping/actions", Bytes::from_static(b"v2")))
        .unwrap();
    rt.block_on(q.put_state("egress/warmup", Bytes::from_static(b"w")))
        .unwrap();
    rt.block_on(q.put_state("egress/warmup", Bytes::new()))
        .unwrap();
    assert_eq!(q.state("shaping/actions").as_deref(), Some(&b"v2"[..]));
    assert_eq!(q.state("egress/warmup"), None);
    assert!(matches!(
        rt.block_on(q.put_state("", Bytes::from_static(b"x"))),
        Err(QueueError::Invalid(_))
    ));
    q.close();
    drop(q);
    let (q, _) = open(dir.path());
    assert_eq!(q.state("shaping/actions").as_deref(), Some(&b"v2"[..]));
    assert_eq!(q.state("egress/warmup"), None, "removed for good");
    q.close();
    drop(q);
    let (snapshot, report) = queue::SpoolSnapshot::read(dir.path()).unwrap();
    assert_eq!(
        snapshot.state("shaping/actions").as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(report.unknown_records, 0);
}

#[test]
fn keys_are_listed_by_prefix_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    for k in [
        "templates/b",
        "templates/a",
        "templatesx",
        "idem/1",
        "templates/c",
    ] {
        rt.block_on(q.put_state(k, Bytes::from_static(b"v")))
            .unwrap();
    }
    rt.block_on(q.put_state("templates/c", Bytes::new()))
        .unwrap();
    q.close();
    drop(q);
    let (q, _) = open(dir.path());
    assert_eq!(q.state_keys("templates/"), ["templates/a", "templates/b"]);
    assert_eq!(q.state_keys("idem/").len(), 1);
    assert!(q.state_keys("nothing/").is_empty());
    q.close();
}

#[test]
fn compaction_moves_a_value_out_of_an_old_segment() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path()); // 64 KiB segments
    rt.block_on(q.put_state("rebinds", Bytes::from_static(b"kept")))
        .unwrap();
    let first = segments(dir.path())[0].clone();
    // Enough mail to fill many segments, then all of it delivered: only
    // the value pins the first segment.
    let ids: Vec<_> = (0..3000u64)
        .map(|n| rt.block_on(q.enqueue(message(n, 1))).unwrap())
        .collect();
    for id in ids {
        rt.block_on(q.update(id, vec![(0, done())])).unwrap();
    }
    let moved = (0..1000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        let _ = rt.block_on(q.enqueue(message(9, 1)));
        !first.exists()
    });
    assert!(
        moved,
        "the first segment is still there: {:?}",
        segments(dir.path())
    );
    assert_eq!(q.state("rebinds").as_deref(), Some(&b"kept"[..]));
    q.close();
    drop(q);
    let (q, _) = open(dir.path());
    assert_eq!(
        q.state("rebinds").as_deref(),
        Some(&b"kept"[..]),
        "after a restart too"
    );
}
