//! Egress through real proxies started by the tests: `microsocks`
//! (SOCKS5, with and without a username and password) and `haproxy`
//! (PROXY protocol v2, `usesrc clientip`), each sending from an address of
//! the test's network, so the sink sees the public address the source
//! names. Also: what a proxy that is down, refuses or hangs does to the
//! mail (nothing bounces, the pool's other sources take it), a weighted
//! pool mixing a local source and proxied ones, and a reload that moves a
//! source to another proxy.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::admin::{admin, call, reload_with, start_from_file, wait_up};
use common::net::{Net, Tern, WAIT, ZONE, pool, records, submit};
use common::proxy::{Proxy, Silent, closed_port};
use common::sink::{SinkOptions, StartTls};
use tern::config::SourceConfig;

fn source(name: &str, address: IpAddr, proxy: Option<String>) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        address: Some(address),
        ehlo: Some(format!("{name}.tern.test")),
        proxy: proxy.map(|p| p.parse().unwrap()),
        ..SourceConfig::default()
    }
}

fn tls_sink() -> SinkOptions {
    SinkOptions {
        starttls: Some(StartTls::Working(common::sink::acceptor())),
        ..SinkOptions::default()
    }
}

async fn get_text(a: &tern::config::AdminConfig, path: &'static str) -> String {
    let a = a.clone();
    call(move || tern::admin::client::get_text(&a, path))
        .await
        .unwrap()
}

async fn sources(a: &tern::config::AdminConfig) -> Vec<tern::views::SourceRow> {
    let a = a.clone();
    call(move || tern::admin::client::get(&a, "/v1/sources"))
        .await
        .unwrap()
}

async fn send_pool(tern: &Tern, pool: &str, to: &str) {
    let body = format!("X-Tern-Pool: {pool}\r\nSubject: via {pool}\r\n\r\nhello\r\n");
    let r = submit(tern.addr, "app@shop.test", &[to], body.as_bytes()).await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test]
