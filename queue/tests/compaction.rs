//! Disk use follows the live queue: finished segments are deleted, and
//! segments kept alive by a few deferred messages are compacted away.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{body, message, open, runtime, segments};
use queue::{RecipientState, RecipientStatus, Timestamp};

fn disk_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

fn done() -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Delivered,
        attempts: 1,
        next_attempt: Timestamp::default(),
        last_reply: None,
    }
}

fn deferred(n: u64) -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Pending,
        attempts: 3,
        next_attempt: Timestamp::from_millis(1_800_000_000_000 + n),
        last_reply: Some("451 4.7.1 greylisted".into()),
    }
}

/// Polls `f` every 10 ms, at most 1000 times.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn deferred_messages_survive_compaction_and_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path()); // 64 KiB segments
    let ids: Vec<_> = (0..3000u64)
        .map(|n| rt.block_on(q.enqueue(message(n, 1))).unwrap())
        .collect();
    let peak = disk_bytes(dir.path());
    assert!(
        segments(dir.path()).len() >= 8,
        "the test needs many segments"
    );

    // One message in a hundred stays deferred; the rest are delivered.
    for (n, id) in ids.iter().enumerate() {
        let status = if n % 100 == 0 {
            deferred(n as u64)
        } else {
            done()
        };
        rt.block_on(q.update(*id, vec![(0, status)])).unwrap();
        if n % 200 == 0 {
            assert_eq!(rt.block_on(q.hold(*id)).unwrap(), 1);
        }
    }
    let segment_size = 64 << 10;
    assert!(
        eventually(|| disk_bytes(dir.path()) <= 3 * segment_size),
        "disk use should shrink to a few segments, is {} bytes (peak {peak})",
        disk_bytes(dir.path())
    );
    assert_eq!(q.stats().messages, 30);
    assert_eq!(q.stats().disk_bytes, disk_bytes(dir.path()));
    q.close();
    drop(q);

    let (q, report) = open(dir.path());
    assert_eq!(report.messages, 30);
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(q.stats().held, 15);
    assert_eq!(q.stats().recipients, 15);
    for (n, id) in ids.iter().enumerate() {
        let got = q.get(*id);
        if n % 100 != 0 {
            assert!(got.is_none(), "delivered message {n} came back");
            continue;
        }
        let info = got.unwrap_or_else(|| panic!("deferred message {n} lost"));
        let mut want = deferred(n as u64);
        if n % 200 == 0 {
            want.state = RecipientState::Held; // a relocated copy stays held
        }
        assert_eq!(info.statuses[0], want);
        assert_eq!(q.body(*id).unwrap(), body(n as u64));
    }
}

#[test]
fn finished_segments_are_deleted_without_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    for n in 0..2000u64 {
        let id = rt.block_on(q.enqueue(message(n, 1))).unwrap();
        rt.block_on(q.update(id, vec![(0, done())])).unwrap();
    }
    assert!(
        q.io_stats().bytes > 4 * (64 << 10),
        "the test needs several rotations"
    );
    assert!(
        segments(dir.path()).len() <= 2,
        "only the newest segments remain: {:?}",
        segments(dir.path())
    );
    assert_eq!(q.stats().messages, 0);
}
