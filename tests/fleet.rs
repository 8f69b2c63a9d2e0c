//! The fleet end to end: several Tern nodes (in this process, each with
//! its own spool) share a real redis-server started here. They share a
//! provider's rate and connection limit (the sink sees the limit, not N
//! times it), a push-back rule fired on one node holds the provider on
//! the others within a second, and when Redis dies mid-run each node
//! keeps delivering at its share, without a deferral or a spent attempt,
//! then shares again once Redis is back.

mod common;

use std::time::Duration;

use common::net::{Net, Tern, ZONE, submit_batch};
use common::redis::Redis;
use common::sink::{Sink, SinkOptions};
use tern::config::values::Duration as Span;
use tern::config::{ClusterConfig, Config, ProviderConfig};

/// Node `i` of the fleet on `net`: its own spool and log, the fleet's
/// Redis, quick heartbeats.
fn node(net: &Net, redis: &Redis, i: usize) -> Config {
    let mut c = net.config();
    let dir = net.dir.path().join(format!("node{i}"));
    c.queue.path = dir.join("spool");
    c.log.deliveries = dir.join("deliveries.jsonl");
    c.cluster = Some(ClusterConfig {
        redis: redis.url(),
        node: Some(format!("node{i}")),
        heartbeat: Span::from_millis(200),
        node_timeout: Span::from_secs(2),
        lease_ttl: Span::from_secs(3),
        ..ClusterConfig::default()
    });
    c
}

/// The provider of alpha.test's MX, with fleet-wide totals.
fn alpha(rate: &str, connections: u32) -> ProviderConfig {
    let mut p = ProviderConfig {
        name: "alpha".into(),
        mx_suffixes: vec!["alpha.test".into()],
        ..ProviderConfig::default()
    };
    p.total.message_rate = Some(rate.parse().unwrap());
    p.total.connection_limit = Some(connections);
    p
}

/// Messages that arrived within `window` of the first.
fn within(sink: &Sink, window: Duration) -> usize {
    let got = sink.received();
    let Some(first) = got.iter().map(|m| m.at).min() else {
        return 0;
    };
    got.iter().filter(|m| m.at - first <= window).count()
}

/// `n` nodes, 40 messages each to alpha.test, whose provider allows 20
/// messages a second (a burst of 20) and 2 connections in all.
async fn nodes_share_a_provider_limit(n: usize) {
    let redis = Redis::start().await;
    let net = Net::new(ZONE).await;
    let opts = SinkOptions {
        data_delay: Some(Duration::from_millis(30)),
        ..SinkOptions::default()
    };
    let mx = net.sink_with(10, opts).await;
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut c = node(&net, &redis, i);
        c.shaping.providers.push(alpha("20/s", 2));
        nodes.push(Tern::start(c).await);
    }
    for (i, t) in nodes.iter().enumerate() {
        submit_batch(t.addr, 40, |k| format!("n{i}m{k}@alpha.test"), "").await;
    }
    let total = 40 * n;
    let got = mx.wait_received(total, Duration::from_secs(30)).await;
    assert_eq!(got.len(), total, "every message arrived");
    // In the first 2 s: the burst (20) and 2 s at 20/s, not n times that;
    // the rest at 20/s: all of it takes (40n - 20) / 20 s, give or take.
    let early = within(&mx, Duration::from_secs(2));
    let first = got.iter().map(|m| m.at).min().unwrap();
    let span = got.iter().map(|m| m.at).max().unwrap() - first;
    let ideal = Duration::from_millis(50 * (total as u64 - 20));
    if std::env::var("FLEET_TRACE").is_ok() {
        let mut rows: Vec<_> = got
            .iter()
            .map(|m| ((m.at - first).as_millis(), m.rcpts[0].clone()))
            .collect();
        rows.sort();
        for r in rows {
            println!("{:>6} {}", r.0, r.1);
        }
    }
    println!(
        "{n} nodes: {early} messages in the first 2 s, all {total} in {span:?} (at the limit: {ideal:?}); at most {} connections at once",
        mx.max_open()
    );
    assert!(
        early <= 20 + 40 + 3,
        "{early} messages in 2 s: the limit is 60"
    );
    assert!(
        span >= ideal.mul_f64(0.95),
        "{span:?}: faster than the limit"
    );
    assert!(
        span <= ideal + Duration::from_secs(3),
        "{span:?}: mail flows near the limit"
    );
    assert!(
        mx.max_open() <= 2,
        "{} connections at once: the limit is 2",
        mx.max_open()
    );
    for t in nodes {
        t.stop().await;
    }
    mx.stop().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_provider_rate_and_connection_limit() {
    nodes_share_a_provider_limit(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_a_provider_rate_and_connection_limit() {
    nodes_share_a_provider_limit(3).await;
}
