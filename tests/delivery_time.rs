//! Outbound delivery over time: retries after a DNS SERVFAIL and after a
//! 4xx, a first MX whose banner never comes, expiry with its bounce
//! checked field by field, and the delay and relay notices senders ask
//! for. Time moves by explicit jumps of tokio's clock
//! ([`skip`]), never by sleeping. The fake internet is the one of
//! `delivery.rs`.

mod common;

use std::time::Duration;

use common::net::{Net, Tern, WAIT, ZONE, records, skip, submit, submit_with, text, until};
use common::sink::SinkOptions;

/// Longer than any jittered retry delay of the test config (10 min, then
/// 20 min, ±10%).
const RETRY: Duration = Duration::from_secs(22 * 60);

/// Outcome lines logged for `rcpt` so far.
fn outcomes(net: &Net, rcpt: &str) -> usize {
    let log = net.log();
    ["transient_failure", "delivery", "bounce", "expiration"]
        .iter()
        .map(|k| records(&log, k, rcpt).len())
        .sum()
}

#[tokio::test]
async fn servfail_defers_then_the_retry_delivers() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    net.dns.servfail("flakydns.test", true);
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["x@flakydns.test"],
        b"Subject: dns\r\n\r\nx\r\n",
    )
    .await;
    assert!(
        until(WAIT, || outcomes(&net, "x@flakydns.test") == 1).await,
        "a SERVFAIL defers"
    );
    net.dns.servfail("flakydns.test", false);
    skip(RETRY).await;
    let got = mx.wait_received(1, WAIT).await;
    assert_eq!(got.len(), 1);
    tern.stop().await;

    let log = net.log();
    let t = records(&log, "transient_failure", "x@flakydns.test");
    assert_eq!(t.len(), 1, "{log:#?}");
    assert!(
        t[0]["reply"].as_str().unwrap().starts_with("451 4.4.3 "),
        "{}",
        t[0]["reply"]
    );
    let d = records(&log, "delivery", "x@flakydns.test");
    assert_eq!(d[0]["attempts"], 2);
    let waited = d[0]["queue_time_ms"].as_u64().unwrap();
    assert!(
        waited >= RETRY.as_millis() as u64,
        "delivered after the jump, not {waited} ms"
    );
    assert!(net.dns.asked("flakydns.test") >= 2);
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_4xx_is_retried_then_delivered_once() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["flaky@alpha.test", "steady@alpha.test"],
        b"Subject: r\r\n\r\nx\r\n",
    )
    .await;
    assert!(until(WAIT, || outcomes(&net, "flaky@alpha.test") == 1).await);
    assert_eq!(
        mx.received()[0].rcpts,
        ["steady@alpha.test"],
        "the first attempt delivers the other recipient"
    );
    skip(RETRY).await;
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].rcpts,
        ["flaky@alpha.test"],
        "the retry sends only the deferred one"
    );
    tern.stop().await;
    assert_eq!(mx.tries("flaky@alpha.test"), 2);
    assert_eq!(mx.tries("steady@alpha.test"), 1);
    let log = net.log();
    assert_eq!(
        records(&log, "transient_failure", "flaky@alpha.test")[0]["reply"],
        "450 4.7.1 try again later",
        "{log:#?}"
    );
    assert_eq!(
        records(&log, "delivery", "flaky@alpha.test")[0]["attempts"],
        2
    );
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_first_mx_whose_banner_never_comes_times_out_and_the_second_delivers() {
    let zone = format!(
        "{ZONE}\nslowbanner IN MX 10 mx1.slowbanner\nslowbanner IN MX 20 mx.alpha\nmx1.slowbanner IN A {{net}}.16\n"
    );
    let net = Net::new(&zone).await;
    let slow = net
        .sink_with(
            16,
            SinkOptions {
                banner_delay: Some(Duration::from_secs(86_400)),
                ..Default::default()
            },
        )
        .await;
    let mx = net.sink(10).await;
    let tern = Tern::start(net.config()).await;
    submit(
        tern.addr,
        "app@shop.test",
        &["x@slowbanner.test"],
        b"Subject: s\r\n\r\nx\r\n",
    )
    .await;
    assert!(until(WAIT, || slow.connections() == 1).await);
    // Past the banner timeout (300 s); again if Tern had not yet started
    // waiting when the clock jumped.
    let mut got = Vec::new();
    for _ in 0..5 {
        skip(Duration::from_secs(301)).await;
        got = mx.wait_received(1, Duration::from_secs(2)).await;
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1);
    tern.stop().await;
    let d = records(&net.log(), "delivery", "x@slowbanner.test")[0].clone();
    assert_eq!(d["attempts"], 1, "the same attempt moved on to the next MX");
    assert_eq!(d["remote_host"], "mx.alpha.test");
    assert!(d["queue_time_ms"].as_u64().unwrap() >= 300_000);
    assert!(slow.received().is_empty());
    slow.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn expiry_sends_one_dsn_with_every_field() {
    let net = Net::new(ZONE).await;
    let (mx, sender) = (net.sink(10).await, net.sink(13).await);
    let mut cfg = net.config();
    cfg.delivery.max_age = tern::config::values::Duration::from_secs(3600);
    let tern = Tern::start(cfg).await;
    let body = b"Subject: expiring\r\nFrom: App <app@sender.test>\r\nMessage-ID: <e1@sender.test>\r\n\r\nthe secret body\r\n";
    let rcpts = [
        "tempfail@alpha.test NOTIFY=FAILURE ORCPT=rfc822;TempFail@Alpha.test",
        "tempfail2@alpha.test NOTIFY=NEVER",
    ];
    let r = submit_with(
        tern.addr,
        "MAIL FROM:<app@sender.test> RET=HDRS ENVID=env-42",
        &rcpts,
        body,
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    assert!(until(WAIT, || outcomes(&net, "tempfail@alpha.test") == 1).await);
    // Each jump makes the next retry due; the third try finds the one
    // after it past max_age (1 h), so the recipients expire.
    for tries in 2..=3 {
        skip(RETRY).await;
        assert!(
            until(WAIT, || outcomes(&net, "tempfail@alpha.test") == tries).await,
            "try {tries}"
        );
    }
    let got = sender.wait_received(1, WAIT).await;
    assert_eq!(got.len(), 1, "one bounce");
    check_expiry_dsn(&got[0]);
    tern.stop().await;

    let log = net.log();
    let e = records(&log, "expiration", "tempfail@alpha.test");
    assert_eq!(e.len(), 1, "{log:#?}");
    assert_eq!(mx.tries("tempfail@alpha.test"), 3);
    assert_eq!(e[0]["attempts"], 3);
    assert_eq!(records(&log, "expiration", "tempfail2@alpha.test").len(), 1);
    let age = e[0]["queue_time_ms"].as_u64().unwrap();
    assert!(
        (2 * RETRY.as_millis() as u64..3_600_000).contains(&age),
        "expired when the next retry would pass max_age, at {age} ms"
    );
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}

/// The bounce of `expiry_sends_one_dsn_with_every_field`, field by field.
fn check_expiry_dsn(bounce: &common::sink::Received) {
    let dsn = text(&bounce.data);
    assert_eq!(
        (bounce.from.as_str(), bounce.rcpts.as_slice()),
        ("", &["app@sender.test".to_owned()][..])
    );
    let headers = dsn.split("\r\n\r\n").next().unwrap();
    for field in [
        "From: Mail Delivery System <MAILER-DAEMON@mx.test>",
        "To: <app@sender.test>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
    ] {
        assert!(
            headers.contains(&format!("{field}\r\n")),
            "header {field:?} missing:\n{dsn}"
        );
    }
    let status = dsn
        .split("Content-Type: message/delivery-status\r\n\r\n")
        .nth(1)
        .expect("a delivery-status part");
    let (per_message, rest) = status.split_once("\r\n\r\n").unwrap();
    let fields: Vec<&str> = per_message.lines().collect();
    assert_eq!(fields[0], "Reporting-MTA: dns; mx.test");
    assert!(fields.contains(&"Original-Envelope-Id: env-42"));
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("Arrival-Date: ") && f.ends_with("+0000"))
    );
    let per_rcpt: Vec<&str> = rest.split("\r\n\r\n").next().unwrap().lines().collect();
    assert_eq!(
        &per_rcpt[..5],
        [
            "Final-Recipient: rfc822; tempfail@alpha.test",
            "Original-Recipient: rfc822; TempFail@Alpha.test",
            "Action: failed",
            "Status: 5.4.7",
            "Remote-MTA: dns; mx.alpha.test",
        ]
    );
    assert_eq!(per_rcpt[5], "Diagnostic-Code: smtp; 450 4.2.0 mailbox busy");
    assert!(per_rcpt[6].starts_with("Last-Attempt-Date: "));
    assert!(!dsn.contains("tempfail2@"), "NOTIFY=NEVER: not reported");
    assert!(
        dsn.contains("Content-Type: text/rfc822-headers\r\n\r\nReceived: "),
        "RET=HDRS returns the headers"
    );
    assert!(dsn.contains("Subject: expiring\r\n") && !dsn.contains("the secret body"));
}

