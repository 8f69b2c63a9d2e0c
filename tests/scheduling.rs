//! Per-destination scheduling end to end: a destination that cannot send
//! (rate-limited with a backlog larger than `max_in_flight`, suspended,
//! dead, over a warming IP's share, or slow) never holds back another
//! destination's mail; tenants share a path by weight; a small tenant's
//! mail is not stuck behind another's campaign. Sinks record when each
//! message arrives (tokio's clock); time jumps with [`skip`] where a test
//! waits on a rate.

mod common;

use std::time::Duration;

use common::net::{Net, Tern, ZONE, records, skip, submit_batch, until};
use common::sink::{Sink, SinkOptions};
use tern::config::{Config, ProviderConfig};

/// The zone, plus dead.test (its MX answers nothing).
fn zone() -> String {
    format!("{ZONE}\ndead IN MX 10 dead.backup\n")
}

/// Backlogs bigger than this are the point.
const IN_FLIGHT: u32 = 20;

fn provider(name: &str, suffix: &str, rate: Option<&str>) -> ProviderConfig {
    let mut p = ProviderConfig {
        name: name.into(),
        mx_suffixes: vec![suffix.into()],
        ..ProviderConfig::default()
    };
    p.per_path.message_rate = rate.map(|r| r.parse().unwrap());
    p
}

fn config(net: &Net) -> Config {
    let mut c = net.config();
    c.delivery.max_in_flight = IN_FLIGHT;
    c
}

/// Transient failures logged so far.
fn deferrals(net: &Net) -> usize {
    let text = std::fs::read_to_string(net.dir.path().join("deliveries.jsonl")).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"transient_failure\""))
        .count()
}

/// Twenty messages to implicit.test (a sink of its own, no limit) while
/// a backlog waits elsewhere: all arrive, the last within a few seconds
/// of its submission. Returns that longest wait.
async fn others_arrive(tern: &Tern, other: &Sink) -> Duration {
    let t0 = tokio::time::Instant::now();
    submit_batch(tern.addr, 20, |i| format!("o{i}@implicit.test"), "").await;
    let got = other.wait_received(20, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 20, "the other destination's mail arrived");
    let longest = got.iter().map(|m| m.at - t0).max().unwrap();
    println!("the other destination's mail arrived within {longest:?}");
    assert!(
        longest < Duration::from_secs(5),
        "the other destination waited {longest:?}"
    );
    longest
}

async fn stop(tern: Tern, sinks: Vec<Sink>, net: Net) {
    tern.stop().await;
    for s in sinks {
        s.stop().await;
    }
    net.stop().await;
}

#[tokio::test]
async fn a_rate_limited_backlog_larger_than_max_in_flight_holds_back_no_one() {
    let net = Net::new(&zone()).await;
    let (alpha, other) = (net.sink(10).await, net.sink(11).await);
    let mut cfg = config(&net);
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", Some("60/m")));
    let tern = Tern::start(cfg).await;
    let t0 = tokio::time::Instant::now();
    submit_batch(tern.addr, 100, |i| format!("b{i}@alpha.test"), "").await;
    others_arrive(&tern, &other).await;
    let secs = t0.elapsed().as_secs() as usize;
    let sent = alpha.received().len();
    assert!(sent <= secs + 2, "{sent} in {secs} s at 60/m");
    assert_eq!(deferrals(&net), 0, "waiting for the rate is no attempt");
    stop(tern, vec![alpha, other], net).await;
}

#[tokio::test]
async fn a_suspended_site_holds_back_no_one_and_its_mail_is_not_tried() {
    let net = Net::new(&zone()).await;
    let (alpha, other) = (net.sink(10).await, net.sink(11).await);
    let mut cfg = config(&net);
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        scope: tern::config::RuleScope::Site,
        duration: Some(tern::config::values::Duration::from_secs(3600)),
        ..tern::config::RuleConfig::default()
    });
    let tern = Tern::start(cfg).await;
    // "450 mailbox busy" suspends the site for an hour.
    submit_batch(tern.addr, 1, |_| "tempfail@alpha.test".into(), "").await;
    assert!(until(Duration::from_secs(30), || deferrals(&net) == 1).await);
    submit_batch(tern.addr, 100, |i| format!("b{i}@alpha.test"), "").await;
    others_arrive(&tern, &other).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(alpha.received().len(), 0);
    assert_eq!(deferrals(&net), 1, "only the reply that suspended it");
    stop(tern, vec![alpha, other], net).await;
}

