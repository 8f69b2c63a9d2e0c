//! Power loss, beyond kill -9 (ALICE-style): writes not yet synced are
//! lost, or torn at an arbitrary byte with garbage after it, and recovery
//! must still hold the queue's promises.
//!
//! A workload (enqueues, outcomes, removals, from concurrent writers) runs
//! on a real spool; after every sync the fault-injection hook notes how
//! long each file is (segments only grow, so a length is a snapshot). Each
//! operation notes how many syncs had happened when it was acknowledged.
//! Then, for many cut points, the spool as a power loss at that point
//! could leave it is rebuilt in a fresh directory: every file as of sync
//! K, plus a prefix of what was written before sync K+1, its last bytes
//! possibly replaced by garbage. Recovery runs on it, and:
//! - it opens (a torn tail is cut, never fatal);
//! - every message acknowledged by sync K is there, whole (envelope and
//!   body as enqueued), with every outcome acknowledged by sync K;
//! - a message removed by sync K is gone;
//! - nothing half-written appears: any message there is whole, and its
//!   statuses are ones that were written.
//!
//! `TERN_POWER_LOSS_CUTS` raises the number of cut points (long mode).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{body, message, runtime};
use queue::faults::Faults;
use queue::{MessageId, Queue, QueueOptions, RecipientState, RecipientStatus, Timestamp};

/// Cut points tried in the normal suite.
const CUTS: usize = 2_000;

/// What the disk held at each sync: file name -> length; and each file's
/// bytes, as long as it ever got.
#[derive(Default)]
struct Disk {
    syncs: Vec<BTreeMap<String, u64>>,
    content: HashMap<String, Vec<u8>>,
}

fn snapshot(dir: &Path, disk: &Mutex<Disk>) {
    let mut d = disk.lock().unwrap();
    let mut lengths = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".seg") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        lengths.insert(name.clone(), bytes.len() as u64);
        let kept = d.content.entry(name).or_default();
        if bytes.len() >= kept.len() {
            *kept = bytes;
        }
    }
    d.syncs.push(lengths);
}

/// One acknowledged operation, and the number of syncs done when it was
/// acknowledged (`at`): it is durable in the snapshot of sync `at`, index
/// `at - 1`, if not before. A removal also notes the syncs done when it
/// was asked for (`from`): its record is written in the batch synced as
/// snapshot `from` or later, so a cut after snapshot `from - 1` may hold it.
#[derive(Debug, Clone)]
enum Acked {
    Enqueued {
        n: u64,
        id: MessageId,
        at: usize,
    },
    Outcome {
        id: MessageId,
        index: u32,
        at: usize,
    },
    Removed {
        id: MessageId,
        from: usize,
        at: usize,
    },
}

/// Durable in snapshot `k` for sure.
fn by(at: usize, k: usize) -> bool {
    at <= k + 1
}

fn delivered() -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Delivered,
        attempts: 1,
        next_attempt: Timestamp::default(),
        last_reply: Some("250 2.0.0 ok".into()),
    }
}

/// The shared test options (small segments: rotation under load), with
/// no free-space reserve.
fn options(dir: &Path) -> QueueOptions {
    let mut o = common::options(dir);
    o.min_free_space = 0;
    o
}

