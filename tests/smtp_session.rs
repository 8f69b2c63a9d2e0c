//! The inbound session, driven in memory: sequencing, pipelining, data
//! handling (dot-stuffing, headers, BDAT), parameters. Table style: each
//! row is a command and the reply it must get.

mod common;

use common::{after_received, start};
use tern::message::{MessageMeta, RecipientParams, Ret};

const LOCAL: &str = "127.0.0.1";

async fn run_table(s: &mut common::Session, rows: &[(&str, &str)]) {
    for (line, expect) in rows {
        s.cmd(line, expect).await;
    }
}

#[tokio::test]
async fn greeting_and_ehlo_capabilities() {
    let mut s = start(LOCAL, |_| {}).await;
    assert_eq!(s.greeting, "220 2.0.0 mx.test ESMTP Tern\r\n");
    let r = s.cmd("EHLO client.example", "250-").await;
    for ext in [
        "PIPELINING",
        "SIZE 25000000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
    ] {
        assert!(r.contains(&format!("250-{ext}\r\n")), "{ext} missing: {r}");
    }
    assert!(!r.contains("STARTTLS"), "no TLS configured: {r}");
    assert!(!r.contains("AUTH"), "AUTH only after TLS: {r}");
    assert!(r.ends_with("250 HELP\r\n"), "{r}");
    s.cmd("HELO client.example", "250 2.0.0 mx.test").await;
}

#[tokio::test]
async fn command_sequencing_and_syntax() {
    let mut s = start(LOCAL, |_| {}).await;
    run_table(
        &mut s,
        &[
            ("MAIL FROM:<a@b.example>", "503 5.5.1 Send HELO"),
            ("RCPT TO:<c@d.example>", "503 5.5.1 Send HELO"),
            ("DATA", "503 5.5.1 Send HELO"),
            ("EHLO", "501 5.5.4"),
            ("EHLO client.example", "250"),
            ("RCPT TO:<c@d.example>", "503 5.5.1 Need MAIL"),
            ("DATA", "503 5.5.1 Need MAIL"),
            ("MAIL FROM:<a@b.example>", "250 2.1.0"),
            ("MAIL FROM:<a@b.example>", "503 5.5.1 Nested"),
            ("DATA", "503 5.5.1 Need RCPT"),
            ("RCPT TO:<bad>", "501 5.1.3"),
            ("DATA", "554 5.5.1 No valid recipients"),
            ("RCPT TO:<c@d.example>", "250 2.1.5"),
            ("RSET", "250 2.0.0"),
            ("RCPT TO:<c@d.example>", "503 5.5.1 Need MAIL"),
            ("MAIL FROM:<>", "250 2.1.0"),
            ("EHLO again.example", "250"),
            ("RCPT TO:<c@d.example>", "503 5.5.1 Need MAIL"),
            ("MAIL FROM:a@b.example", "501 5.5.4"),
            ("MAIL FROM:<@>", "501 5.1.7"),
            ("FOO bar", "500 5.5.2"),
            ("EXPN list", "502 5.5.1"),
            ("ETRN example", "502 5.5.1"),
            ("VRFY someone", "252 2.5.2"),
            ("HELP", "214 2.0.0"),
            ("NOOP", "250 2.0.0"),
            ("STARTTLS", "502 5.5.1"),
            ("AUTH PLAIN dGVzdA==", "538 5.7.11"),
            ("QUIT", "221 2.0.0"),
        ],
    )
    .await;
    assert!(s.closed().await);
}

#[tokio::test]
async fn pipelined_group_gets_replies_in_order_in_one_write() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.send(b"MAIL FROM:<app@shop.example>\r\nRCPT TO:<a@one.example>\r\nRCPT TO:<nope>\r\nRCPT TO:<b@two.example>\r\nDATA\r\n").await;
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(s.reply().await);
    }
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(codes, ["250", "250", "501", "250", "354"]);
    s.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nNOOP\r\n")
        .await;
    assert!(s.reply().await.starts_with("250 2.0.0 Ok queued as "));
    s.cmd("NOOP", "250").await;
    assert_eq!(
        s.reply().await.get(..3),
        Some("250"),
        "the pipelined NOOP after the dot"
    );
    let q = s.queued();
    assert_eq!(q.len(), 1);
    let rcpts: Vec<&str> = q[0]
        .0
        .envelope
        .recipients
        .iter()
        .map(|r| &*r.address)
        .collect();
    assert_eq!(rcpts, ["a@one.example", "b@two.example"]);
}

