//! Limits, time limits (on tokio's paused clock: nothing sleeps for real),
//! back-pressure from the queue, the durability promise, and shutdown.

mod common;

use std::time::Duration;

use common::{Session, start};
use tern::config::values::ByteSize;
use tern::smtp::server::Phase;

const LOCAL: &str = "127.0.0.1";
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn recipients_beyond_the_limit_get_452_and_the_rest_are_kept() {
    let mut s = start(LOCAL, |c| c.listeners[0].max_recipients = 100).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    for i in 0..100 {
        s.cmd(&format!("RCPT TO:<r{i}@d.example>"), "250").await;
    }
    s.cmd("RCPT TO:<r100@d.example>", "452 4.5.3").await;
    s.cmd("RCPT TO:<r101@d.example>", "452 4.5.3").await;
    s.cmd("DATA", "354").await;
    s.send(b"Subject: many\r\n\r\nx\r\n.\r\n").await;
    assert!(s.reply().await.starts_with("250"));
    assert_eq!(s.queued()[0].0.envelope.recipients.len(), 100);
}

#[tokio::test]
async fn message_size_is_checked_at_mail_and_after_the_data() {
    let mut s = start(LOCAL, |c| c.listeners[0].max_message_size = ByteSize(1000)).await;
    let ehlo = s.cmd("EHLO client.example", "250").await;
    assert!(ehlo.contains("250-SIZE 1000\r\n"));
    s.cmd("MAIL FROM:<a@b.example> SIZE=1001", "552 5.3.4")
        .await;
    s.cmd("MAIL FROM:<a@b.example> SIZE=900", "250").await; // declared small, sent big
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    s.cmd("DATA", "354").await;
    let line = "x".repeat(100) + "\r\n";
    for _ in 0..500 {
        s.send(line.as_bytes()).await; // 51 KB: read and discarded
    }
    s.send(b".\r\n").await;
    assert!(s.reply().await.starts_with("552 5.3.4"));
    s.cmd("NOOP", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "503 5.5.1 Need MAIL").await;
    assert!(s.queued().is_empty());
}

#[tokio::test]
async fn data_lines_over_998_characters_are_refused() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let long = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(999));
    let r = s.send_message("a@b.example", &["c@d.example"], &long).await;
    assert!(
        r.starts_with("550 5.6.0 Line 3 of the message is 999 octets long")
            && r.contains("quoted-printable"),
        "{r}"
    );
    let ok = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(998));
    assert!(
        s.send_message("a@b.example", &["c@d.example"], &ok)
            .await
            .starts_with("250")
    );
}

#[tokio::test]
async fn with_long_lines_encode_the_part_is_quoted_printable_and_accepted() {
    let mut s = start(LOCAL, |c| {
        c.listeners[0].long_lines = tern::config::LongLines::Encode
    })
    .await;
    s.cmd("EHLO client.example", "250").await;
    let line = "caf\u{e9} ".repeat(300);
    let long = format!("Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{line}\r\n");
    let r = s.send_message("a@b.example", &["c@d.example"], &long).await;
    assert!(r.starts_with("250"), "{r}");
    let queued = s.queued();
    let text = String::from_utf8(queued[0].1.clone()).unwrap();
    assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 "),
        "{text}"
    );
    assert!(text.lines().all(|l| l.len() <= 998));
    assert!(text.is_ascii(), "no 8-bit byte left");
    let header = format!("Subject: {}\r\n\r\nbody\r\n", "y".repeat(999));
    let r = s
        .send_message("a@b.example", &["c@d.example"], &header)
        .await;
    assert!(
        r.starts_with("550 5.6.0 Line 1 "),
        "a long header line cannot be fixed: {r}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_dropped_after_the_command_timeout() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        s.reply_within(HOUR).await,
        "421 4.4.2 Timeout exceeded, closing connection\r\n"
    );
    assert_eq!(t0.elapsed().as_secs(), 300);
    assert!(s.closed().await);
}

