//! The ack-ledger crash test: a child process enqueues and updates from
//! many concurrent writers and records every acknowledged operation; the
//! parent kills it with SIGKILL at a random moment, reopens the spool, and
//! checks that every acknowledged message is present exactly once with its
//! acknowledged recipient states, and that nothing acknowledged as finished
//! came back.
//!
//! The child is this same test binary, started with `--ignored --exact
//! crash_child` and the spool directory in `TERN_CRASH_DIR`. Every other
//! run the child opens the spool with the recovery in the background
//! (`TERN_CRASH_BACKGROUND`) and the spool is not checked between its
//! kills, so a child takes over a crashed spool, writes while it recovers
//! it, and may be killed before its recovery ends.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{body, delivered, message, runtime};
use queue::{Queue, QueueOptions, RecipientState};

const WRITERS: u64 = 64;
/// The child stops by itself after this long, should the parent not kill it.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

fn options(dir: &Path) -> QueueOptions {
    let mut o = QueueOptions::new(dir);
    o.segment_size = 256 << 10; // small: rotation, deletion and compaction all happen
    o
}

/// The child's workload. Every test number `n` is enqueued once, then by
/// `n % 4`: 0 stays queued, 1 gets recipient 0 delivered, 2 gets both
/// delivered (removed), 3 is purged; a later child delivers both
/// recipients of an `n % 8 == 0` one it finds queued. Each acknowledgement is one line,
/// written with a single `write` so that it survives SIGKILL.
#[test]
#[ignore = "started by ack_ledger_survives_sigkill as its child process"]
fn crash_child() {
    let dir = std::env::var("TERN_CRASH_DIR").expect("TERN_CRASH_DIR");
    let ledger = std::env::var("TERN_CRASH_LEDGER").expect("TERN_CRASH_LEDGER");
    let first: u64 = std::env::var("TERN_CRASH_FIRST").unwrap().parse().unwrap();
    let mut opts = options(Path::new(&dir));
    opts.recover_in_background = std::env::var_os("TERN_CRASH_BACKGROUND").is_some();
    let (q, _) = Queue::open(opts).expect("child opens the queue");
    let q = Arc::new(q);
    let ledger = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger)
            .unwrap(),
    );
    let next = Arc::new(AtomicU64::new(first));
    let rt = runtime();
    let deadline = Instant::now() + CHILD_LIMIT;
    rt.block_on(async {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (q, ledger, next) = (q.clone(), ledger.clone(), next.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let id = q.enqueue(message(n, 2)).await.expect("enqueue");
                        (&*ledger)
                            .write_all(format!("E {n} {id}\n").as_bytes())
                            .unwrap();
                        let line = match n % 4 {
                            1 => q.update(id, vec![(0, delivered())]).await.map(|_| "U"),
                            2 => q
                                .update(id, vec![(0, delivered()), (1, delivered())])
                                .await
                                .map(|_| "D"),
                            3 => q.remove(id).await.map(|_| "R"),
                            _ => continue,
                        };
                        (&*ledger)
                            .write_all(format!("{} {n} {id}\n", line.expect("update")).as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        let finisher = tokio::spawn(finish_old(q.clone(), ledger.clone(), first, deadline));
        for t in tasks {
            let _ = t.await;
        }
        let _ = finisher.await;
    });
}

/// Delivers the messages an earlier child left queued (test numbers below
/// `first`) as they are handed out, one in two of them: with the recovery
/// in the background, while it still runs. Others are handed back.
async fn finish_old(q: Arc<Queue>, ledger: Arc<fs::File>, first: u64, deadline: Instant) {
    let later = queue::Timestamp::from_millis(u64::MAX / 2);
    while Instant::now() < deadline {
        for m in q.take_due(later, 32) {
            let n = u64::from_le_bytes(m.envelope.meta[..8].try_into().unwrap());
            if n >= first || n % 8 != 0 {
                q.release(m.id);
                continue;
            }
            let both = vec![(0, delivered()), (1, delivered())];
            q.update(m.id, both).await.expect("deliver an old one");
            (&*ledger)
                .write_all(format!("D {n} {}\n", m.id).as_bytes())
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the ledgers say must hold, per message id.
#[derive(Default)]
struct Expect {
    /// id -> (test number, first recipient acknowledged delivered)
    queued: HashMap<String, (u64, bool)>,
    /// ids acknowledged as finished or purged
    gone: HashSet<String>,
    max_n: u64,
    /// The first test number of the latest child: an `n % 8 == 0` message
    /// below it may have been delivered by that child (`finish_old`).
    latest_first: u64,
    /// Old messages a later child delivered.
    old_delivered: u64,
}

impl Expect {
    fn read(&mut self, ledger: &Path) {
        let text = fs::read_to_string(ledger).unwrap_or_default();
        for line in text.lines() {
            let mut parts = line.split(' ');
            let (Some(kind), Some(n), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue }; // a line cut by the kill is never complete
            self.max_n = self.max_n.max(n + 1);
            match kind {
                "E" => {
                    self.queued.insert(id.to_owned(), (n, false));
                }
                "U" => {
                    self.queued.insert(id.to_owned(), (n, true));
                }
                "D" | "R" => {
                    // Only `finish_old` delivers an `n % 8 == 0` one.
                    self.old_delivered += u64::from(kind == "D" && n % 8 == 0);
                    self.queued.remove(id);
                    self.gone.insert(id.to_owned());
                }
                _ => {}
            }
        }
    }

    /// Checks the reopened spool; returns how many acknowledged messages it held.
    fn verify(&self, dir: &Path, round: &str) -> usize {
        let (q, report) = Queue::open(options(dir)).expect("reopen after SIGKILL");
        assert_eq!(
            report.corrupt_records, 0,
            "{round}: a kill must not look like corruption: {report}"
        );
        let all = q.page(None, usize::MAX);
        let mut numbers = HashSet::new();
        for m in &all {
            let n = u64::from_le_bytes(m.envelope.meta[..8].try_into().unwrap());
            assert!(numbers.insert(n), "{round}: test number {n} queued twice");
            assert_eq!(q.body(m.id).unwrap(), body(n), "{round}: body of {n}");
        }
        for (id, (n, first_done)) in &self.queued {
            let got = q.get(id.parse().unwrap());
            // Only the enqueue of n was recorded: the follow-up that finishes
            // or purges it (n % 4 of 2 or 3) may have committed just before
            // the kill, without its ledger line.
            if got.is_none() && !first_done && n % 4 >= 2 {
                continue;
            }
            // Likewise an old one the latest child delivered (`finish_old`).
            if got.is_none() && n % 8 == 0 && *n < self.latest_first {
                continue;
            }
            let info =
                got.unwrap_or_else(|| panic!("{round}: acknowledged message {n} ({id}) lost"));
            assert_eq!(
                *info.envelope,
                message(*n, 2).envelope,
                "{round}: envelope of {n}"
            );
            if *first_done {
                assert_eq!(
                    info.statuses[0],
                    delivered(),
                    "{round}: acknowledged delivery of {n} lost"
                );
            }
            assert_eq!(
                info.statuses[1].state,
                RecipientState::Pending,
                "{round}: {n}"
            );
        }
        for id in &self.gone {
            assert!(
                q.get(id.parse().unwrap()).is_none(),
                "{round}: finished message {id} came back"
            );
        }
        self.queued.len()
    }
}

fn run_child_and_kill(dir: &Path, ledger: &Path, first: u64, delay: Duration, background: bool) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if background {
        command.env("TERN_CRASH_BACKGROUND", "1");
    }
    let mut child = command
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TERN_CRASH_DIR", dir)
        .env("TERN_CRASH_LEDGER", ledger)
        .env("TERN_CRASH_FIRST", first.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start child");
    // Let it get going (bounded), then kill at the chosen moment.
    for _ in 0..500 {
        if fs::metadata(ledger).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
}

#[test]
fn ack_ledger_survives_sigkill() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let (mut total_checked, mut old_delivered) = (0, 0);
    for run in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let mut expect = Expect::default();
        // Two crashes on the same spool: the second child recovers a crashed
        // spool, keeps writing, and is killed too.
        let background = run % 2 == 1;
        for round in 0..2 {
            let ledger = dir.path().join(format!("ledger-{round}"));
            let delay = Duration::from_millis(50 + rand(400));
            let spool = dir.path().join("spool");
            let first = expect.max_n + 1_000_000;
            expect.latest_first = first;
            run_child_and_kill(&spool, &ledger, first, delay, background);
            expect.read(&ledger);
            if background && round == 0 {
                continue; // the next child takes over the crashed spool
            }
            total_checked += expect.verify(
                &spool,
                &format!("run {run} round {round} (kill after {delay:?}, background {background})"),
            );
        }
        assert!(
            !expect.queued.is_empty(),
            "run {run}: the child acknowledged nothing"
        );
        old_delivered += expect.old_delivered;
    }
    assert!(
        old_delivered > 0,
        "no child delivered a message an earlier one left queued"
    );
    assert!(
        total_checked > 100,
        "too little was acknowledged to mean anything: {total_checked}"
    );
}