#[tokio::test]
async fn dot_stuffing_round_trips_byte_exact() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    // As sent on the wire (stuffed) and as it must be stored (unstuffed).
    let cases: &[(&str, &str)] = &[
        ("", ""),
        (
            "..first line starts with a dot\r\n",
            ".first line starts with a dot\r\n",
        ),
        (
            "Subject: x\r\n\r\n..\r\n...\r\n..x\r\nx.\r\n. \r\n",
            "Subject: x\r\n\r\n.\r\n..\r\n.x\r\nx.\r\n \r\n",
        ),
    ];
    for (i, (wire, stored)) in cases.iter().enumerate() {
        let r = s.send_message("a@b.example", &["c@d.example"], wire).await;
        assert!(r.starts_with("250 2.0.0 Ok queued as"), "case {i}: {r}");
        let q = s.queued();
        let (_, body) = q.iter().max_by_key(|(m, _)| m.id).unwrap();
        let data = after_received(body);
        if stored.is_empty() {
            // An empty message gets Message-ID and Date, nothing else.
            let text = String::from_utf8_lossy(data);
            assert!(
                text.starts_with("Message-ID: <") && text.contains("\r\nDate: "),
                "{text}"
            );
        } else {
            let text = String::from_utf8_lossy(data);
            assert!(text.ends_with(stored), "case {i}: stored {text:?}");
        }
    }
}

#[tokio::test]
async fn exactly_one_received_header_and_missing_ids_are_added_once() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let body = "Received: from earlier.example by relay.example; Mon, 1 Jan 2026 00:00:00 +0000\r\nSubject: x\r\nMessage-ID: <keep@app>\r\n\r\nbody\r\n";
    assert!(
        s.send_message("a@b.example", &["c@d.example"], body)
            .await
            .starts_with("250")
    );
    let q = s.queued();
    let text = String::from_utf8_lossy(&q[0].1).into_owned();
    assert!(
        text.starts_with(
            "Received: from client.example ([127.0.0.1])\r\n\tby mx.test (Tern) with ESMTP id "
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("id {}\r\n\tfor <c@d.example>;", q[0].0.id)),
        "{text}"
    );
    assert_eq!(
        text.matches("Received:").count(),
        2,
        "ours plus the existing one, which is untouched"
    );
    assert_eq!(text.matches("Message-ID:").count(), 1, "kept the client's");
    assert_eq!(
        text.matches("\r\nDate: ").count(),
        1,
        "added the missing Date"
    );
    assert!(
        text.ends_with(body),
        "the client's data follows unchanged: {text}"
    );
}

#[tokio::test]
async fn mail_loop_is_refused() {
    let mut s = start(LOCAL, |c| c.listeners[0].max_received_headers = 5).await;
    s.cmd("EHLO client.example", "250").await;
    let body = "Received: x\r\n".repeat(5) + "\r\nloop\r\n";
    assert!(
        s.send_message("a@b.example", &["c@d.example"], &body)
            .await
            .starts_with("554 5.4.6")
    );
    let body = "Received: x\r\n".repeat(4) + "\r\nfine\r\n";
    assert!(
        s.send_message("a@b.example", &["c@d.example"], &body)
            .await
            .starts_with("250")
    );
}

