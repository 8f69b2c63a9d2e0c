//! A restart with 100,000 queued messages takes new mail before the queued
//! mail is recovered (`[queue] recover_in_background`): the first 250
//! comes while the recovery is held back, new mail is delivered meanwhile
//! and nothing queued before is; once the recovery releases the messages
//! whose records it has read, the queued mail due now is delivered while
//! the rest is still being recovered. Nothing is delivered twice and
//! nothing is lost across the early start.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::net::{Net, Tern, ZONE, submit, until};
use queue::Timestamp;

const MESSAGES: u64 = 100_000;
/// Of them, due at once (the rest a day later).
const DUE_NOW: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_mail_is_taken_before_100k_queued_are_recovered_and_none_is_sent_twice() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.queue.recover_in_background = true;
    cfg.delivery.max_messages_per_connection = 1000;
    let now = Timestamp::now();
    let tomorrow = Timestamp::from_millis(now.as_millis() + 86_400_000);
    let due = |i: u64| format!("due{i}@alpha.test");
    common::fill_spool(&cfg, DUE_NOW, due, &[], now).await;
    let later = |i: u64| format!("later{i}@alpha.test");
    common::fill_spool(&cfg, MESSAGES - DUE_NOW, later, &[], tomorrow).await;

    let faults = Arc::new(queue::faults::Faults::default());
    faults.hold_recovery();
    let (tern, q) = Tern::start_with_faults(cfg.clone(), faults.clone()).await;
    assert!(q.is_recovering(), "the queue opened before its recovery");

    let reply = submit(
        tern.addr,
        "app@shop.test",
        &["fresh@alpha.test"],
        b"Subject: new\r\n\r\nhi\r\n",
    )
    .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        q.is_recovering(),
        "accepted while the queued mail is recovered"
    );
    let fresh_sent = until(Duration::from_secs(60), || !mx.received().is_empty()).await;
    assert!(fresh_sent, "new mail is delivered during the recovery");
    let rcpts = |mx: &common::sink::Sink| -> Vec<String> {
        mx.received().into_iter().flat_map(|r| r.rcpts).collect()
    };
    assert_eq!(
        rcpts(&mx),
        ["fresh@alpha.test"],
        "no queued mail before its recovery"
    );

    // Let the recovery release the first messages it has read (the due
    // ones: their ids come first) and hold it again before the others.
    faults.hold_recovery_after(DUE_NOW);
    let all = until(Duration::from_secs(300), || {
        rcpts(&mx).len() as u64 > DUE_NOW
    })
    .await;
    assert!(all, "the queued mail due now is delivered once released");
    assert!(
        q.is_recovering(),
        "delivered before the rest of the spool is recovered"
    );
    faults.release_recovery();
    assert!(matches!(q.recovered().await, queue::Recovery::Done(_)));
    tern.stop().await;
    drop(q);

    let mut seen: HashMap<String, u32> = HashMap::new();
    for r in rcpts(&mx) {
        *seen.entry(r).or_default() += 1;
    }
    assert_eq!(
        seen.len() as u64,
        DUE_NOW + 1,
        "every due message, and the new one"
    );
    assert!(seen.values().all(|n| *n == 1), "none delivered twice");
    assert!((0..DUE_NOW).all(|i| seen.contains_key(&due(i))));
    let (q, report) = common::reopen(cfg.queue.options());
    assert_eq!(
        report.messages,
        MESSAGES - DUE_NOW,
        "the rest still queued, none lost"
    );
    let pending = q.stats();
    assert_eq!(pending.recipients, MESSAGES - DUE_NOW);
}
