//! Queue benchmark: durable enqueue throughput and recovery.
//!
//! ```text
//! cargo bench --bench queue                     # the figures in the README
//! cargo bench --bench queue -- --messages 20000 --recover 100000 --size 4096
//! ```
//!
//! 1. Enqueue: W concurrent writers (tasks on a 2-thread tokio runtime)
//!    enqueue 4 KB single-recipient messages into a fresh spool with full
//!    durability (one fdatasync per batch) until M messages are acked.
//!    Reports messages/s, MB/s, the average batch (messages per sync) and
//!    CPU time per message, for W = 1, 16 and 256.
//! 2. Recovery: fills a spool with R messages, closes it, and reopens it,
//!    reporting the open time and the heap held per queued message
//!    (measured with a counting allocator, so it excludes bodies, which
//!    stay on disk).
//!
//! The spool lives in a temporary directory under `$TMPDIR` (default
//! `/tmp`); point `TMPDIR` at the disk you want to measure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use queue::{Envelope, EnvelopeRecipient, NewMessage, Queue, QueueOptions, Timestamp};

/// Counts live heap bytes, to measure the queue's memory per message.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        LIVE.fetch_add(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Args {
    messages: u64,
    recover: u64,
    size: usize,
    writers: Vec<usize>,
}

fn parse_args() -> Args {
    let mut a = Args {
        messages: 50_000,
        recover: 100_000,
        size: 4096,
        writers: vec![1, 16, 256],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--messages" => a.messages = value().unwrap_or(a.messages),
            "--recover" => a.recover = value().unwrap_or(a.recover),
            "--size" => a.size = value().map_or(a.size, |v| v as usize),
            "--writers" => a.writers = value().map_or(a.writers, |v| vec![v as usize]),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    a
}

fn message(body: &Bytes, i: u64, rcpts: u64) -> NewMessage {
    let now = Timestamp::now();
    NewMessage {
        id: None,
        envelope: Envelope {
            sender: "bounces@shop.example".into(),
            meta: Box::default(),
            recipients: (0..rcpts)
                .map(|r| EnvelopeRecipient::new(format!("user{i}.{r}@d{}.example", (i + r) % 100)))
                .collect(),
        },
        arrival: now,
        first_attempt: now,
        priority: queue::DEFAULT_PRIORITY,
        body: body.clone(),
    }
}

fn cpu_time() -> Duration {
    let u = rustix_rusage();
    u.0 + u.1
}

/// (user, system) CPU time of this process, from /proc (no extra crates).
fn rustix_rusage() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (
        Duration::from_secs_f64(get(11)),
        Duration::from_secs_f64(get(12)),
    )
}

/// Enqueues `total` messages from `writers` tasks; returns elapsed time.
async fn fill(q: &Arc<Queue>, writers: usize, total: u64, rcpts: u64, body: &Bytes) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (q, next, body) = (q.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                q.enqueue(message(&body, i, rcpts)).await.expect("enqueue");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    start.elapsed()
}

fn open(dir: &std::path::Path) -> (Arc<Queue>, queue::RecoveryReport) {
    let mut opts = QueueOptions::new(dir);
    opts.body_cache = 0; // measure the spool, not the cache
    let (q, report) = Queue::open(opts).expect("open queue");
    (Arc::new(q), report)
}

fn bench_enqueue(rt: &tokio::runtime::Runtime, a: &Args, body: &Bytes) {
    println!(
        "durable enqueue, {} B messages, {} messages per run, fdatasync per batch",
        a.size, a.messages
    );
    println!(
        "{:>8} {:>12} {:>9} {:>10} {:>12}",
        "writers", "messages/s", "MB/s", "msgs/sync", "CPU us/msg"
    );
    for &w in &a.writers {
        let dir = tempfile::tempdir().expect("tempdir");
        let (q, _) = open(dir.path());
        let cpu0 = cpu_time();
        let elapsed = rt.block_on(fill(&q, w, a.messages, 1, body));
        let cpu = cpu_time() - cpu0;
        let io = q.io_stats();
        let rate = a.messages as f64 / elapsed.as_secs_f64();
        println!(
            "{:>8} {:>12.0} {:>9.1} {:>10.1} {:>12.1}",
            w,
            rate,
            io.bytes as f64 / elapsed.as_secs_f64() / 1e6,
            io.records as f64 / io.syncs.max(1) as f64,
            cpu.as_secs_f64() * 1e6 / a.messages as f64,
        );
        q.close();
    }
}

/// Fills a spool with `messages` of `rcpts` recipients, reopens it, and
/// reports the open time and the heap held per message and per recipient.
fn bench_recovery(rt: &tokio::runtime::Runtime, messages: u64, rcpts: u64, body: &Bytes) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (q, _) = open(dir.path());
        rt.block_on(fill(&q, 256, messages, rcpts, body));
        q.close();
    }
    let before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let (q, report) = open(dir.path());
    let elapsed = start.elapsed();
    let after = LIVE.load(Ordering::Relaxed);
    let held = after.saturating_sub(before) as u64;
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("live before {before} after {after}");
    }
    assert_eq!(report.messages, messages, "every message recovered");
    assert_eq!(
        report.recipients,
        messages * rcpts,
        "every recipient recovered"
    );
    println!(
        "recovery: {} messages x {} recipient(s) ({} MB of segments) reopened in {} ms; heap {} B per message, {} B per recipient",
        report.messages,
        rcpts,
        report.bytes_read / 1_000_000,
        elapsed.as_millis(),
        held / messages.max(1),
        held / (messages * rcpts).max(1),
    );
    q.close();
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let body = Bytes::from(vec![b'x'; a.size]);
    bench_enqueue(&rt, &a, &body);
    bench_recovery(&rt, a.recover, 1, &body);
    bench_recovery(&rt, a.recover / 10, 10, &body);
}