#[tokio::test]
async fn a_dead_site_holds_back_no_one_and_is_tried_only_until_it_pauses() {
    let net = Net::new(&zone()).await;
    let other = net.sink(11).await;
    let mut cfg = config(&net);
    cfg.delivery.connection_limit = 2;
    let tern = Tern::start(cfg).await;
    submit_batch(tern.addr, 100, |i| format!("b{i}@dead.test"), "").await;
    others_arrive(&tern, &other).await;
    assert!(until(Duration::from_secs(30), || deferrals(&net) >= 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tried = deferrals(&net);
    assert!(
        (3..=4).contains(&tried),
        "{tried} connection failures before the pause"
    );
    stop(tern, vec![other], net).await;
}

#[tokio::test]
async fn a_warming_ip_over_its_share_holds_back_no_one() {
    let net = Net::new(&zone()).await;
    let (alpha, other) = (net.sink(10).await, net.sink(11).await);
    let mut cfg = config(&net);
    let today = tern::clock::rfc3339(std::time::SystemTime::now())[..10].to_owned();
    let a = cfg.sources.iter_mut().find(|s| s.name == "a").unwrap();
    a.warmup = Some(tern::config::WarmupConfig {
        start: today,
        daily: vec![5],
        per_provider: true,
    });
    cfg.pools = vec![
        common::net::pool("default", &[("b", 1)]),
        common::net::pool("warm", &[("a", 1)]),
    ];
    cfg.delivery.pool_header = Some("X-Tern-Pool".into());
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", None));
    let tern = Tern::start(cfg).await;
    let warm = "X-Tern-Pool: warm\r\n";
    submit_batch(tern.addr, 50, |i| format!("w{i}@alpha.test"), warm).await;
    assert_eq!(
        alpha.wait_received(5, Duration::from_secs(30)).await.len(),
        5
    );
    others_arrive(&tern, &other).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(alpha.received().len(), 5, "the day's share");
    assert_eq!(deferrals(&net), 0, "the rest waits for tomorrow, untried");
    stop(tern, vec![alpha, other], net).await;
}

#[tokio::test]
async fn a_slow_receiver_holds_back_no_one() {
    let net = Net::new(&zone()).await;
    let slow = net
        .sink_with(
            15,
            SinkOptions {
                data_delay: Some(Duration::from_secs(10)),
                ..SinkOptions::default()
            },
        )
        .await;
    let other = net.sink(11).await;
    let tern = Tern::start(config(&net)).await;
    submit_batch(tern.addr, 60, |i| format!("s{i}@slow.test"), "").await;
    assert!(until(Duration::from_secs(10), || slow.connections() >= 1).await);
    others_arrive(&tern, &other).await;
    stop(tern, vec![slow, other], net).await;
}

/// Two listeners, one per tenant, with these weights.
fn two_tenants(net: &Net, weights: (u32, u32)) -> Config {
    let mut cfg = config(net);
    for (name, weight) in [("heavy", weights.0), ("light", weights.1)] {
        cfg.tenants.push(tern::config::TenantConfig {
            name: name.into(),
            weight,
            ..Default::default()
        });
    }
    let mut second = cfg.listeners[0].clone();
    cfg.listeners[0].tenant = Some("heavy".into());
    second.tenant = Some("light".into());
    cfg.listeners.push(second);
    cfg
}

#[tokio::test]
async fn tenants_share_a_rate_limited_path_by_weight() {
    let net = Net::new(&zone()).await;
    let alpha = net.sink(10).await;
    let mut cfg = two_tenants(&net, (3, 1));
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", Some("60/h,burst=1")));
    let (tern, addrs) = Tern::start_many(cfg).await;
    submit_batch(addrs[0], 60, |i| format!("heavy{i}@alpha.test"), "").await;
    submit_batch(addrs[1], 60, |i| format!("light{i}@alpha.test"), "").await;
    assert_eq!(
        alpha.wait_received(1, Duration::from_secs(30)).await.len(),
        1
    );
    // One send slot a minute: 40 slots with both backlogs waiting.
    for n in 2..=41 {
        skip(Duration::from_secs(61)).await;
        assert!(
            until(Duration::from_secs(10), || alpha.received().len() >= n).await,
            "slot {n}"
        );
    }
    let got = alpha.received();
    assert_eq!(got.len(), 41, "one per slot");
    let light = got[1..]
        .iter()
        .filter(|m| m.rcpts[0].starts_with("light"))
        .count();
    assert!(
        (9..=11).contains(&light),
        "weights 3:1 give the light tenant 10 of 40 slots, not {light}"
    );
    stop(tern, vec![alpha], net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_is_not_stuck_behind_a_big_campaign() {
    let net = Net::new(&zone()).await;
    let alpha = net.sink(10).await;
    let mut cfg = two_tenants(&net, (1, 1));
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", Some("6000/m")));
    let meta = tern::message::MessageMeta {
        tenant: Some("heavy".into()),
        ..Default::default()
    }
    .encode();
    let to = |_| "campaign@alpha.test".to_owned();
    common::fill_spool(&cfg, 100_000, to, &meta, queue::Timestamp::now()).await;
    let (tern, addrs) = Tern::start_many(cfg).await;
    assert!(until(Duration::from_secs(60), || alpha.received().len() >= 100).await);
    submit_batch(addrs[1], 100, |i| format!("light{i}@alpha.test"), "").await;
    let light = || {
        alpha
            .received()
            .iter()
            .filter(|m| m.rcpts[0].starts_with("light"))
            .count()
    };
    assert!(
        until(Duration::from_secs(60), || light() == 100).await,
        "only {} of the small tenant's 100 arrived",
        light()
    );
    let got = alpha.received();
    let last = got
        .iter()
        .rposition(|m| m.rcpts[0].starts_with("light"))
        .unwrap();
    let first = got
        .iter()
        .position(|m| m.rcpts[0].starts_with("light"))
        .unwrap();
    let campaign_meanwhile = got[first..=last]
        .iter()
        .filter(|m| m.rcpts[0].starts_with("campaign"))
        .count();
    assert!(
        campaign_meanwhile <= 150,
        "equal weights: the campaign took {campaign_meanwhile} slots while the small tenant's 100 went"
    );
    tern.stop().await;
    let log = net.log();
    assert!(records(&log, "transient_failure", "light0@alpha.test").is_empty());
    alpha.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_restart_rebuilds_the_scheduled_queues_and_keeps_to_the_rate() {
    let net = Net::new(&zone()).await;
    let alpha = net.sink(10).await;
    let mut cfg = config(&net);
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", Some("1/h,burst=1")));
    let tern = Tern::start(cfg.clone()).await;
    submit_batch(tern.addr, 3, |i| format!("r{i}@alpha.test"), "").await;
    assert_eq!(
        alpha.wait_received(1, Duration::from_secs(30)).await.len(),
        1
    );
    tern.stop().await;

    // The backlog is scheduled again from the spool; the rate's state is
    // unknown after the restart, so it starts as if it had just sent:
    // no fresh burst.
    let tern = Tern::start(cfg).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(alpha.received().len(), 1, "nothing faster than 1/h");
    for n in 2..=3 {
        skip(Duration::from_secs(3601)).await;
        assert!(until(Duration::from_secs(10), || alpha.received().len() == n).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alpha.received().len(), 3);
    assert_eq!(deferrals(&net), 0);
    stop(tern, vec![alpha], net).await;
}

#[tokio::test]
async fn a_reload_keeps_the_state_of_the_limits_it_does_not_change() {
    use common::admin::{admin, reload_with, start_from_file, wait_up};
    let net = Net::new(&zone()).await;
    let alpha = net.sink(10).await;
    let a = admin(&net);
    let mut cfg = config(&net);
    cfg.admin = a.clone();
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", Some("1/h,burst=1")));
    let file = net.dir.path().join("tern.toml");
    let tern = start_from_file(cfg.clone(), &file).await;
    wait_up(&a).await;
    submit_batch(tern.addr, 2, |i| format!("r{i}@alpha.test"), "").await;
    assert_eq!(
        alpha.wait_received(1, Duration::from_secs(30)).await.len(),
        1
    );
    // A reload that changes something else: alpha's path keeps what its
    // rate counted (a fresh limiter would send the second at once).
    cfg.shaping
        .providers
        .push(provider("beta", ".beta.test", Some("10/m")));
    reload_with(&a, &file, &cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(alpha.received().len(), 1, "still one an hour");
    skip(Duration::from_secs(3601)).await;
    assert!(until(Duration::from_secs(10), || alpha.received().len() == 2).await);
    stop(tern, vec![alpha], net).await;
}

#[tokio::test]
async fn a_slow_down_never_sends_faster_than_the_rate_before_it() {
    let net = Net::new(&zone()).await;
    let alpha = net.sink(10).await;
    let mut cfg = config(&net);
    cfg.shaping
        .providers
        .push(provider("alpha", ".alpha.test", Some("60/m,burst=10")));
    cfg.shaping.rules.push(tern::config::RuleConfig {
        name: "busy".into(),
        codes: vec![450],
        action: tern::config::RuleAction::SlowDown,
        floor: Some("6/m".parse().unwrap()),
        ..tern::config::RuleConfig::default()
    });
    let tern = Tern::start(cfg).await;
    // Nine of the burst of ten, then a push-back with the tenth.
    submit_batch(tern.addr, 9, |i| format!("a{i}@alpha.test"), "").await;
    assert_eq!(
        alpha.wait_received(9, Duration::from_secs(30)).await.len(),
        9
    );
    submit_batch(tern.addr, 1, |_| "tempfail@alpha.test".into(), "").await;
    assert!(
        until(Duration::from_secs(30), || alpha
            .tries("tempfail@alpha.test")
            == 1)
        .await
    );
    // The burst is spent: slowed down, the path must not start a fresh one.
    submit_batch(tern.addr, 10, |i| format!("b{i}@alpha.test"), "").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = alpha.received().len() - 9;
    assert!(after <= 1, "{after} sent at once right after the push-back");
    stop(tern, vec![alpha], net).await;
}
