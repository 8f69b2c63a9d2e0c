//! Attack and bad-input cases from RELIABILITY.md section 3, in memory:
//! SMTP smuggling (A1), STARTTLS injection (A3), the open-relay battery
//! (A12), CR/LF and NUL injection (A5), 8-bit garbage (A8), over-long
//! lines (A6), and AUTH abuse (A14).

mod common;

use common::{PASSWORD, Session, b64, plain, start, start_tls_capable, tls_session, upgrade};

const LOCAL: &str = "127.0.0.1";
const STRANGER: &str = "192.0.2.99";

/// The smuggling sequences of RELIABILITY.md A1.
const SMUGGLING: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
];

/// The hidden transaction: if the server took `seq` for the end of the
/// data, these lines would run as commands, and the client's own final
/// CRLF.CRLF would end the spoofed message.
const SMUGGLED: &[u8] = b"MAIL FROM:<spoof@bank.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nSubject: spoofed\r\n\r\nspoofed\r\n";

/// Sends one message whose body hides a second transaction behind `seq`,
/// in `piece`-byte writes; returns every reply after the 354.
async fn smuggle(s: &mut Session, seq: &[u8], piece: usize) -> Vec<String> {
    s.cmd("MAIL FROM:<app@shop.example>", "250").await;
    s.cmd("RCPT TO:<rcpt@one.example>", "250").await;
    s.cmd("DATA", "354").await;
    let mut wire = b"Subject: smuggle\r\n\r\nbefore".to_vec();
    wire.extend_from_slice(seq);
    wire.extend_from_slice(SMUGGLED);
    wire.extend_from_slice(b".\r\nNOOP\r\n");
    for chunk in wire.chunks(piece) {
        if !s.try_send(chunk).await {
            break; // the server closed the session (a malformed end of data)
        }
    }
    let mut replies = Vec::new();
    loop {
        let r = s.reply().await;
        if r.is_empty() {
            break; // closed
        }
        let noop = r.starts_with("250 2.0.0 Ok\r\n");
        replies.push(r);
        if noop {
            break;
        }
    }
    replies
}

#[tokio::test]
async fn smuggling_sequences_never_start_a_second_transaction() {
    for piece in [usize::MAX, 3, 1] {
        for seq in SMUGGLING {
            let mut s = start(LOCAL, |_| {}).await;
            s.cmd("EHLO client.example", "250").await;
            let replies = smuggle(&mut s, seq, piece).await;
            let case = format!("{seq:?} in {piece}-byte writes: {replies:?}");
            let first = replies
                .first()
                .unwrap_or_else(|| panic!("no reply at all: {case}"));
            // No reply ever answers the hidden MAIL, RCPT or DATA.
            assert!(
                replies.iter().all(|r| !r.contains("Sender ok")
                    && !r.contains("Recipient ok")
                    && !r.starts_with("354")),
                "{case}"
            );
            let queued = s.queued();
            if first.starts_with("250 2.0.0 Ok queued") {
                // One message, with the hidden text as its body.
                assert_eq!(queued.len(), 1, "{case}");
                assert_eq!(&*queued[0].0.envelope.sender, "app@shop.example", "{case}");
                assert!(
                    String::from_utf8_lossy(&queued[0].1)
                        .contains("MAIL FROM:<spoof@bank.example>"),
                    "{case}"
                );
            } else {
                assert!(
                    first.starts_with("550 5.6.0") || first.starts_with("554 5.5.0"),
                    "refused whole: {case}"
                );
                assert!(queued.is_empty(), "nothing queued: {case}");
            }
        }
    }
}

#[tokio::test]
async fn with_normalization_the_smuggled_text_stays_in_the_one_message() {
    for seq in SMUGGLING
        .iter()
        .filter(|s| !s.windows(3).any(|w| w == b".\r\r"))
    {
        let mut s = start(LOCAL, |c| {
            c.listeners[0].bare_line_endings = tern::config::BareLineEndings::Normalize;
            c.listeners[0].nul_bytes = tern::config::NulBytes::Strip;
        })
        .await;
        s.cmd("EHLO client.example", "250").await;
        let replies = smuggle(&mut s, seq, 2).await;
        assert!(
            replies[0].starts_with("250 2.0.0 Ok queued"),
            "{seq:?}: {replies:?}"
        );
        let q = s.queued();
        assert_eq!(q.len(), 1, "{seq:?}");
        assert_eq!(&*q[0].0.envelope.sender, "app@shop.example");
        let body = String::from_utf8_lossy(&q[0].1);
        assert!(
            body.contains("MAIL FROM:<spoof@bank.example>") && body.ends_with("spoofed\r\n"),
            "{seq:?}: {body:?}"
        );
        let stripped = body.replace("\r\n", "");
        assert!(
            !stripped.contains('\n') && !stripped.contains('\r'),
            "only CRLF line ends: {body:?}"
        );
    }
}