#[tokio::test]
async fn bdat_chunks_last_and_empty() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    s.send(b"BDAT 12\r\nSubject: x\r\n").await;
    assert_eq!(s.reply().await, "250 2.0.0 12 octets received\r\n");
    s.cmd("DATA", "503 5.5.1 DATA not allowed after BDAT").await;
    // "QUIT\r\n" inside a chunk is data, never a command.
    s.send(b"BDAT 14 LAST\r\n\r\nQUIT\r\n.\r\nend").await;
    assert!(s.reply().await.starts_with("250 2.0.0 Ok queued as"));
    let text = String::from_utf8(after_received(&s.queued()[0].1).to_vec()).unwrap();
    assert!(
        text.ends_with("Subject: x\r\n\r\nQUIT\r\n.\r\nend\r\n"),
        "BDAT data is not unstuffed; a final CRLF is added: {text:?}"
    );
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    s.cmd("BDAT 0 LAST", "250 2.0.0 Ok queued as").await;
    s.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn refused_bdat_chunk_is_still_consumed() {
    let mut s = start(LOCAL, |c| {
        c.listeners[0].max_message_size = tern::config::values::ByteSize(1000)
    })
    .await;
    s.cmd("EHLO client.example", "250").await;
    // No transaction: the chunk (which looks like commands) must be swallowed.
    s.send(b"BDAT 28\r\nMAIL FROM:<evil@x.example>\r\n").await;
    assert!(s.reply().await.starts_with("503 5.5.1"));
    s.cmd("NOOP", "250").await;
    // Too big: consumed, refused, transaction dropped.
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    let chunk = vec![b'x'; 1500];
    s.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes())
        .await;
    s.send(&chunk).await;
    assert!(s.reply().await.starts_with("552 5.3.4"));
    s.cmd("NOOP", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "503 5.5.1 Need MAIL").await;
    assert!(s.queued().is_empty());
}

#[tokio::test]
async fn dsn_and_body_parameters_are_kept() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd(
        "MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159 BODY=8BITMIME SIZE=100",
        "250",
    )
    .await;
    s.cmd(
        "RCPT TO:<c@d.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;c@d.example",
        "250",
    )
    .await;
    s.cmd("RCPT TO:<e@f.example>", "250").await;
    s.cmd("DATA", "354").await;
    s.send("Subject: é\r\n\r\n8-bit body\r\n.\r\n".as_bytes())
        .await;
    assert!(s.reply().await.starts_with("250"));
    let (m, _) = s.queued().remove(0);
    let meta = MessageMeta::decode(&m.envelope.meta);
    assert_eq!(meta.ret, Some(Ret::Headers));
    assert_eq!(meta.envid.as_deref(), Some("QQ314159"));
    assert!(meta.body_8bitmime && meta.content_8bit && !meta.smtputf8);
    assert_eq!(meta.client_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(meta.helo, "client.example");
    let p = RecipientParams::decode(&m.envelope.recipients[0].params);
    assert_eq!(
        p.notify,
        (smtp_proto::RCPT_NOTIFY_FAILURE | smtp_proto::RCPT_NOTIFY_DELAY) as u8
    );
    assert_eq!(p.orcpt.as_deref(), Some("c@d.example"));
    assert!(m.envelope.recipients[1].params.is_empty());
}

#[tokio::test]
async fn parameters_of_unoffered_extensions_and_utf8_addresses() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    run_table(
        &mut s,
        &[
            ("MAIL FROM:<a@b.example> BODY=BINARYMIME", "555 5.5.4"),
            ("MAIL FROM:<a@b.example> FOO=BAR", "555 5.5.4"),
            ("MAIL FROM:<a@b.example> RET=FULL RET=HDRS", "501"),
            ("MAIL FROM:<jösé@b.example>", "553 5.6.7"),
            ("MAIL FROM:<jösé@b.example> SMTPUTF8", "250"),
            ("RCPT TO:<ü@bücher.example>", "250"),
            ("RCPT TO:<x@y.example> NOTIFY=NEVER,FAILURE", "501"),
            ("RSET", "250"),
            ("MAIL FROM:<a@b.example>", "250"),
            ("RCPT TO:<ü@b.example>", "553 5.6.7"),
        ],
    )
    .await;
}

#[tokio::test]
async fn duplicate_recipients_are_kept_once() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    let r = s
        .send_message(
            "a@b.example",
            &["x@d.example", "x@D.EXAMPLE", "X@d.example"],
            "Subject: d\r\n\r\nx\r\n",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let q = s.queued();
    let rcpts: Vec<&str> = q[0]
        .0
        .envelope
        .recipients
        .iter()
        .map(|r| &*r.address)
        .collect();
    assert_eq!(
        rcpts,
        ["x@d.example", "X@d.example"],
        "domains compare without case, local parts exactly"
    );
}
