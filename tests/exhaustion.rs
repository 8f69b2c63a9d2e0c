//! Resource exhaustion end to end, with disk failures injected into the
//! daemon's queue (the queue crate's `fault-injection` feature): a full
//! disk or a failing write when outcomes are written never makes Tern
//! send a message again while it runs (the message is held until its
//! outcome is written), a restart sends it at most once more, new mail
//! gets 4xx meanwhile, and everything heals by itself when the fault
//! clears.

mod common;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use common::net::{Net, Tern, ZONE, records, submit, submit_batch, until};
use common::sink::{Sink, SinkOptions};
use queue::faults::Faults;

/// A sink that answers each message's data after `delay`.
async fn slow_sink(net: &Net, delay: Duration) -> Sink {
    let opts = SinkOptions {
        data_delay: Some(delay),
        ..SinkOptions::default()
    };
    net.sink_with(10, opts).await
}

/// The first line a client gets.
async fn greeting(addr: std::net::SocketAddr) -> String {
    use tokio::io::AsyncBufReadExt;
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(s)
        .read_line(&mut line)
        .await
        .unwrap();
    line
}

/// Times each address arrived at the sink.
fn copies(sink: &Sink, rcpt: &str) -> usize {
    sink.received()
        .iter()
        .filter(|m| m.rcpts.iter().any(|r| r == rcpt))
        .count()
}

/// Five messages are sent; while the sink takes its time over them, the
/// disk fills (every write fails with `kind`): their outcomes cannot be
/// written. Returns the daemon and its queue.
async fn outcomes_refused(
    net: &Net,
    sink: &Sink,
    faults: &Arc<Faults>,
    kind: ErrorKind,
) -> (Tern, Arc<queue::Queue>) {
    let tern = Tern::start_with_faults(net.config(), faults.clone());
    let (tern, q) = tern.await;
    submit_batch(tern.addr, 5, |i| format!("r{i}@alpha.test"), "").await;
    assert!(until(Duration::from_secs(10), || sink.connections() >= 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.fail_writes(kind, true);
    assert_eq!(
        sink.wait_received(5, Duration::from_secs(30)).await.len(),
        5,
        "delivered while the disk fills"
    );
    let held = || q.stats().messages == 5 && !matches!(q.health(), queue::Health::Healthy);
    assert!(
        until(Duration::from_secs(10), held).await,
        "{:?}",
        q.health()
    );
    (tern, q)
}

#[tokio::test]
async fn a_full_disk_at_the_outcomes_never_sends_twice_and_heals_by_itself() {
    let net = Net::new(ZONE).await;
    let sink = slow_sink(&net, Duration::from_millis(1500)).await;
    let faults = Arc::new(Faults::default());
    let (tern, q) = outcomes_refused(&net, &sink, &faults, ErrorKind::StorageFull).await;

    // Held: nothing is sent again while the outcomes wait, and the door
    // answers 4xx.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..5 {
        assert_eq!(copies(&sink, &format!("r{i}@alpha.test")), 1, "r{i}");
    }
    let greeting = greeting(tern.addr).await;
    assert!(greeting.starts_with("421 4.3.2"), "{greeting}");

    // The disk has room again: the outcomes are written, the spool drains.
    faults.clear_writes();
    assert!(
        until(Duration::from_secs(60), || q.stats().messages == 0).await,
        "{} still queued, {:?}",
        q.stats().messages,
        q.health()
    );
    assert_eq!(q.health(), queue::Health::Healthy);
    let r = submit(
        tern.addr,
        "app@shop.test",
        &["late@alpha.test"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "the door is open again: {r}");
    assert_eq!(
        sink.wait_received(6, Duration::from_secs(30)).await.len(),
        6
    );
    tern.stop().await;
    for i in 0..5 {
        assert_eq!(copies(&sink, &format!("r{i}@alpha.test")), 1, "r{i}");
    }
    let log = net.log();
    let unrecorded: Vec<_> = log.iter().filter(|r| r["type"] == "unrecorded").collect();
    assert_eq!(unrecorded.len(), 5, "{log:#?}");
    assert!(
        unrecorded[0]["reply"]
            .as_str()
            .unwrap()
            .contains("may be delivered twice if Tern stops first")
    );
    sink.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_restart_before_the_outcomes_are_written_sends_each_message_once_more_at_most() {
    let net = Net::new(ZONE).await;
    let sink = slow_sink(&net, Duration::from_millis(1500)).await;
    let faults = Arc::new(Faults::default());
    let (tern, _q) = outcomes_refused(&net, &sink, &faults, ErrorKind::Other).await;
    tern.stop().await;

    let tern = Tern::start(net.config()).await;
    assert!(until(Duration::from_secs(30), || sink.received().len() == 10).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tern.stop().await;
    for i in 0..5 {
        assert_eq!(
            copies(&sink, &format!("r{i}@alpha.test")),
            2,
            "r{i}: once more, no more"
        );
    }
    assert!(net.spool().is_empty());
    sink.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_failed_sync_refuses_the_message_and_the_next_one_is_taken() {
    let net = Net::new(ZONE).await;
    let sink = net.sink(10).await;
    let faults = Arc::new(Faults::default());
    let (tern, q) = Tern::start_with_faults(net.config(), faults.clone()).await;
    faults.fail_next_sync(ErrorKind::Other);
    let body = b"Subject: doomed\r\n\r\nx\r\n";
    let r = submit(tern.addr, "app@shop.test", &["a@alpha.test"], body).await;
    assert!(r.starts_with("451"), "{r}");
    let healed = || q.health() == queue::Health::Healthy;
    assert!(until(Duration::from_secs(30), healed).await);
    let r = submit(tern.addr, "app@shop.test", &["b@alpha.test"], body).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        sink.wait_received(1, Duration::from_secs(30)).await.len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    tern.stop().await;
    assert_eq!(sink.received().len(), 1, "the refused one was never queued");
    assert!(records(&net.log(), "delivery", "a@alpha.test").is_empty());
    sink.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_deferral_that_cannot_be_written_is_not_retried_early() {
    let net = Net::new(ZONE).await;
    let held = SinkOptions {
        hold: true,
        ..SinkOptions::default()
    };
    let sink = net.sink_with(10, held).await;
    let faults = Arc::new(Faults::default());
    let (tern, q) = Tern::start_with_faults(net.config(), faults.clone()).await;
    let body = b"Subject: busy\r\n\r\nx\r\n";
    let r = submit(tern.addr, "app@shop.test", &["tempfail@alpha.test"], body).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        until(Duration::from_secs(10), || sink
            .tries("tempfail@alpha.test")
            == 1)
        .await
    );
    // The sink answers "450" once the disk is full: the deferral cannot
    // be written, and the message is held rather than retried at once.
    faults.fail_writes(ErrorKind::StorageFull, true);
    sink.release();
    let unwritable = || !matches!(q.health(), queue::Health::Healthy);
    assert!(until(Duration::from_secs(10), unwritable).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.tries("tempfail@alpha.test"),
        1,
        "not retried while held"
    );
    faults.clear_writes();
    let healed = || q.health() == queue::Health::Healthy;
    assert!(until(Duration::from_secs(60), healed).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.tries("tempfail@alpha.test"),
        1,
        "retried at its retry time, not now"
    );
    tern.stop().await;
    let queued = net.spool();
    assert_eq!(queued.len(), 1, "still queued, its deferral written");
    sink.stop().await;
    net.stop().await;
}