#[tokio::test]
async fn plaintext_after_starttls_is_discarded_and_state_reset() {
    let (mut s, pem) = start_tls_capable(LOCAL).await;
    let ehlo = s.cmd("EHLO client.example", "250").await;
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("STARTTLS", "503").await; // not inside a transaction
    s.cmd("RSET", "250").await;
    // One write: STARTTLS plus injected commands (CVE-2011-0411).
    s.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@evil.example>\r\n")
        .await;
    assert_eq!(s.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    assert!(s.buf.is_empty(), "nothing else was answered in plaintext");
    let mut s = upgrade(s, &pem).await;
    // The first thing said in TLS gets the first reply: the injected RSET
    // and MAIL were never run.
    s.cmd("RCPT TO:<c@d.example>", "503 5.5.1 Send HELO").await;
    let ehlo = s.cmd("EHLO client.example", "250").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    s.cmd("STARTTLS", "503 5.5.1 TLS already active").await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"Subject: over TLS\r\n\r\nhi\r\n.\r\n").await;
    assert!(s.reply().await.starts_with("250 2.0.0 Ok queued"));
    let q = s.queue.page(None, 10);
    let body = s.queue.body(q[0].id).unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("with ESMTPS id"),
        "TLS recorded in Received"
    );
}

#[tokio::test]
async fn auth_only_over_tls_and_it_grants_relay() {
    let (mut s, pem) = start_tls_capable(STRANGER).await;
    let ehlo = s.cmd("EHLO client.example", "250").await;
    assert!(!ehlo.contains("AUTH"), "no AUTH before TLS: {ehlo}");
    s.cmd(
        &format!("AUTH PLAIN {}", plain("app", PASSWORD)),
        "538 5.7.11",
    )
    .await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "554 5.7.1 Relay access denied")
        .await;
    s.cmd("RSET", "250").await;
    s.send(b"STARTTLS\r\n").await;
    s.reply().await;
    let mut s = upgrade(s, &pem).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain("app", "wrong")),
        "535 5.7.8",
    )
    .await;
    s.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    s.cmd("*", "501 5.7.0").await;
    s.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    s.cmd(&b64("app"), "334 UGFzc3dvcmQ6").await;
    s.cmd(&b64(PASSWORD), "235 2.7.0").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain("app", PASSWORD)),
        "503 5.5.1 Already",
    )
    .await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd("RCPT TO:<c@d.example>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.send(b"Subject: authenticated\r\n\r\nhi\r\n.\r\n").await;
    assert!(s.reply().await.starts_with("250 2.0.0 Ok queued"));
    let q = s.queue.page(None, 10);
    let meta = tern::message::MessageMeta::decode(&q[0].envelope.meta);
    assert_eq!(meta.auth_user.as_deref(), Some("app"));
    assert!(String::from_utf8_lossy(&s.queue.body(q[0].id).unwrap()).contains("with ESMTPSA id"));
}

#[tokio::test]
async fn repeated_auth_failures_close_the_session() {
    let mut s = tls_session(STRANGER).await;
    s.cmd("AUTH PLAIN", "334 ").await;
    s.cmd(&plain("app", "guess1"), "535 5.7.8").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain("nobody", "guess2")),
        "535 5.7.8",
    )
    .await;
    s.send(format!("AUTH PLAIN {}\r\n", plain("app", "guess3")).as_bytes())
        .await;
    let r = s.reply().await;
    assert!(r.starts_with("535 5.7.8"), "{r}");
    assert_eq!(
        s.reply().await,
        "421 4.7.0 Too many authentication failures, closing connection\r\n"
    );
    assert!(s.closed().await);
}

