//! The heap a queued message costs, counted by a counting allocator (the
//! figure `benches/relay --deferred` measures as RSS): messages queued
//! and then recovered by a fresh open (no body cached), so what is
//! counted is exactly the index's per-message state.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::{message, runtime};
use queue::{Queue, QueueOptions};

/// Bytes allocated and not freed, over the whole test binary.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; only
// the sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout, as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: a pointer this allocator returned, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes (as requested, before malloc's own rounding) per queued
/// message of `recipients` recipients, after a recovery; with `deferred`,
/// each was deferred once, its status record in a later segment than the
/// message (the common state of a backlog).
fn per_message(recipients: usize, deferred: bool) -> f64 {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        let mut o = QueueOptions::new(dir.path());
        o.body_cache = 0;
        o.segment_size = 1 << 20;
        // Filling fast; durability does not change what is counted.
        o.durability = queue::Durability::Buffered {
            flush_interval: std::time::Duration::from_millis(10),
        };
        o
    };
    let rt = runtime();
    {
        let (q, _) = Queue::open(opts()).unwrap();
        let ids: Vec<_> = (0..N)
            .map(|n| rt.block_on(q.enqueue(message(n, recipients))).unwrap())
            .collect();
        for id in ids.iter().filter(|_| deferred) {
            let later = queue::RecipientStatus {
                state: queue::RecipientState::Pending,
                attempts: 1,
                next_attempt: queue::Timestamp::from_millis(1_800_000_000_000),
                last_reply: Some("451 4.7.1 try again later".into()),
            };
            rt.block_on(q.update(*id, vec![(0, later)])).unwrap();
        }
        q.close();
    }
    let empty_dir = tempfile::tempdir().unwrap();
    let (empty, _) = Queue::open(QueueOptions::new(empty_dir.path())).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let (q, report) = Queue::open(opts()).unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(report.messages, N);
    let per = (after - before) as f64 / N as f64;
    q.close();
    empty.close();
    per
}

#[test]
fn a_queued_message_costs_a_bounded_heap() {
    let one = per_message(1, false);
    let ten = per_message(10, false);
    let extra = (ten - one) / 9.0;
    let deferred = per_message(1, true);
    println!(
        "heap per queued message: {one:.0} bytes with one recipient, {extra:.0} per further recipient, {deferred:.0} deferred once"
    );
    assert!(deferred < 260.0, "{deferred:.0} bytes per deferred message");
    // The goals (250 and 100 bytes), with a little room for allocator
    // differences; today 248 and 61.
    assert!(one < 260.0, "{one:.0} bytes per single-recipient message");
    assert!(extra < 100.0, "{extra:.0} bytes per further recipient");
}
