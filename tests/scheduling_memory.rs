//! A suspended site with 100,000 queued messages waits for free: no write
//! to the spool while it waits, resident memory that does not grow with
//! the wait (and grows with the backlog by no more than a small per
//! message cost), and no attempt counted for the mail that waited. Alone
//! in its test binary, so that the process's resident memory is this
//! test's.

mod common;

use std::time::Duration;

use common::admin::{admin, call, config};
use common::net::{Net, Tern, ZONE, skip};
use tern::admin::client::get;
use tern::views::DestRow;

const MESSAGES: u64 = 100_000;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Bytes of the spool's files.
fn spool_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn a_suspended_site_with_100k_queued_waits_without_writes_or_growth() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let a = admin(&net);
    let mut cfg = config(&net, &a);
    cfg.delivery.connection_limit = 1;
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        scope: tern::config::RuleScope::Site,
        duration: Some(tern::config::values::Duration::from_secs(6 * 3600)),
        ..tern::config::RuleConfig::default()
    });
    // Measured before the spool is filled (filling it allocates too): the
    // growth bounds what the daemon holds for the backlog.
    let base = rss();
    // All to the sink's "450 mailbox busy" address, due now.
    let to = |_| "tempfail@alpha.test".to_owned();
    common::fill_spool(&cfg, MESSAGES, to, &[], queue::Timestamp::now()).await;
    let spool = cfg.queue.path.clone();
    let tern = Tern::start(cfg).await;

    // The first send gets "450 mailbox busy": the site is suspended, and
    // every other message waits in its scheduled queue.
    let c = a.clone();
    let waiting = move || {
        let c = c.clone();
        get::<Vec<DestRow>>(&c, "/v1/destinations")
            .ok()
            .and_then(|rows| rows.into_iter().next())
            // All but the one tried; that one too once its retry is due.
            .filter(|r| r.scheduled >= MESSAGES - 1 && r.held.is_some())
    };
    let w = waiting.clone();
    let row = call(move || {
        (0..600).find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            w()
        })
    })
    .await
    .expect("all but one scheduled, held");
    assert!(
        row.held
            .as_deref()
            .unwrap()
            .contains("suspended by rule busy"),
        "{row:?}"
    );
    assert_eq!(mx.tries("tempfail@alpha.test"), 1, "one try, then the wait");
    let held_rss = rss();
    let per_message = held_rss.saturating_sub(base) / MESSAGES;
    println!(
        "resident memory: {} MB before, {} MB with 100k scheduled ({per_message} bytes per message, index included)",
        base >> 20,
        held_rss >> 20
    );
    assert!(
        per_message < 1500,
        "{per_message} bytes per queued message (index and scheduled job)"
    );

    // Five hours of waiting, in jumps: nothing written, nothing grows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (bytes, mem) = (spool_bytes(&spool), rss());
    for _ in 0..10 {
        skip(Duration::from_secs(30 * 60)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = waiting.clone();
    assert!(call(move || w().is_some()).await, "still held, all of it");
    assert_eq!(spool_bytes(&spool), bytes, "no write while it waits");
    let grown = rss().saturating_sub(mem);
    assert!(
        grown < 8 << 20,
        "resident memory grew by {grown} bytes while waiting"
    );
    assert_eq!(mx.tries("tempfail@alpha.test"), 1);
    tern.stop().await;

    let (q, _) = common::reopen(net.config().queue.options());
    let mut tried = 0;
    let mut after = None;
    loop {
        let page = q.page(after, 10_000);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        tried += page.iter().filter(|m| m.statuses[0].attempts > 0).count();
    }
    assert_eq!(tried, 1, "waiting counted no attempt");
    mx.stop().await;
    net.stop().await;
}
