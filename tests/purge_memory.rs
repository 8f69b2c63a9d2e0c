//! A purge of 100,000 queued messages over the admin API stays within a
//! memory bound: it walks the queue a page at a time and never gathers the
//! matching messages. Alone in its test binary, so that the process's
//! resident memory is this test's.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::admin::{admin, call, config};
use common::net::{Net, Tern, ZONE};
use queue::Timestamp;
use tern::admin::client::{get, send};
use tern::admin::types::{JobProgress, JobStarted, Purge, QueueSummary};

const MESSAGES: u64 = 100_000;
/// One in ten goes to a domain the purge does not select.
const KEPT: u64 = MESSAGES / 10;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_100k_messages_stays_within_a_memory_bound() {
    let net = Net::new(ZONE).await;
    let a = admin(&net);
    let cfg = config(&net, &a);
    // Due in a day, so that nothing tries them while the test runs.
    let later = Timestamp::now().saturating_add(Duration::from_secs(86_400));
    let to = |i| match i % 10 {
        0 => "x@sender.test".to_owned(),
        _ => "x@alpha.test".to_owned(),
    };
    common::fill_spool(&cfg, MESSAGES, to, &[], later).await;
    let tern = Tern::start(cfg).await;
    let c = a.clone();
    let s: QueueSummary = call(move || {
        (0..200)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(50));
                // Once the spool's recovery after the start has ended.
                get::<QueueSummary>(&c, "/v1/queue/summary")
                    .ok()
                    .filter(|s| !s.recovering)
            })
            .unwrap()
    })
    .await;
    assert_eq!(s.messages, MESSAGES);

    let base = rss();
    let (peak, sampling) = (
        Arc::new(AtomicU64::new(base)),
        Arc::new(AtomicBool::new(true)),
    );
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let c = a.clone();
    let progress = call(move || {
        let req = Purge {
            domain: Some("alpha.test".into()),
            ..Purge::default()
        };
        let job = send::<JobStarted, _>(&c, "POST", "/v1/purge", &req)
            .unwrap()
            .job;
        // Bounded: 100,000 removals take seconds; give up after ten minutes.
        (0..6000)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                get::<JobProgress>(&c, &format!("/v1/jobs/{job}"))
                    .ok()
                    .filter(|p| p.finished)
            })
            .expect("the purge finished")
    })
    .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(progress.done_items, MESSAGES - KEPT);
    assert_eq!(progress.scanned, MESSAGES);
    let c = a.clone();
    let s: QueueSummary = call(move || get(&c, "/v1/queue/summary").unwrap()).await;
    assert_eq!(
        (s.messages, s.domains[0].domain.as_str()),
        (KEPT, "sender.test")
    );
    let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
    println!(
        "purge of {} messages: resident memory grew by {} KB at most",
        MESSAGES - KEPT,
        grew / 1024
    );
    // A page of messages and their removals in flight, and the delivery
    // log's buffer (16 MB at most), fit well within this; gathering the
    // 90,000 matches first would not.
    assert!(grew < 32 << 20, "resident memory grew by {grew} bytes");
    tern.stop().await;
    net.stop().await;
}
