//! Protocol synchronization and data hygiene, in memory:
//!
//! - RFC 2920 3.1: input sent ahead of a reply the client had to wait for
//!   (message text before the 354, commands after EHLO or HELO, anything
//!   pipelined without PIPELINING) ends the session with 554 5.5.0 and
//!   queues nothing; legitimate pipelining (MAIL, RCPT, DATA in one write;
//!   the next MAIL right after the final dot; BDAT chunks) works.
//! - NUL bytes in message data: refused with 550 5.6.0, or stripped.
//! - A refused `BDAT 0 LAST` is answered at once.
//! - HELP names only what the session offers.

mod common;

use common::{Session, start};
use tern::config::NulBytes;

const LOCAL: &str = "127.0.0.1";

/// Every reply to `wire`, sent in one write, until EOF or `n` replies.
async fn replies(s: &mut Session, wire: &[u8], n: usize) -> Vec<String> {
    s.send(wire).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = s.reply().await;
        if r.is_empty() {
            break;
        }
        out.push(r);
    }
    out
}

#[tokio::test]
async fn message_text_sent_before_the_354_is_refused_and_nothing_is_queued() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let wire = b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@one.example>\r\nDATA\r\nSubject: early\r\n\r\nearly\r\n.\r\nMAIL FROM:<spoof@bank.example>\r\n";
    let r = replies(&mut s, wire, 5).await;
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r[0].starts_with("250") && r[1].starts_with("250"), "{r:?}");
    assert!(r[2].starts_with("554 5.5.0"), "{r:?}");
    assert!(s.closed().await);
    assert!(s.queued().is_empty(), "nothing queued");
}

#[tokio::test]
async fn commands_pipelined_behind_ehlo_or_without_pipelining_are_refused() {
    for (hello, wire) in [
        ("", "EHLO client.example\r\nMAIL FROM:<a@shop.example>\r\n"),
        (
            "HELO client.example",
            "MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@one.example>\r\n",
        ),
        ("", "NOOP\r\nNOOP\r\n"),
    ] {
        let mut s = start(LOCAL, |_| {}).await;
        if !hello.is_empty() {
            s.cmd(hello, "250").await;
        }
        let r = replies(&mut s, wire.as_bytes(), 3).await;
        assert_eq!(r.len(), 1, "{wire:?}: {r:?}");
        assert!(r[0].starts_with("554 5.5.0"), "{wire:?}: {r:?}");
        assert!(s.closed().await);
    }
}

#[tokio::test]
async fn legitimate_pipelining_still_works() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    // MAIL, RCPT, DATA in one write; the text after the 354.
    let r = replies(&mut s, b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@one.example>\r\nRCPT TO:<c@one.example>\r\nDATA\r\n", 4).await;
    assert!(r[3].starts_with("354"), "{r:?}");
    // The next transaction pipelined right after the final dot.
    let wire = b"Subject: one\r\n\r\none\r\n.\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<b@one.example>\r\nDATA\r\n";
    let r = replies(&mut s, wire, 4).await;
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[3].starts_with("354"), "{r:?}");
    s.send(b"Subject: two\r\n\r\ntwo\r\n.\r\n").await;
    assert!(s.reply().await.starts_with("250"));
    // BDAT chunks are pipelined by design (RFC 3030).
    let wire = b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@one.example>\r\nBDAT 14\r\nSubject: x\r\n\r\nBDAT 3 LAST\r\nx\r\n";
    let r = replies(&mut s, wire, 4).await;
    assert!(r.iter().all(|r| r.starts_with("250")), "{r:?}");
    assert_eq!(s.queued().len(), 3);
}

#[tokio::test]
async fn the_check_can_be_turned_off_per_listener() {
    let mut s = start(LOCAL, |c| c.listeners[0].strict_pipelining = false).await;
    s.cmd("EHLO client.example", "250").await;
    let wire = b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@one.example>\r\nDATA\r\nSubject: early\r\n\r\nearly\r\n.\r\n";
    let r = replies(&mut s, wire, 4).await;
    assert!(r[3].starts_with("250"), "{r:?}");
}

#[tokio::test]
async fn nul_bytes_are_refused_or_stripped() {
    let body = "Subject: nul\r\n\r\nbefore\0after\r\n\0.\r\n";
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let r = s
        .send_message("a@shop.example", &["b@one.example"], body)
        .await;
    assert!(r.starts_with("550 5.6.0"), "{r}");
    assert!(s.queued().is_empty());

    let mut s = start(LOCAL, |c| c.listeners[0].nul_bytes = NulBytes::Strip).await;
    s.cmd("EHLO client.example", "250").await;
    let r = s
        .send_message("a@shop.example", &["b@one.example"], body)
        .await;
    assert!(r.starts_with("250"), "{r}");
    let (_, data) = &s.queued()[0];
    let content = common::after_received(data);
    assert!(
        !content.contains(&0),
        "{:?}",
        String::from_utf8_lossy(content)
    );
    assert!(
        content.ends_with(b"beforeafter\r\n.\r\n"),
        "{:?}",
        String::from_utf8_lossy(content)
    );
}

#[tokio::test]
async fn a_refused_bdat_0_last_is_answered_at_once() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO b", "250").await;
    let wire =
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<bad@@x>\r\nBDAT 12\r\nSubject: x\r\nBDAT 0 LAST\r\n";
    let r = replies(&mut s, wire, 4).await;
    assert_eq!(r.len(), 4, "one reply per command: {r:?}");
    assert!(r[0].starts_with("250") && r[1].starts_with("5"), "{r:?}");
    assert!(
        r[2].starts_with("554 5.5.1") && r[3].starts_with("554 5.5.1"),
        "{r:?}"
    );
    s.cmd("NOOP", "250").await; // in step
}

#[tokio::test]
async fn help_names_only_what_the_session_offers() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let r = s.cmd("HELP", "214").await;
    assert!(!r.contains("STARTTLS") && !r.contains("AUTH"), "{r}");
    let (mut s, _) = common::start_tls_capable(LOCAL).await;
    s.cmd("EHLO client.example", "250").await;
    let r = s.cmd("HELP", "214").await;
    assert!(r.contains("STARTTLS"), "{r}");
}
