//! Traffic shaping end to end: limits from `[shaping]` hold at the sinks.
//! Rates are per minute and the test moves Tern's clock a minute at a time
//! (`skip`), so each arrival can be tied to the jump that allowed it: a
//! path, a provider over two sites, and a source over two sites never send
//! faster than their rate, and a provider's connection limit holds across
//! its sites.

mod common;

use std::time::Duration;

use common::net::{Net, Tern, WAIT, ZONE, records, skip, submit, until};
use common::sink::{Sink, SinkOptions};
use tern::config::{
    Config, PathLimitsConfig, ProviderConfig, SourceShapingConfig, TotalLimitsConfig,
};

const BIGMAIL: &str = "
d1 IN MX 10 mx1.bigmail
mx1.bigmail IN A {net}.10
d2 IN MX 10 mx2.bigmail
mx2.bigmail IN A {net}.11
";

fn provider(name: &str, suffix: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        mx_suffixes: vec![suffix.into()],
        ..ProviderConfig::default()
    }
}

fn rate(s: &str) -> Option<tern::config::values::Rate> {
    Some(s.parse().unwrap())
}

/// Nothing in the delivery log bounced.
fn assert_no_bounce(log: &[serde_json::Value]) {
    let bounced = log.iter().any(|r| r["type"] == "bounce");
    assert!(!bounced, "nothing bounces");
}

/// Messages counted at `sinks` in all.
fn arrived(sinks: &[&Sink]) -> usize {
    sinks.iter().map(|s| s.received().len()).sum()
}