/// Delay notices a sender received, by recipient.
fn notices_of(got: &[common::sink::Received], action: &str) -> Vec<String> {
    got.iter()
        .map(|r| text(&r.data))
        .filter(|t| t.contains(&format!("Action: {action}\r\n")))
        .collect()
}

#[tokio::test]
async fn a_delay_notice_goes_once_per_interval_to_recipients_that_asked() {
    let net = Net::new(ZONE).await;
    let (_mx, sender) = (net.sink(10).await, net.sink(13).await);
    let mut cfg = net.config();
    cfg.delivery.delay_notice_after = tern::config::values::Duration::from_secs(15 * 60);
    cfg.delivery.delay_notice_interval = tern::config::values::Duration::from_secs(86_400);
    let tern = Tern::start(cfg).await;
    let rcpts = [
        "tempfail@alpha.test NOTIFY=DELAY,FAILURE",
        "tempfail2@alpha.test NOTIFY=FAILURE",
    ];
    let body = b"Subject: slow\r\nFrom: app@sender.test\r\n\r\nthe body\r\n";
    let r = submit_with(tern.addr, "MAIL FROM:<app@sender.test>", &rcpts, body).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(until(WAIT, || outcomes(&net, "tempfail@alpha.test") == 1).await);
    // The second try (past 15 min) sends the notice; the third (within
    // the day) does not send another.
    for tries in 2..=3 {
        skip(RETRY).await;
        assert!(
            until(WAIT, || outcomes(&net, "tempfail@alpha.test") == tries).await,
            "try {tries}"
        );
    }
    sender.wait_received(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = sender.received();
    let delayed = notices_of(&got, "delayed");
    assert_eq!(delayed.len(), 1, "one notice: {got:#?}");
    let dsn = &delayed[0];
    assert!(
        dsn.contains("Subject: Delayed Mail (still being retried)\r\n"),
        "{dsn}"
    );
    assert!(dsn.contains("Final-Recipient: rfc822; tempfail@alpha.test\r\n"));
    assert!(
        !dsn.contains("tempfail2@"),
        "NOTIFY=FAILURE only: no delay notice"
    );
    assert!(
        dsn.contains("Status: 4.2.0\r\nRemote-MTA: dns; mx.alpha.test\r\n"),
        "{dsn}"
    );
    assert!(dsn.contains("Will-Retry-Until: "));
    assert!(!dsn.contains("the body"), "headers only");
    tern.stop().await;
    sender.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_next_hop_without_dsn_makes_a_relay_notice_for_notify_success() {
    let net = Net::new(ZONE).await;
    let opts = SinkOptions {
        no_dsn: true,
        ..SinkOptions::default()
    };
    let (mx, sender) = (net.sink_with(10, opts).await, net.sink(13).await);
    let tern = Tern::start(net.config()).await;
    let rcpts = ["x@alpha.test NOTIFY=SUCCESS,FAILURE", "y@alpha.test"];
    let body = b"Subject: hi\r\nFrom: app@sender.test\r\n\r\nhello\r\n";
    let r = submit_with(tern.addr, "MAIL FROM:<app@sender.test>", &rcpts, body).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(mx.wait_received(1, WAIT).await.len(), 1);
    let got = sender.wait_received(1, WAIT).await;
    let relayed = notices_of(&got, "relayed");
    assert_eq!(relayed.len(), 1, "{got:#?}");
    assert!(
        relayed[0].contains(
            "Final-Recipient: rfc822; x@alpha.test\r\nAction: relayed\r\nStatus: 2.0.0\r\n"
        ),
        "{}",
        relayed[0]
    );
    assert!(
        !relayed[0].contains("y@alpha.test"),
        "no NOTIFY: no relay notice"
    );
    tern.stop().await;
    mx.stop().await;
    sender.stop().await;
    net.stop().await;
}