/// Runs the workload; returns what the disk held and what was acknowledged.
/// With `lazy`, outcomes wait for the next sync (`status_sync_delay`): one
/// acknowledged after sync `s` is durable from the snapshot of the next.
fn workload(dir: &Path, lazy: bool) -> (Disk, Vec<Acked>) {
    let disk = Arc::new(Mutex::new(Disk::default()));
    let syncs = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(Faults::default());
    {
        let (disk, syncs, path) = (disk.clone(), syncs.clone(), dir.to_owned());
        faults.on_sync(move || {
            snapshot(&path, &disk);
            syncs.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut opts = options(dir);
    opts.faults = Some(faults);
    if lazy {
        opts.status_sync_delay = std::time::Duration::from_secs(1);
    }
    let (q, _) = Queue::open(opts).unwrap();
    let q = Arc::new(q);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let (q, acked, syncs) = (q.clone(), acked.clone(), syncs.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..100u64 {
                    let n = w * 1000 + i;
                    let id = q.enqueue(message(n, 3)).await.unwrap();
                    let at = syncs.load(Ordering::SeqCst);
                    acked.lock().unwrap().push(Acked::Enqueued { n, id, at });
                    if i % 3 == 0 {
                        q.record(id, vec![(1, delivered())]).await.unwrap();
                        let at = syncs.load(Ordering::SeqCst) + usize::from(lazy);
                        acked
                            .lock()
                            .unwrap()
                            .push(Acked::Outcome { id, index: 1, at });
                    }
                    if i % 5 == 0 {
                        let from = syncs.load(Ordering::SeqCst);
                        q.remove(id).await.unwrap();
                        let at = syncs.load(Ordering::SeqCst);
                        acked.lock().unwrap().push(Acked::Removed { id, from, at });
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    q.close();
    drop(q);
    let disk = std::mem::take(&mut *disk.lock().unwrap());
    let acked = acked.lock().unwrap().clone();
    (disk, acked)
}

/// A small deterministic generator (the cut points must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Writes the spool a power loss between sync `k` and `k + 1` could leave:
/// each file at its length at sync `k`, the file that grew next cut at a
/// random point in what it gained, its last bytes garbage or not.
fn rebuild(disk: &Disk, k: usize, rng: &mut Lcg, into: &Path) -> String {
    let at_k = &disk.syncs[k];
    let next = disk.syncs.get(k + 1);
    let mut what = format!("sync {k}");
    for (name, content) in &disk.content {
        let base = at_k.get(name).copied();
        let grown = next.and_then(|n| n.get(name)).copied();
        let len = match (base, grown) {
            (Some(b), Some(g)) if g > b => {
                let cut = b + rng.next(g - b + 1);
                what.push_str(&format!(", {name} cut at {cut} of {b}..{g}"));
                cut
            }
            (Some(b), _) => b,
            // Created after sync k: its header was synced when it was made.
            (None, Some(g)) => 32 + rng.next(g.saturating_sub(32) + 1),
            (None, None) => continue,
        };
        let mut bytes = content[..len as usize].to_vec();
        if base.is_some_and(|b| len > b) && rng.next(2) == 0 {
            // A torn write: the last sector holds garbage.
            let from = bytes
                .len()
                .saturating_sub(rng.next(512) as usize)
                .max(base.unwrap_or(0) as usize);
            for b in &mut bytes[from..] {
                *b = rng.next(256) as u8;
            }
            what.push_str(", torn");
        }
        std::fs::write(into.join(name), bytes).unwrap();
    }
    what
}

/// Checks the recovered queue against what was acknowledged by sync `k`.
fn check(q: &Queue, acked: &[Acked], k: usize, what: &str) {
    let mut by_id: HashMap<MessageId, u64> = HashMap::new();
    for a in acked {
        if let Acked::Enqueued { n, id, .. } = a {
            by_id.insert(*id, *n);
        }
    }
    for a in acked {
        match a {
            Acked::Enqueued { id, at, .. } if by(*at, k) => {
                // Present unless its removal may be on disk: durable by
                // sync k, or among the unsynced writes of the batch after
                // it, which a power loss may keep.
                let maybe_removed = acked.iter().any(
                    |r| matches!(r, Acked::Removed { id: r, from, .. } if r == id && *from <= k + 1),
                );
                if !maybe_removed {
                    assert!(
                        q.get(*id).is_some(),
                        "{what}: acknowledged message {id} lost"
                    );
                }
            }
            Acked::Outcome { id, index, at } if by(*at, k) => {
                if let Some(m) = q.get(*id) {
                    let st = &m.statuses[*index as usize];
                    assert_eq!(
                        st.state,
                        RecipientState::Delivered,
                        "{what}: outcome of {id} lost"
                    );
                }
            }
            Acked::Removed { id, at, .. } if by(*at, k) => {
                assert!(q.get(*id).is_none(), "{what}: removed message {id} is back");
            }
            _ => {}
        }
    }
    for m in q.page(None, usize::MAX) {
        let Some(n) = by_id.get(&m.id) else {
            panic!("{what}: a message nobody enqueued: {}", m.id)
        };
        let want = message(*n, 3);
        assert_eq!(*m.envelope, want.envelope, "{what}: envelope of {}", m.id);
        assert_eq!(q.body(m.id).unwrap(), body(*n), "{what}: body of {}", m.id);
        for (i, st) in m.statuses.iter().enumerate() {
            let ok = st.state == RecipientState::Pending
                || (i == 1 && st.state == RecipientState::Delivered);
            assert!(
                ok,
                "{what}: status {i} of {} was never written: {st:?}",
                m.id
            );
        }
    }
}

#[test]
fn every_cut_point_keeps_what_was_acknowledged() {
    cut_everywhere(false);
}

/// Outcomes answered before their sync: a power loss may take back those
/// of the last window, never a message or an outcome older than a sync.
#[test]
fn every_cut_point_keeps_what_was_acknowledged_with_lazy_outcomes() {
    cut_everywhere(true);
}

fn cut_everywhere(lazy: bool) {
    let work = tempfile::tempdir().unwrap();
    let (disk, acked) = workload(work.path(), lazy);
    assert!(
        disk.syncs.len() > 10,
        "the workload syncs: {}",
        disk.syncs.len()
    );
    let cuts = std::env::var("TERN_POWER_LOSS_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CUTS);
    let mut rng = Lcg(0x7e57);
    let started = std::time::Instant::now();
    for c in 0..cuts {
        let k = rng.next(disk.syncs.len() as u64) as usize;
        let dir = tempfile::tempdir().unwrap();
        let what = rebuild(&disk, k, &mut rng, dir.path());
        let (q, _) = Queue::open(options(dir.path()))
            .unwrap_or_else(|e| panic!("cut {c} ({what}): recovery failed: {e}"));
        check(&q, &acked, k, &format!("cut {c} ({what})"));
        q.close();
    }
    eprintln!(
        "{cuts} cut points over {} syncs and {} segment files in {:?} (lazy outcomes: {lazy})",
        disk.syncs.len(),
        disk.content.len(),
        started.elapsed()
    );
}
