//! Recovery from damaged spools: whatever the bytes, open succeeds, keeps
//! every intact message, never hands out a damaged one, and reports.

mod common;

use std::fs;
use std::path::Path;

use common::{body, message, open, raw_record, records, runtime, salt, segments};
use queue::{MessageId, Queue};

/// A message record (with its priority byte) in the documented layout.
const KIND_MESSAGE: u8 = 4;

/// Enqueues `n` messages and closes the queue; returns their ids.
fn fill(dir: &Path, n: u64) -> Vec<MessageId> {
    let rt = runtime();
    let (q, _) = open(dir);
    let ids = (0..n)
        .map(|i| rt.block_on(q.enqueue(message(i, 2))).unwrap())
        .collect();
    q.close();
    ids
}

fn present(q: &Queue, ids: &[MessageId]) -> Vec<bool> {
    ids.iter().map(|id| q.get(*id).is_some()).collect()
}

#[test]
fn truncated_tail_is_cut_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 40);
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let recs = records(&bytes);
    let (last_off, last_len, _) = *recs.last().unwrap();
    fs::write(&seg, &bytes[..last_off + last_len / 2]).unwrap();

    let (q, report) = open(dir.path());
    assert_eq!(report.torn_tail_bytes, (last_len / 2) as u64);
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(report.messages, 39);
    let mut expect = vec![true; 40];
    expect[39] = false;
    assert_eq!(present(&q, &ids), expect);
    for (i, id) in ids.iter().enumerate().take(39) {
        assert_eq!(q.body(*id).unwrap(), body(i as u64));
    }
    q.close();
    drop(q);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        last_off as u64,
        "tail truncated on disk"
    );
    let (_, again) = open(dir.path());
    assert_eq!(again.torn_tail_bytes, 0, "repaired, not reported twice");
    assert_eq!(again.messages, 39);
}

#[test]
fn flipped_bytes_in_a_middle_record_lose_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 30);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let recs = records(&bytes);
    assert_eq!(recs.len(), 30);
    let (off, len, kind) = recs[12];
    assert_eq!(kind, KIND_MESSAGE);
    for b in &mut bytes[off + len / 2..off + len / 2 + 4] {
        *b ^= 0x5A;
    }
    fs::write(&seg, &bytes).unwrap();

    let (q, report) = open(dir.path());
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.corrupt[0].offset, off as u64);
    assert_eq!(report.torn_tail_bytes, 0);
    let mut expect = vec![true; 30];
    expect[12] = false;
    assert_eq!(present(&q, &ids), expect);
    for (i, id) in ids.iter().enumerate() {
        if i != 12 {
            assert_eq!(q.body(*id).unwrap(), body(i as u64));
        }
    }
    let quarantined = fs::read_dir(dir.path().join(queue::QUARANTINE_DIR))
        .unwrap()
        .count();
    assert_eq!(
        quarantined, 1,
        "a copy of the bad bytes is kept for inspection"
    );
}

#[test]
fn flipped_length_field_does_not_hide_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 10);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let (off, _, _) = records(&bytes)[3];
    bytes[off + 6] ^= 0x7F; // length now points far beyond the file
    fs::write(&seg, &bytes).unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(
        report.torn_tail_bytes, 0,
        "valid records follow: not a torn tail"
    );
    assert_eq!(present(&q, &ids).iter().filter(|p| **p).count(), 9);
}

#[test]
fn zero_length_segment_is_removed_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 5);
    let empty = dir.path().join("00000000000000ff.seg");
    fs::write(&empty, b"").unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report.empty_segments, 1);
    assert!(!empty.exists());
    assert!(present(&q, &ids).iter().all(|p| *p));
}

#[test]
fn unknown_record_kind_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 5);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let rec = raw_record(salt(&bytes), &[0x7F, 1, 2, 3, 4, 5]);
    let at = records(&bytes)[2].0;
    bytes.splice(at..at, rec);
    fs::write(&seg, &bytes).unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report.unknown_records, 1);
    assert_eq!(report.corrupt_records, 0);
    assert!(present(&q, &ids).iter().all(|p| *p));
}