/// Waits (real time) until `n` messages arrived, then checks that no more
/// come in a further 300 ms: the limit holds until the clock moves.
async fn exactly(sinks: &[&Sink], n: usize) {
    assert!(
        until(WAIT, || arrived(sinks) >= n).await,
        "only {} of {n} arrived",
        arrived(sinks)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(arrived(sinks), n, "more than the rate allows");
}

/// Submits one message to each address.
async fn send_each(tern: &Tern, to: &[&str]) {
    for (i, rcpt) in to.iter().enumerate() {
        let body = format!("Subject: {i}\r\n\r\nshaped\r\n");
        let r = submit(tern.addr, "app@shop.test", &[rcpt], body.as_bytes()).await;
        assert!(r.starts_with("250"), "{r}");
    }
}

/// `burst` at once, then one per minute of Tern's clock, up to `total`.
async fn one_per_minute(sinks: &[&Sink], burst: usize, total: usize) {
    exactly(sinks, burst).await;
    for n in burst + 1..=total {
        skip(Duration::from_secs(61)).await;
        exactly(sinks, n).await;
    }
}

#[tokio::test]
async fn a_path_never_exceeds_its_message_rate() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg: Config = net.config();
    let mut p = provider("alpha", ".alpha.test");
    p.per_path.message_rate = rate("1/m,burst=2");
    cfg.shaping.providers.push(p);
    let tern = Tern::start(cfg).await;
    send_each(
        &tern,
        &[
            "a@alpha.test",
            "b@alpha.test",
            "c@alpha.test",
            "d@alpha.test",
        ],
    )
    .await;
    one_per_minute(&[&mx], 2, 4).await;
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_provider_rate_holds_across_its_sites_and_domains() {
    let net = Net::new(&format!("{ZONE}{BIGMAIL}")).await;
    let (mx1, mx2) = (net.sink(10).await, net.sink(11).await);
    let mut cfg = net.config();
    let mut p = provider("bigmail", "bigmail.test");
    p.total.message_rate = rate("1/m,burst=1");
    cfg.shaping.providers.push(p);
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["a@d1.test", "b@d2.test", "c@d1.test", "d@d2.test"]).await;
    one_per_minute(&[&mx1, &mx2], 1, 4).await;
    assert!(!mx1.received().is_empty() && !mx2.received().is_empty());
    tern.stop().await;
    mx1.stop().await;
    mx2.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_source_total_holds_across_sites() {
    let net = Net::new(ZONE).await;
    let (alpha, sender) = (net.sink(10).await, net.sink(13).await);
    let mut cfg = net.config();
    cfg.shaping.sources.push(SourceShapingConfig {
        source: "a".into(),
        per_path: PathLimitsConfig::default(),
        total: TotalLimitsConfig {
            message_rate: rate("1/m,burst=1"),
            ..TotalLimitsConfig::default()
        },
    });
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["a@alpha.test", "b@sender.test", "c@sender.test"]).await;
    one_per_minute(&[&alpha, &sender], 1, 3).await;
    tern.stop().await;
    alpha.stop().await;
    sender.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_provider_connection_limit_holds_across_its_sites() {
    let net = Net::new(&format!("{ZONE}{BIGMAIL}")).await;
    let held = SinkOptions {
        hold: true,
        ..SinkOptions::default()
    };
    let (mx1, mx2) = (net.sink_with(10, held).await, net.sink(11).await);
    let mut cfg = net.config();
    let mut p = provider("bigmail", ".bigmail.test");
    p.total.connection_limit = Some(1);
    cfg.shaping.providers.push(p);
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["a@d1.test"]).await;
    assert!(until(WAIT, || mx1.connections() == 1).await);
    send_each(&tern, &["b@d2.test"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mx2.connections(),
        0,
        "the provider's only connection is in use"
    );
    mx1.release();
    exactly(&[&mx1], 1).await;
    assert_eq!(
        mx2.connections(),
        0,
        "the idle connection still holds the slot"
    );
    skip(Duration::from_secs(11)).await; // idle_timeout: the connection closes
    exactly(&[&mx2], 1).await;
    tern.stop().await;
    mx1.stop().await;
    mx2.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_dead_site_pauses_its_path_and_its_mail_waits_without_connecting() {
    let net = Net::new(ZONE).await;
    let refusing = SinkOptions {
        refuse: true,
        ..SinkOptions::default()
    };
    let mx = net.sink_with(10, refusing).await;
    let mut cfg = net.config();
    cfg.delivery.dead_site_failures = 2;
    cfg.delivery.dead_site_pause = tern::config::values::Duration::from_secs(120);
    let tern = Tern::start(cfg).await;
    let deferrals = || {
        let path = net.dir.path().join("deliveries.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"transient_failure\""))
            .count()
    };
    // Two refused connections (one per message, each a real attempt)
    // pause the path.
    for (i, rcpt) in ["a@alpha.test", "b@alpha.test"].iter().enumerate() {
        send_each(&tern, &[rcpt]).await;
        assert!(until(WAIT, || mx.connections() == i + 1).await);
    }
    assert!(until(WAIT, || deferrals() == 2).await, "both deferred");
    let listed = || net.actions().iter().any(|a| a.rule == "dead_site");
    assert!(
        until(WAIT, listed).await,
        "the pause is listed with the actions"
    );
    // Paused: the next message waits, untried and unrecorded.
    send_each(&tern, &["c@alpha.test"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deferrals(), 2, "waiting is not an attempt");
    assert_eq!(mx.connections(), 2, "no connection during the pause");

    // When the pause ends, one connection probes the site with the mail
    // that waited; it fails, and the path pauses anew.
    skip(Duration::from_secs(121)).await;
    assert!(until(WAIT, || deferrals() == 3).await, "the probe");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mx.connections(), 3, "one probe after the pause");
    tern.stop().await;
    mx.stop().await;
    let log = net.log();
    let replies: Vec<&str> = log
        .iter()
        .filter(|r| r["type"] == "transient_failure")
        .filter_map(|r| r["reply"].as_str())
        .collect();
    assert!(
        replies
            .iter()
            .all(|r| r.contains("no answer from any host")),
        "only real attempts are recorded: {replies:?}"
    );
    assert_no_bounce(&log);
    net.stop().await;
}

#[tokio::test]
async fn a_matching_reply_suspends_the_path_for_its_duration_then_mail_resumes() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        enhanced: Some("4.2.".into()),
        text: Some("(?i)mailbox busy".into()),
        scope: tern::config::RuleScope::Path,
        duration: Some(tern::config::values::Duration::from_secs(120)),
        ..tern::config::RuleConfig::default()
    });
    let tern = Tern::start(cfg).await;
    // The sink answers "450 4.2.0 mailbox busy" for tempfail@: the rule
    // suspends the path.
    send_each(&tern, &["tempfail@alpha.test"]).await;
    assert!(until(WAIT, || mx.tries("tempfail@alpha.test") == 1).await);
    assert!(
        until(WAIT, || !net.actions().is_empty()).await,
        "the action is kept in the spool"
    );
    let list = net.actions();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].rule, "busy");
    assert!(list[0].reply.contains("450 4.2.0"), "{:?}", list[0]);

    // While suspended, other mail on the path waits, unsent.
    send_each(&tern, &["ok@alpha.test"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mx.tries("ok@alpha.test"), 0, "nothing sent while suspended");
    assert!(mx.received().is_empty());

    // When the suspension ends, the mail that waited goes at once.
    skip(Duration::from_secs(121)).await;
    exactly(&[&mx], 1).await;
    tern.stop().await;
    mx.stop().await;
    let log = net.log();
    let suspension = log
        .iter()
        .find(|r| r["type"] == "suspension")
        .expect("logged");
    assert_eq!(suspension["rule"], "busy");
    assert!(
        suspension["target"]
            .as_str()
            .unwrap()
            .starts_with("path a -> ")
    );
    assert!(
        suspension["queue_id"]
            .as_str()
            .is_some_and(|q| !q.is_empty())
    );
    assert!(
        records(&log, "transient_failure", "ok@alpha.test").is_empty(),
        "waiting for a suspension is not an attempt: {log:#?}"
    );
    assert_eq!(records(&log, "delivery", "ok@alpha.test")[0]["attempts"], 1);
    assert_no_bounce(&log);
    net.stop().await;
}