async fn socks5_sends_from_the_proxys_address_with_and_without_a_password() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, tls_sink()).await;
    let open = Proxy::socks5(net.ip(30), None);
    let locked = Proxy::socks5(net.ip(31), Some(("tern", "s3cret:@x")));
    let moved = Proxy::socks5(net.ip(32), None);
    let locked_url = format!("socks5://tern:s3cret%3A%40x@{}", locked.addr);
    let a = admin(&net);
    let mut cfg = net.config();
    cfg.admin = a.clone();
    cfg.sources
        .push(source("p1", net.ip(30), Some(open.url("socks5"))));
    cfg.sources.push(source("p2", net.ip(31), Some(locked_url)));
    cfg.pools.push(pool("one", &[("p1", 1)]));
    cfg.pools.push(pool("two", &[("p2", 1)]));
    cfg.delivery.pool_header = Some("X-Tern-Pool".into());
    let file = net.dir.path().join("tern.toml");
    let tern = start_from_file(cfg.clone(), &file).await;
    wait_up(&a).await;
    send_pool(&tern, "one", "one@alpha.test").await;
    send_pool(&tern, "two", "two@alpha.test").await;
    // The first MX of backup.test does not answer: the proxy says so, and
    // the next host is tried through it (the source is not to blame).
    send_pool(&tern, "one", "three@backup.test").await;
    let got = mx.wait_received(3, WAIT).await;
    assert_eq!(got.len(), 3);
    for m in &got {
        let (ip, ehlo) = match m.rcpts[0].as_str() {
            "two@alpha.test" => (net.ip(31), "EHLO p2.tern.test"),
            _ => (net.ip(30), "EHLO p1.tern.test"),
        };
        assert_eq!(
            m.peer.ip(),
            ip,
            "{:?} left from the proxy's address",
            m.rcpts
        );
        assert_eq!(m.commands[0], ehlo);
        assert!(m.tls, "STARTTLS through the proxy");
    }
    let rows = sources(&a).await;
    let p1 = rows.iter().find(|r| r.name == "p1").unwrap();
    assert_eq!(p1.address.as_deref(), Some(&*net.ip(30).to_string()));
    assert_eq!(p1.proxy.as_deref(), Some(&*open.url("socks5")));
    assert!(p1.usable && p1.shared, "{p1:?}");
    let metrics = get_text(&a, "/metrics").await;
    let info = format!(
        "tern_source_info{{source=\"p1\",address=\"{}\",proxy=\"{}\"}} 1",
        net.ip(30),
        open.url("socks5")
    );
    assert!(metrics.contains(&info), "{metrics}");
    assert!(
        metrics
            .contains("tern_source_proxy_failures_total{source=\"p1\",reason=\"destination\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tern_source_usable{source=\"p1\"} 1"));

    // A reload moves p1 to another IP behind another proxy.
    let p1 = cfg.sources.iter_mut().find(|s| s.name == "p1").unwrap();
    *p1 = source("p1", net.ip(32), Some(moved.url("socks5")));
    reload_with(&a, &file, &cfg).await.unwrap();
    send_pool(&tern, "one", "four@alpha.test").await;
    let got = mx.wait_received(4, WAIT).await;
    let four = got
        .iter()
        .find(|m| m.rcpts[0] == "four@alpha.test")
        .unwrap();
    assert_eq!(four.peer.ip(), net.ip(32), "the reloaded proxy");
    let api = serde_json::to_string(&sources(&a).await).unwrap() + &get_text(&a, "/metrics").await;
    tern.stop().await;

    let log = net.log();
    let d = records(&log, "delivery", "two@alpha.test");
    assert_eq!(d[0]["source"], "p2");
    assert_eq!(d[0]["source_ip"], net.ip(31).to_string());
    assert_eq!(d[0]["proxy"], format!("socks5://tern@{}", locked.addr));
    let d = records(&log, "delivery", "three@backup.test");
    assert_eq!(
        (d[0]["remote_host"].as_str(), d[0]["attempts"].as_u64()),
        (Some("live.backup.test"), Some(1))
    );
    let d = records(&log, "delivery", "four@alpha.test");
    assert_eq!(d[0]["source_ip"], net.ip(32).to_string());
    let text = std::fs::read_to_string(net.dir.path().join("deliveries.jsonl")).unwrap();
    for place in [&text, &api] {
        assert!(!place.contains("s3cret"), "the proxy password leaks");
    }
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn haproxy_sends_from_the_address_in_the_proxy_header() {
    let net = Net::new(ZONE).await;
    let mx = net.sink_with(10, tls_sink()).await;
    let hap = Proxy::haproxy();
    let mut cfg = net.config();
    cfg.sources
        .push(source("h", net.ip(33), Some(hap.url("haproxy"))));
    cfg.pools = vec![pool("default", &[("h", 1)])];
    let tern = Tern::start(cfg).await;
    for to in ["one@alpha.test", "two@backup.test"] {
        let r = submit(
            tern.addr,
            "app@shop.test",
            &[to],
            b"Subject: h\r\n\r\nhi\r\n",
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    let got = mx.wait_received(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for m in &got {
        assert_eq!(m.peer.ip(), net.ip(33), "HAProxy bound the header's source");
        assert_eq!(m.commands[0], "EHLO h.tern.test");
        assert!(m.tls, "STARTTLS through HAProxy");
    }
    tern.stop().await;
    let log = net.log();
    let d = records(&log, "delivery", "two@backup.test");
    assert_eq!(d[0]["proxy"], hap.url("haproxy"));
    assert_eq!(d[0]["remote_host"], "live.backup.test");
    mx.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_proxy_down_refusing_or_silent_rests_its_source_and_nothing_bounces() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let locked = Proxy::socks5(net.ip(35), Some(("tern", "right")));
    let silent = Silent::start().await;
    let a = admin(&net);
    let mut cfg = net.config();
    cfg.admin = a.clone();
    cfg.delivery.timeouts.connect = "1s".parse().unwrap();
    let down = format!("socks5://{}", closed_port());
    cfg.sources
        .push(source("down", net.ip(34), Some(down.clone())));
    let wrong = format!("socks5://tern:wrong@{}", locked.addr);
    cfg.sources
        .push(source("refusing", net.ip(35), Some(wrong)));
    let hung = format!("socks5://{}", silent.addr);
    cfg.sources.push(source("silent", net.ip(36), Some(hung)));
    cfg.pools = vec![
        pool(
            "default",
            &[("down", 1), ("refusing", 1), ("silent", 1), ("a", 1)],
        ),
        pool("stuck", &[("down", 1)]),
    ];
    cfg.delivery.pool_header = Some("X-Tern-Pool".into());
    let tern = Tern::start(cfg).await;
    wait_up(&a).await;
    send_pool(&tern, "stuck", "stuck@alpha.test").await;
    for i in 0..20 {
        send_pool(&tern, "default", &format!("r{i}@alpha.test")).await;
    }
    let got = mx.wait_received(20, WAIT).await;
    assert_eq!(got.len(), 20);
    assert!(
        got.iter().all(|m| m.peer.ip() == net.ip(20)),
        "all from the local source"
    );
    let rows = sources(&a).await;
    for (name, why) in [
        ("down", "cannot be reached"),
        ("refusing", "username or password was refused"),
        ("silent", "did not answer in time"),
    ] {
        let r = rows.iter().find(|r| r.name == name).unwrap();
        assert!(!r.usable, "{r:?}");
        assert!(r.held.as_deref().unwrap_or("").contains(why), "{r:?}");
    }
    // The stuck pool's mail waits for its proxy, saying why; not tried.
    let a2 = a.clone();
    let dests: Vec<tern::views::DestRow> =
        call(move || tern::admin::client::get(&a2, "/v1/destinations"))
            .await
            .unwrap();
    let stuck = dests
        .iter()
        .find(|d| d.pool == "stuck")
        .expect("the stuck pool waits");
    assert!(
        stuck.held.as_deref().unwrap_or("").contains(&down),
        "{stuck:?}"
    );
    let metrics = get_text(&a, "/metrics").await;
    for (source, reason) in [
        ("down", "unreachable"),
        ("refusing", "refused"),
        ("silent", "slow"),
    ] {
        let series =
            format!("tern_source_proxy_failures_total{{source=\"{source}\",reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series}\n{metrics}"));
        assert!(count >= 1, "{series}{count}");
        assert!(metrics.contains(&format!("tern_source_usable{{source=\"{source}\"}} 0")));
    }
    tern.stop().await;
    let log = net.log();
    assert!(
        log.iter()
            .all(|r| r["type"] == "reception" || r["type"] == "delivery"),
        "nothing deferred or bounced: {log:#?}"
    );
    assert!(records(&log, "delivery", "r0@alpha.test")[0]["attempts"] == 1);
    assert!(
        net.spool().iter().any(|(r, _)| r == "stuck@alpha.test"),
        "the stuck message is kept"
    );
    mx.stop().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_a_local_and_two_proxied_sources_splits_by_weight() {
    let net = Net::new(ZONE).await;
    let mx = net.sink(10).await;
    let socks = Proxy::socks5(net.ip(30), None);
    let hap = Proxy::haproxy();
    let mut cfg = net.config();
    cfg.sources
        .push(source("s", net.ip(30), Some(socks.url("socks5"))));
    cfg.sources
        .push(source("h", net.ip(33), Some(hap.url("haproxy"))));
    cfg.pools = vec![pool("default", &[("a", 2), ("s", 1), ("h", 1)])];
    let tern = Tern::start(cfg).await;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..4 {
        let addr = tern.addr;
        clients.spawn(async move {
            for i in 0..50 {
                let body = format!("Subject: {c}-{i}\r\n\r\nmessage {c}-{i}\r\n");
                let r = submit(addr, "app@shop.test", &["bulk@alpha.test"], body.as_bytes()).await;
                assert!(r.starts_with("250"), "{r}");
            }
        });
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    let got = mx.wait_received(200, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 200);
    let from = |last| got.iter().filter(|m| m.peer.ip() == net.ip(last)).count();
    let (a, s, h) = (from(20), from(30), from(33));
    assert_eq!(a + s + h, 200);
    assert!(
        (80..=120).contains(&a),
        "weight 2 of 4 gives about 100 from a, not {a}"
    );
    assert!(
        (35..=65).contains(&s) && (35..=65).contains(&h),
        "about 50 each: {s}, {h}"
    );
    tern.stop().await;
    mx.stop().await;
    net.stop().await;
}