#[test]
fn bad_segment_header_quarantines_that_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = fill(dir.path(), 5);
    let second = fill(dir.path(), 5); // a second open writes to a new segment
    let segs = segments(dir.path());
    let victim = segs
        .iter()
        .find(|p| records(&fs::read(p).unwrap()).len() == 5)
        .unwrap()
        .clone();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[3] ^= 0xFF;
    fs::write(&victim, &bytes).unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report.quarantined_segments.len(), 1);
    assert!(!victim.exists());
    let kept = present(&q, &first)
        .iter()
        .chain(present(&q, &second).iter())
        .filter(|p| **p)
        .count();
    assert_eq!(kept, 5, "the other segment's messages survive");
}

#[test]
fn foreign_files_are_listed_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 2);
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    fs::write(dir.path().join("12.seg"), b"not a segment name").unwrap();
    fs::create_dir(dir.path().join("0000000000000099.seg")).unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report.ignored_files.len(), 3);
    assert_eq!(q.stats().messages, 2);
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn random_bytes_in_segments_never_stop_recovery() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let ids = fill(dir.path(), 20);
        let seg = segments(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        // Damage a few random spots, sometimes the header, sometimes the tail.
        for _ in 0..(1 + seed % 4) {
            let at = (rand() as usize) % bytes.len();
            let n = 1 + (rand() as usize) % 40;
            for b in bytes.iter_mut().skip(at).take(n) {
                *b = rand() as u8;
            }
        }
        if seed % 3 == 0 {
            let cut = (rand() as usize) % bytes.len();
            bytes.truncate(cut);
        }
        fs::write(&seg, &bytes).unwrap();
        let garbage: Vec<u8> = (0..(rand() % 5000)).map(|_| rand() as u8).collect();
        fs::write(
            dir.path().join(format!("{:016x}.seg", 0x100 + seed)),
            &garbage,
        )
        .unwrap();

        let (q, report) = open(dir.path());
        // Intact messages keep their exact body; damaged ones are absent.
        for (i, id) in ids.iter().enumerate() {
            if q.get(*id).is_some() {
                assert_eq!(q.body(*id).unwrap(), body(i as u64), "seed {seed}");
            }
        }
        q.close();
        drop(q);
        let (q, again) = open(dir.path());
        assert_eq!(
            again.messages, report.messages,
            "seed {seed}: stable across reopen"
        );
        assert_eq!(again.torn_tail_bytes, 0, "seed {seed}");
        drop(q);
    }
}

#[test]
fn segment_names_at_the_end_of_the_numbering_neither_panic_nor_lose_mail() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 3);
    let seg = segments(dir.path()).pop().unwrap();
    // Beyond the numbering: not a segment, left alone.
    let beyond = dir.path().join("ffffffffffffffff.seg");
    fs::copy(&seg, &beyond).unwrap();
    // The last number there is: renamed, with its header's id to match.
    let mut bytes = fs::read(&seg).unwrap();
    bytes[16..24].copy_from_slice(&((1u64 << 62) - 1).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::remove_file(&seg).unwrap();
    fs::write(dir.path().join("3fffffffffffffff.seg"), &bytes).unwrap();

    let rt = runtime();
    let (q, report) = open(dir.path());
    assert_eq!(report.ignored_files, std::slice::from_ref(&beyond));
    assert_eq!(report.messages, 3);
    // No number is left for a fresh segment: the queue appends to the
    // last one rather than write where no open would look.
    let id = rt.block_on(q.enqueue(message(9, 2))).unwrap();
    q.close();
    drop(q);
    let (q, report) = open(dir.path());
    assert_eq!(report.messages, 4);
    assert!(q.get(id).is_some());
    assert!(beyond.exists());
}