#[tokio::test]
async fn a_high_priority_message_overtakes_a_bulk_backlog_on_its_path() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.delivery.priority_header = Some("X-Tern-Priority".into());
    cfg.listeners[0].priority = Some(tern::config::Priority::Bulk);
    let mut p = provider("alpha", ".alpha.test");
    p.per_path.message_rate = rate("1/m,burst=1");
    cfg.shaping.providers.push(p);
    let tern = Tern::start(cfg).await;
    // Three campaign messages (the listener's class), then a password reset.
    send_each(&tern, &["c1@alpha.test", "c2@alpha.test", "c3@alpha.test"]).await;
    exactly(&[&mx], 1).await; // the burst: c1
    let reset = b"X-Tern-Priority: high\r\nSubject: reset\r\n\r\nyour code\r\n";
    let r = submit(tern.addr, "app@shop.test", &["user@alpha.test"], reset).await;
    assert!(r.starts_with("250"), "{r}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 2..=4 {
        skip(Duration::from_secs(61)).await;
        exactly(&[&mx], n).await;
    }
    let order: Vec<String> = mx.received().iter().map(|m| m.rcpts[0].clone()).collect();
    assert_eq!(
        order,
        [
            "c1@alpha.test",
            "user@alpha.test",
            "c2@alpha.test",
            "c3@alpha.test"
        ]
    );
    let reset = &mx.received()[1];
    assert!(
        !common::net::text(&reset.data).contains("X-Tern-Priority"),
        "the header is removed"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_warming_source_sends_its_share_and_its_pool_takes_the_overflow() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let today = tern::clock::rfc3339(std::time::SystemTime::now())[..10].to_owned();
    let warming = |c: &mut Config| {
        let a = c.sources.iter_mut().find(|s| s.name == "a").unwrap();
        a.warmup = Some(tern::config::WarmupConfig {
            start: today.clone(),
            daily: vec![2, 1000],
            per_provider: true,
        });
    };
    // a (warming, 2 today) weighs ten times b: the overflow goes to b.
    let mut cfg = net.config();
    warming(&mut cfg);
    cfg.pools = vec![common::net::pool("default", &[("a", 10), ("b", 1)])];
    let tern = Tern::start(cfg).await;
    let to = [
        "m1@alpha.test",
        "m2@alpha.test",
        "m3@alpha.test",
        "m4@alpha.test",
        "m5@alpha.test",
    ];
    send_each(&tern, &to).await;
    exactly(&[&mx], 5).await;
    let from_a = mx
        .received()
        .iter()
        .filter(|m| m.peer.ip() == net.ip(20))
        .count();
    assert_eq!(from_a, 2, "the warming source sent its day's share");
    tern.stop().await;

    // Restarted with a pool of only the warming source: the day's share,
    // kept in the spool, is used; the rest waits for tomorrow.
    let mut cfg = net.config();
    warming(&mut cfg);
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["n1@alpha.test", "n2@alpha.test", "n3@alpha.test"]).await;
    exactly(&[&mx], 5).await;
    skip(Duration::from_secs(86_400)).await; // the next day (share: 1000)
    exactly(&[&mx], 8).await;
    tern.stop().await;
    let log = net.log();
    assert_no_bounce(&log);
    assert!(
        records(&log, "transient_failure", "n3@alpha.test").is_empty(),
        "waiting for the next day's share is not an attempt"
    );
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn two_tenants_take_turns_on_a_shared_path() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    let mut p = provider("alpha", ".alpha.test");
    p.per_path.message_rate = rate("1/m,burst=1");
    cfg.shaping.providers.push(p);
    // One listener per tenant.
    let mut second = cfg.listeners[0].clone();
    cfg.listeners[0].tenant = Some("big".into());
    second.tenant = Some("small".into());
    cfg.listeners.push(second);
    let (tern, addrs) = Tern::start_many(cfg).await;
    for i in 1..=4 {
        let body = format!("Subject: big {i}\r\n\r\ncampaign\r\n");
        let r = submit(
            addrs[0],
            "app@shop.test",
            &[&format!("big{i}@alpha.test")],
            body.as_bytes(),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    exactly(&[&mx], 1).await; // the burst: big1
    for i in 1..=2 {
        let body = format!("Subject: small {i}\r\n\r\nnewsletter\r\n");
        let r = submit(
            addrs[1],
            "app@shop.test",
            &[&format!("small{i}@alpha.test")],
            body.as_bytes(),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 2..=6 {
        skip(Duration::from_secs(61)).await;
        exactly(&[&mx], n).await;
    }
    let order: Vec<String> = mx
        .received()
        .iter()
        .map(|m| m.rcpts[0].split('@').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        ["big1", "big2", "small1", "big3", "small2", "big4"],
        "turns"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

/// The reply to MAIL FROM on a fresh session.
async fn mail_reply(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    for cmd in ["", "EHLO client.test\r\n", "MAIL FROM:<app@shop.test>\r\n"] {
        s.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        loop {
            line.clear();
            s.read_line(&mut line).await.unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
    }
    line
}

#[tokio::test]
async fn over_its_spool_budget_the_door_answers_4xx_and_reopens_as_the_backlog_drains() {
    let net = Net::new(ZONE).await;
    let held = SinkOptions {
        hold: true,
        ..SinkOptions::default()
    };
    let mx = net.sink_with(10, held).await;
    let mut cfg = net.config();
    cfg.queue.max_spool_size = tern::config::values::ByteSize(100);
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["first@alpha.test"]).await; // queued, held at the sink
    assert!(until(WAIT, || mx.connections() == 1).await);
    let refused = mail_reply(tern.addr).await;
    assert!(refused.starts_with("452 4.3.1"), "{refused}");
    mx.release();
    exactly(&[&mx], 1).await; // delivered: the backlog is gone
    let open = async {
        for _ in 0..100 {
            if mail_reply(tern.addr).await.starts_with("250") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(open.await, "the door reopens by itself");
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_push_back_slows_the_path_down_and_deliveries_bring_it_back() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    let mut p = provider("alpha", ".alpha.test");
    p.per_path.message_rate = rate("60/m,burst=1");
    cfg.shaping.providers.push(p);
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        text: Some("(?i)busy".into()),
        action: tern::config::RuleAction::SlowDown,
        floor: rate("6/m"),
        ..tern::config::RuleConfig::default()
    });
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["tempfail@alpha.test"]).await;
    assert!(until(WAIT, || mx.tries("tempfail@alpha.test") == 1).await);
    assert!(until(WAIT, || !net.actions().is_empty()).await);
    let list = net.actions();
    assert_eq!(list[0].rate.as_deref(), Some("30.0/m"), "halved: {list:?}");

    // Twelve messages: at the full 1/s they would take 12 one-second
    // steps; slowed, the first four steps carry fewer than four.
    let to: Vec<String> = (1..=12).map(|i| format!("ok{i}@alpha.test")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    send_each(&tern, &to).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = mx.received().len();
    for _ in 0..4 {
        skip(Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let in_four = mx.received().len() - before;
    assert!(
        (1..4).contains(&in_four),
        "{in_four} in four seconds at half rate"
    );

    // Ten deliveries give the rate back (a twentieth each from one half).
    for _ in 0..40 {
        if mx.received().len() >= 12 {
            break;
        }
        skip(Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exactly(&[&mx], 12).await;
    let whole = || net.actions().iter().all(|a| a.rate.is_none());
    assert!(until(WAIT, whole).await, "whole again: {:?}", net.actions());
    tern.stop().await;
    let log = net.log();
    let slow = log
        .iter()
        .find(|r| r["type"] == "slow_down")
        .expect("logged");
    assert_eq!(slow["rate"], "30.0/m");
    assert_no_bounce(&log);
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_bounce_rule_fails_a_temporary_reply_at_once() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let mut cfg = net.config();
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "disabled".into(),
        codes: vec![450],
        text: Some("(?i)busy".into()),
        action: tern::config::RuleAction::Bounce,
        ..tern::config::RuleConfig::default()
    });
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["tempfail@alpha.test"]).await;
    let bounced = || {
        std::fs::read_to_string(net.dir.path().join("deliveries.jsonl"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"bounce\"") && l.contains("tempfail@alpha.test"))
    };
    assert!(until(WAIT, bounced).await, "bounced on the first attempt");
    assert_eq!(mx.tries("tempfail@alpha.test"), 1);
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_tenant_total_holds_across_sites() {
    let net = Net::new(ZONE).await;
    let (alpha, sender) = (net.sink(10).await, net.sink(13).await);
    let mut cfg = net.config();
    cfg.tenants.push(tern::config::TenantConfig {
        name: "shop".into(),
        pool: None,
        ..Default::default()
    });
    cfg.listeners[0].tenant = Some("shop".into());
    cfg.shaping.tenants.push(tern::config::TenantShapingConfig {
        tenant: "shop".into(),
        message_rate: rate("1/m,burst=1"),
    });
    let tern = Tern::start(cfg).await;
    send_each(&tern, &["a@alpha.test", "b@sender.test", "c@alpha.test"]).await;
    one_per_minute(&[&alpha, &sender], 1, 3).await;
    tern.stop().await;
    alpha.stop().await;
    sender.stop().await;
    net.stop().await;
}
