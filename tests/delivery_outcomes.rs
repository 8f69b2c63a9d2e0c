//! Outbound delivery end to end (see `delivery.rs` for the fake
//! internet): per-recipient outcomes in one transaction, recipient limits,
//! a connection lost after the dot, dot-stuffing on the wire, STARTTLS,
//! no bounce for a bounce, and a restart in the middle of deliveries.

mod common;

use common::net::{Net, Tern, WAIT, ZONE, records, submit, submit_with, text, until};
use common::sink::SinkOptions;

#[tokio::test]
async fn mixed_outcomes_in_one_transaction() {
    let net = Net::new(ZONE).await;
    let (mx, sender) = (net.sink(10).await, net.sink(13).await);
    let tern = Tern::start(net.config()).await;
    let rcpts = [
        "ok@alpha.test",
        "tempfail@alpha.test",
        "multiline@alpha.test",
        "permfail@alpha.test",
        "overquota@alpha.test",
    ];
    submit(
        tern.addr,
        "app@sender.test",
        &rcpts,
        b"Subject: mixed\r\n\r\nbody\r\n",
    )
    .await;
    let got = mx.wait_received(1, WAIT).await;
    assert_eq!(got[0].rcpts, ["ok@alpha.test"]);
    let dsn = text(&sender.wait_received(1, WAIT).await[0].data);
    assert!(dsn.contains("Final-Recipient: rfc822; permfail@alpha.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.alpha.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"), "{dsn}");
    assert!(
        !dsn.contains("tempfail@") && !dsn.contains("multiline@"),
        "deferred recipients are not bounced"
    );
    tern.stop().await;

    let log = net.log();
    assert_eq!(records(&log, "delivery", "ok@alpha.test").len(), 1);
    assert_eq!(records(&log, "bounce", "permfail@alpha.test").len(), 1);
    assert_eq!(
        records(&log, "transient_failure", "tempfail@alpha.test")[0]["reply"],
        "450 4.2.0 mailbox busy"
    );
    let multi = records(&log, "transient_failure", "multiline@alpha.test")[0]["reply"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        multi.contains("mailbox busy") && multi.contains("come back later"),
        "{multi}"
    );
    assert_eq!(
        records(&log, "transient_failure", "overquota@alpha.test")[0]["reply"],
        "552 5.2.2 mailbox full"
    );
    let mut left = net.spool();
    left.sort_by(|a, b| a.0.cmp(&b.0));
    let pending = queue::RecipientState::Pending;
    assert_eq!(
        left.iter()
            .filter(|(_, s)| *s == pending)
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>(),
        [
            "multiline@alpha.test",
            "overquota@alpha.test",
            "tempfail@alpha.test"
        ],
        "552 at RCPT is temporary (RFC 5321 4.5.3.1.10)"
    );
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn too_many_recipients_go_in_further_transactions_on_the_same_connection() {
    let net = Net::new(ZONE).await;
    let mx = net
        .sink_with(
            10,
            SinkOptions {
                max_rcpts: Some(2),
                ..Default::default()
            },
        )
        .await;
    let tern = Tern::start(net.config()).await;
    let rcpts = [
        "r1@alpha.test",
        "r2@alpha.test",
        "r3@alpha.test",
        "r4@alpha.test",
        "r5@alpha.test",
    ];
    submit(
        tern.addr,
        "app@shop.test",
        &rcpts,
        b"Subject: many\r\n\r\nbody\r\n",
    )
    .await;
    let got = mx.wait_received(3, WAIT).await;
    let sizes: Vec<usize> = got.iter().map(|m| m.rcpts.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert!(got.iter().all(|m| m.peer == got[0].peer), "one connection");
    let mut all: Vec<&str> = got
        .iter()
        .flat_map(|m| m.rcpts.iter().map(String::as_str))
        .collect();
    all.sort_unstable();
    assert_eq!(all, rcpts);
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_connection_lost_after_the_dot_defers_and_warns_of_a_duplicate() {
    let net = Net::new(ZONE).await;
    let (mx, sender) = (net.sink(10).await, net.sink(13).await);
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "app@sender.test",
        &["dropdata@alpha.test"],
        b"Subject: a\r\n\r\nx\r\n",
    )
    .await;
    submit(
        tern.addr,
        "app@sender.test",
        &["datafail@alpha.test"],
        b"Subject: b\r\n\r\ny\r\n",
    )
    .await;
    let dsn = text(&sender.wait_received(1, WAIT).await[0].data);
    assert!(
        dsn.contains(
            "Final-Recipient: rfc822; datafail@alpha.test\r\nAction: failed\r\nStatus: 5.6.0\r\n"
        ),
        "{dsn}"
    );
    assert!(until(WAIT, || mx.tries("dropdata@alpha.test") == 1).await);
    tern.stop().await;
    let log = net.log();
    let t = records(&log, "transient_failure", "dropdata@alpha.test");
    assert_eq!(t.len(), 1, "{log:#?}");
    assert!(
        t[0]["reply"]
            .as_str()
            .unwrap()
            .contains("may be delivered twice"),
        "{}",
        t[0]["reply"]
    );
    assert!(mx.received().is_empty());
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn dot_stuffing_is_byte_exact() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let tern = Tern::start(net.config()).await;
    let body = b"Subject: dots\r\nMessage-ID: <d@shop.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n.\r\n..\r\n.leading\r\ntrailing.\r\n\r\n.\r\n. \r\nend\r\n";
    submit(tern.addr, "app@shop.test", &["dots@alpha.test"], body).await;
    let m = &mx.wait_received(1, WAIT).await[0];
    assert_eq!(common::after_received(&m.data), body);
    assert_eq!(
        m.raw,
        common::net::stuff(&m.data),
        "stuffed exactly once per leading dot, one terminator"
    );
    assert!(
        m.raw.ends_with(b"\r\nend\r\n.\r\n"),
        "no blank line added before the dot"
    );
    let bare = m.raw.windows(2).enumerate().any(|(i, w)| {
        (w[1] == b'\n' && w[0] != b'\r')
            || (w[0] == b'\r' && w[1] != b'\n')
            || (i == 0 && w[0] == b'\n')
    });
    assert!(!bare, "no bare CR or LF");
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn no_bounce_for_a_message_from_the_null_sender() {
    let net = Net::new(ZONE).await;
    let (mx, sender) = (net.sink(10).await, net.sink(13).await);
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "",
        &["permfail@alpha.test"],
        b"Subject: a bounce\r\n\r\nx\r\n",
    )
    .await;
    assert!(until(WAIT, || mx.tries("permfail@alpha.test") == 1).await);
    tern.stop().await;
    let log = net.log();
    assert_eq!(
        records(&log, "bounce", "permfail@alpha.test").len(),
        1,
        "{log:#?}"
    );
    assert_eq!(
        log.iter().filter(|r| r["type"] == "reception").count(),
        1,
        "no bounce queued"
    );
    assert!(net.spool().is_empty());
    assert!(sender.received().is_empty() && mx.received().is_empty());
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn starttls_is_used_when_offered_and_a_broken_one_falls_back_unless_required() {
    let net = Net::new(ZONE).await;
    let good = net
        .sink_with(
            14,
            SinkOptions {
                starttls: Some(common::sink::StartTls::Working(common::sink::acceptor())),
                ..Default::default()
            },
        )
        .await;
    let broken = net
        .sink_with(
            10,
            SinkOptions {
                starttls: Some(common::sink::StartTls::Broken),
                ..Default::default()
            },
        )
        .await;
    let mut cfg = net.config();
    cfg.routes.push(tern::config::RouteConfig {
        domain: "strict.test".into(),
        mx: vec!["mx.alpha.test".into()],
        tls: Some(tern::config::TlsPolicy::Required),
        ..Default::default()
    });
    let tern = Tern::start(cfg).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["secure@tls.test", "plain@alpha.test", "strict@strict.test"],
        b"Subject: tls\r\n\r\nx\r\n",
    )
    .await;
    let g = good.wait_received(1, WAIT).await;
    assert!(g[0].tls, "delivered under TLS");
    let b = broken.wait_received(1, WAIT).await;
    assert_eq!(
        b[0].rcpts,
        ["plain@alpha.test"],
        "only the opportunistic domain falls back"
    );
    assert!(
        !b[0].tls && !b[0].commands.contains(&"STARTTLS".to_owned()),
        "the retry is in plaintext"
    );
    tern.stop().await;
    let log = net.log();
    let strict = records(&log, "transient_failure", "strict@strict.test");
    assert_eq!(strict.len(), 1, "required TLS never falls back: {log:#?}");
    assert_eq!(
        records(&log, "delivery", "secure@tls.test")[0]["tls"],
        "tls"
    );
    assert_eq!(
        records(&log, "delivery", "plain@alpha.test")[0]["tls"],
        "none"
    );
    assert!(
        broken
            .sessions()
            .iter()
            .any(|(_, c)| c.contains(&"STARTTLS".to_owned())),
        "STARTTLS was tried first"
    );
    good.stop().await;
    broken.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_restart_mid_delivery_sends_no_recipient_twice() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let held = net
        .sink_with(
            15,
            SinkOptions {
                hold: true,
                ..Default::default()
            },
        )
        .await;
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["fast@alpha.test", "held@slow.test"],
        b"Subject: restart\r\n\r\nx\r\n",
    )
    .await;
    mx.wait_received(1, WAIT).await;
    assert!(
        until(WAIT, || held.tries("held@slow.test") == 1).await,
        "the second job is under way"
    );
    // Stop while the held recipient's transaction hangs: after the grace
    // period its connection is dropped, as a crash would drop it.
    tern.stop().await;
    held.stop().await;
    assert_eq!(
        net.spool()
            .iter()
            .filter(|(_, s)| *s == queue::RecipientState::Pending)
            .count(),
        1
    );

    let held = net.sink(15).await;
    let tern = Tern::start(net.config()).await;
    let got = held.wait_received(1, WAIT).await;
    assert_eq!(got[0].rcpts, ["held@slow.test"]);
    tern.stop().await;
    assert_eq!(
        mx.received().len(),
        1,
        "the delivered recipient is not sent again"
    );
    assert_eq!(mx.tries("fast@alpha.test"), 1);
    let log = net.log();
    assert_eq!(records(&log, "delivery", "fast@alpha.test").len(), 1);
    assert_eq!(records(&log, "delivery", "held@slow.test").len(), 1);
    assert!(net.spool().is_empty());
    mx.stop().await;
    held.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_354_after_every_rcpt_failed_gets_only_the_dot() {
    let net = Net::new(ZONE).await;
    let mx = net
        .sink_with(
            10,
            SinkOptions {
                always_354: true,
                ..Default::default()
            },
        )
        .await;
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "",
        &["permfail@alpha.test", "permfail2@alpha.test"],
        b"Subject: none\r\n\r\nbody\r\n",
    )
    .await;
    assert!(until(WAIT, || mx.empty_data().len() == 1).await);
    assert_eq!(
        mx.empty_data()[0],
        b".\r\n",
        "RFC 2920 3.1: no message data"
    );
    tern.stop().await;
    assert!(mx.received().is_empty());
    assert_eq!(
        records(&net.log(), "bounce", "permfail2@alpha.test").len(),
        1
    );
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn nothing_is_sent_that_the_server_did_not_agree_to() {
    let net = Net::new(ZONE).await;
    let mx = net
        .sink_with(
            10,
            SinkOptions {
                no_8bitmime: true,
                ..Default::default()
            },
        )
        .await;
    let sender = net.sink(13).await;
    let tern = Tern::start(net.config()).await;
    let eight_bit = "Subject: caf\u{e9}\r\n\r\nd\u{e9}j\u{e0} vu\r\n".as_bytes();
    let mail = "MAIL FROM:<app@sender.test> BODY=8BITMIME";
    submit_with(tern.addr, mail, &["eight@alpha.test"], eight_bit).await;
    let mail = "MAIL FROM:<app@sender.test> SMTPUTF8";
    submit_with(
        tern.addr,
        mail,
        &["j\u{f6}rg@alpha.test"],
        b"Subject: utf8\r\n\r\nx\r\n",
    )
    .await;
    let got = sender.wait_received(2, WAIT).await;
    let dsns: String = got.iter().map(|m| text(&m.data)).collect();
    assert!(
        dsns.contains(
            "Final-Recipient: rfc822; eight@alpha.test\r\nAction: failed\r\nStatus: 5.6.3\r\n"
        ),
        "{dsns}"
    );
    assert!(
        dsns.contains("Action: failed\r\nStatus: 5.6.7\r\n"),
        "{dsns}"
    );
    tern.stop().await;
    assert!(mx.received().is_empty(), "neither was sent");
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_pooled_connection_the_receiver_closed_is_replaced_at_once() {
    pooled_connection_closed(false).await;
}

/// The same with BDAT: the message went in the same write as MAIL, but a
/// receiver that never answered MAIL never read it.
#[tokio::test]
async fn a_pooled_connection_the_receiver_closed_is_replaced_at_once_with_bdat() {
    pooled_connection_closed(true).await;
}

async fn pooled_connection_closed(chunking: bool) {
    let net = Net::new(ZONE).await;
    let opts = SinkOptions {
        close_after_message: true,
        chunking,
        ..SinkOptions::default()
    };
    let mx = net.sink_with(10, opts).await;
    let tern = Tern::start(net.config()).await;
    let r = submit(
        tern.addr,
        "app@shop.test",
        &["one@alpha.test"],
        b"Subject: 1\r\n\r\n1\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    mx.wait_received(1, WAIT).await;
    // The receiver has closed; Tern's worker still holds the connection.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = submit(
        tern.addr,
        "app@shop.test",
        &["two@alpha.test"],
        b"Subject: 2\r\n\r\n2\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(
        got.len(),
        2,
        "delivered at once, not after retry_first (10 minutes here)"
    );
    tern.stop().await;
    mx.stop().await;
    let log = net.log();
    assert!(
        records(&log, "transient_failure", "two@alpha.test").is_empty(),
        "{log:#?}"
    );
    let d = records(&log, "delivery", "two@alpha.test");
    assert_eq!(d[0]["attempts"], 1, "{d:?}");
    net.stop().await;
}

/// A receiver offering PIPELINING and CHUNKING gets MAIL, every RCPT and
/// `BDAT n LAST` with the message in one round trip: the message arrives
/// byte for byte (no dot-stuffing), per-recipient outcomes hold, a
/// transaction whose every recipient failed delivers nothing, and the
/// connection carries the next message.
#[tokio::test]
async fn chunking_receivers_get_the_message_with_bdat_in_one_round_trip() {
    let net = Net::new(ZONE).await;
    let opts = SinkOptions {
        chunking: true,
        ..Default::default()
    };
    let (mx, sender) = (net.sink_with(10, opts).await, net.sink(13).await);
    let tern = Tern::start(net.config()).await;
    let body = b"Subject: chunks\r\nMessage-ID: <c@sender.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n.\r\n..\r\n.leading\r\nend\r\n";
    let rcpts = ["ok@alpha.test", "permfail@alpha.test"];
    submit(tern.addr, "app@sender.test", &rcpts, body).await;
    let got = mx.wait_received(1, WAIT).await;
    assert_eq!(got[0].rcpts, ["ok@alpha.test"]);
    assert_eq!(common::after_received(&got[0].data), body, "byte for byte");
    let cmds = &got[0].commands;
    let bdat = format!("BDAT {} LAST", got[0].data.len());
    assert!(cmds.contains(&bdat), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c == "DATA"), "{cmds:?}");
    let dsn = text(&sender.wait_received(1, WAIT).await[0].data);
    assert!(
        dsn.contains("Final-Recipient: rfc822; permfail@alpha.test"),
        "{dsn}"
    );

    // Every recipient refused: the chunk is read and nothing delivered.
    submit(tern.addr, "app@sender.test", &["permfail@alpha.test"], body).await;
    assert!(until(WAIT, || !mx.empty_data().is_empty()).await);
    sender.wait_received(2, WAIT).await;
    // The connection goes on.
    submit(tern.addr, "app@sender.test", &["second@alpha.test"], body).await;
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(got[1].rcpts, ["second@alpha.test"]);
    assert_eq!(got[1].peer, got[0].peer, "the same connection");
    tern.stop().await;
    let log = net.log();
    assert_eq!(records(&log, "delivery", "ok@alpha.test").len(), 1);
    assert_eq!(records(&log, "delivery", "second@alpha.test").len(), 1);
    assert_eq!(records(&log, "bounce", "permfail@alpha.test").len(), 2);
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}