#[tokio::test(start_paused = true)]
async fn trickling_a_command_does_not_extend_its_deadline() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let t0 = tokio::time::Instant::now();
    for byte in b"NOOP\r\n".iter().take(5) {
        if !s.try_send(&[*byte]).await {
            break;
        }
        tokio::time::sleep(Duration::from_secs(55)).await; // under the 300 s limit each time
    }
    let r = s.reply_within(HOUR).await;
    assert_eq!(r, "421 4.4.2 Timeout exceeded, closing connection\r\n");
    assert_eq!(
        t0.elapsed().as_secs(),
        300,
        "the limit counts from the last command, not the last byte"
    );
}

#[tokio::test(start_paused = true)]
async fn message_data_below_the_minimum_rate_is_cut_off() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    s.cmd("DATA", "354").await;
    let t0 = tokio::time::Instant::now();
    let Session { mut client, .. } = s;
    // One byte per second, for at most 20 minutes.
    let trickle = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..1200 {
            if client.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    let reply = tokio::time::timeout(HOUR, trickle).await.unwrap().unwrap();
    assert!(
        reply.starts_with("421 4.4.2 Data arriving too slowly"),
        "{reply}"
    );
    let secs = t0.elapsed().as_secs();
    assert!(
        (300..=302).contains(&secs),
        "grace of one command timeout, then 500 B/s: cut at {secs} s"
    );
}

#[tokio::test(start_paused = true)]
async fn sessions_end_at_the_session_timeout_however_busy() {
    let mut s = start(LOCAL, |c| {
        c.listeners[0].session_timeout = tern::config::values::Duration::from_secs(600)
    })
    .await;
    s.cmd("EHLO client.example", "250").await;
    let t0 = tokio::time::Instant::now();
    // A busy client: a NOOP every 70 s, well within the command timeout.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(70)).await;
        let sent = s.try_send(b"NOOP\r\n").await;
        let r = s.reply_within(HOUR).await;
        if r.starts_with("421") {
            assert_eq!(
                r,
                "421 4.4.2 Session lasted too long, closing connection\r\n"
            );
            assert!(
                t0.elapsed().as_secs() >= 600,
                "not before the session timeout"
            );
            return;
        }
        assert!(sent && r.starts_with("250"), "{r}");
    }
    panic!("the session outlived its timeout");
}

#[tokio::test]
async fn a_failed_sync_is_never_acknowledged() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"Subject: doomed\r\n\r\nx\r\n").await;
    s.queue.faults().fail_next_sync(std::io::ErrorKind::Other);
    s.send(b".\r\n").await;
    assert_eq!(
        s.reply().await,
        "451 4.3.0 Queue write error, try again later\r\n"
    );
    s.cmd("MAIL FROM:<a@b.example>", "452 4.3.1").await;
    assert!(s.queued().is_empty(), "nothing visible");
    let dir = s.dir.path().to_owned();
    let spool = dir.join("spool");
    drop(s.client);
    let _ = s.task.await;
    s.queue.close();
    drop(s.queue);
    let (q, report) = common::reopen(queue::QueueOptions::new(&spool));
    assert_eq!(report.messages, 0, "and nothing comes back after a restart");
    drop(q);
}