#[tokio::test]
async fn open_relay_battery_is_refused_for_strangers() {
    // Every refused RCPT counts as an error; let all rows be checked
    // (errors_beyond_the_limit_close_the_session covers the limit).
    let mut s = start(STRANGER, |c| c.listeners[0].max_errors = 1000).await;
    s.cmd("EHLO probe.example", "250").await;
    let senders = ["<>", "<antispam@[192.0.2.1]>", "<antispam@mx.test>"];
    let recipients = [
        "<relaytest@ext.example>",
        "<relaytest%ext.example@[192.0.2.1]>",
        "<relaytest%ext.example@mx.test>",
        "<\"relaytest@ext.example\">",
        "<\"relaytest%ext.example\">",
        "<relaytest@ext.example@[192.0.2.1]>",
        "<\"relaytest@ext.example\"@[192.0.2.1]>",
        "<relaytest@ext.example@mx.test>",
        "<@[192.0.2.1]:relaytest@ext.example>",
        "<@mx.test:relaytest@ext.example>",
        "<ext.example!relaytest>",
        "<ext.example!relaytest@[192.0.2.1]>",
        "<ext.example!relaytest@mx.test>",
        "<RELAYTEST@EXT.EXAMPLE>",
        "<relaytest@ext.example.>",
        "<relaytest@[IPv6:2001:db8::1]>",
        "<relaytest@xn--bcher-kva.example>",
        "<postmaster>",
    ];
    for from in senders {
        // smtp-proto refuses address literals in MAIL FROM (501 5.1.7):
        // then there is nothing to relay either.
        if !s
            .cmd(&format!("MAIL FROM:{from}"), "")
            .await
            .starts_with("250")
        {
            continue;
        }
        for to in recipients {
            let r = s.cmd(&format!("RCPT TO:{to}"), "5").await;
            assert!(
                r.starts_with("554 5.7.1") || r.starts_with("501"),
                "{from} -> {to}: {r}"
            );
        }
        s.cmd("DATA", "554 5.5.1").await;
        s.cmd("RSET", "250").await;
    }
    assert!(s.queued().is_empty());
}

#[tokio::test]
async fn control_characters_and_garbage_in_commands() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.send(b"\x80\x81\x82\x83\r\n").await;
    assert!(s.reply().await.starts_with("501 5.5.2"));
    s.send(b"NO\x00OP\r\n").await;
    assert!(s.reply().await.starts_with("501 5.5.2"));
    // CR inside a command must not split it into two commands (A5).
    s.send(b"MAIL FROM:<a@b.example> SIZE=1\rRCPT TO:<x@y.example>\r\n")
        .await;
    assert!(s.reply().await.starts_with("501 5.5.2"));
    s.cmd("NOOP", "250").await;
    s.cmd(
        "MAIL FROM:<a@b.example> ENVID=a+0D+0AX-Inj:+20y",
        "501 5.5.4",
    )
    .await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    s.cmd(
        "RCPT TO:<c@d.example> ORCPT=rfc822;a+0D+0AX-Inj:+20y@d.example",
        "501",
    )
    .await;
    s.send("MAIL FROM:<\u{e9}@b.example> SMTPUTF8\r\n".as_bytes())
        .await;
    assert!(s.reply().await.starts_with("503"), "a transaction is open");
    s.send(b"RSET\r\nMAIL FROM:<\xe9\xff@b.example> SMTPUTF8\r\n")
        .await;
    assert!(s.reply().await.starts_with("250"));
    assert!(
        s.reply().await.starts_with("501 5.5.2"),
        "invalid UTF-8 even with SMTPUTF8"
    );
    s.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn over_long_lines_are_discarded_whole() {
    let mut s = start(LOCAL, |_| {}).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd("MAIL FROM:<a@b.example>", "250").await;
    // The tail of an over-long line must never run as a command.
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 3000));
    line.extend_from_slice(b"RSET\r\n");
    s.send(&line).await;
    assert!(s.reply().await.starts_with("500 5.5.2 Line too long"));
    s.cmd("RCPT TO:<c@d.example>", "250").await; // the transaction survived
    // A megabyte without a line end, in many writes: one error, bounded memory.
    for _ in 0..64 {
        s.send(&[b'y'; 16 * 1024]).await;
    }
    s.send(b"\r\nNOOP\r\n").await;
    assert!(s.reply().await.starts_with("500 5.5.2"));
    assert!(s.reply().await.starts_with("250 2.0.0 Ok"));
}

#[tokio::test]
async fn errors_beyond_the_limit_close_the_session() {
    let mut s = start(LOCAL, |c| c.listeners[0].max_errors = 3).await;
    s.cmd("EHLO client.example", "250").await;
    s.cmd("BOGUS", "500").await;
    s.cmd("BOGUS", "500").await;
    s.send(b"BOGUS\r\n").await;
    assert!(s.reply().await.starts_with("500"));
    assert!(s.reply().await.starts_with("421 4.7.0 Too many errors"));
    assert!(s.closed().await);
}