#[tokio::test]
async fn the_message_memory_budget_defers_new_data() {
    // Two sessions share a budget smaller than one data buffer: while the
    // first receives its message, the second's DATA is deferred (4xx).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.server.max_message_memory = ByteSize(1000);
    let (q, _) = common::reopen(cfg.queue.options());
    let q = std::sync::Arc::new(q);
    let memory = tern::smtp::server::MemoryBudget::new(cfg.server.max_message_memory.0);
    let mut a = common::start_with(dir, cfg.clone(), q.clone(), memory.clone(), LOCAL).await;
    let mut b =
        common::start_with(tempfile::tempdir().unwrap(), cfg, q, memory.clone(), LOCAL).await;
    for s in [&mut a, &mut b] {
        s.cmd("EHLO client.example", "250").await;
        s.cmd("MAIL FROM:<a@b.example>", "250").await;
        s.cmd("RCPT TO:<c@d.example>", "250").await;
    }
    a.cmd("DATA", "354").await;
    assert!(memory.used() > 1000);
    b.cmd("DATA", "452 4.3.1").await;
    a.send(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
    assert!(a.reply().await.starts_with("250"));
    assert_eq!(
        memory.used(),
        0,
        "given back once the message is handed over"
    );
    b.cmd("DATA", "354").await;
    b.send(b"Subject: y\r\n\r\ny\r\n.\r\n").await;
    assert!(b.reply().await.starts_with("250"));
}

#[tokio::test]
async fn the_queue_limit_gives_452_at_mail() {
    let mut s = start(LOCAL, |c| c.queue.max_messages = 1).await;
    s.cmd("EHLO client.example", "250").await;
    assert!(
        s.send_message("a@b.example", &["c@d.example"], "Subject: 1\r\n\r\nx\r\n")
            .await
            .starts_with("250")
    );
    s.cmd("MAIL FROM:<a@b.example>", "452 4.3.1").await;
}

#[tokio::test]
async fn a_pipelining_client_refused_for_load_is_not_punished_for_it() {
    let mut s = start(LOCAL, |c| c.queue.max_messages = 1).await;
    s.cmd("EHLO client.example", "250").await;
    assert!(
        s.send_message("a@b.example", &["c@d.example"], "Subject: 1\r\n\r\nx\r\n")
            .await
            .starts_with("250")
    );
    // More refused pipelined transactions than max_errors (20): each is
    // 452 at MAIL, then 503 for the RCPT and the DATA sent behind it.
    for _ in 0..30 {
        s.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
            .await;
        assert!(s.reply().await.starts_with("452 4.3.1"));
        assert!(s.reply().await.starts_with("503"));
        let data = s.reply().await;
        assert!(data.starts_with("503"), "{data}");
    }
    s.cmd("NOOP", "250").await;
    // Real errors still count.
    for _ in 0..19 {
        s.cmd("RCPT TO:<c@d.example>", "503").await;
    }
    s.send(b"RCPT TO:<c@d.example>\r\n").await;
    assert!(s.reply().await.starts_with("503"));
    let last = s.reply().await;
    assert!(last.starts_with("421 4.7.0"), "{last}");
}

#[tokio::test]
async fn a_full_spool_refuses_at_connect_with_421() {
    let s = start(LOCAL, |c| c.queue.min_free_space = ByteSize(u64::MAX)).await;
    assert!(s.greeting.starts_with("421 4.3.2"), "{}", s.greeting);
    let mut s = s;
    assert!(s.closed().await);
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_transactions_finish() {
    let mut idle = start(LOCAL, |_| {}).await;
    idle.cmd("EHLO client.example", "250").await;
    idle.phase.send(Phase::Draining).unwrap();
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 Service shutting down, try again later\r\n"
    );
    assert!(idle.closed().await);

    let mut busy = start(LOCAL, |_| {}).await;
    busy.cmd("EHLO client.example", "250").await;
    busy.cmd("MAIL FROM:<a@b.example>", "250").await;
    busy.cmd("RCPT TO:<c@d.example>", "250").await;
    busy.cmd("DATA", "354").await;
    busy.send(b"Subject: in flight\r\n\r\n").await;
    busy.phase.send(Phase::Draining).unwrap();
    busy.send(b"finishing\r\n.\r\n").await;
    assert!(
        busy.reply().await.starts_with("250 2.0.0 Ok queued"),
        "the transaction finishes"
    );
    assert!(
        busy.reply().await.starts_with("421 4.3.2"),
        "then the session closes"
    );
    assert_eq!(busy.queued().len(), 1);

    let mut late = start(LOCAL, |_| {}).await;
    late.cmd("EHLO client.example", "250").await;
    late.cmd("MAIL FROM:<a@b.example>", "250").await;
    late.cmd("RCPT TO:<c@d.example>", "250").await;
    late.cmd("DATA", "354").await;
    late.phase.send(Phase::Abort).unwrap();
    assert!(
        late.reply().await.starts_with("421 4.3.2"),
        "after the grace period: closed at once"
    );
    assert!(late.queued().is_empty());
}
