//! A fleet on one test's network: node configs sharing a redis-server,
//! and the provider of alpha.test with fleet-wide limits.

use std::time::Duration;

use super::net::Net;
use super::redis::Redis;
use super::sink::Sink;
use tern::config::values::Duration as Span;
use tern::config::{ClusterConfig, Config, ProviderConfig};

/// Node `i` of the fleet on `net`: its own spool and log, the fleet's
/// Redis, quick heartbeats.
pub fn node(net: &Net, redis: &Redis, i: usize) -> Config {
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
pub fn alpha(rate: &str, connections: u32) -> ProviderConfig {
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
pub fn within(sink: &Sink, window: Duration) -> usize {
    let got = sink.received();
    let Some(first) = got.iter().map(|m| m.at).min() else {
        return 0;
    };
    got.iter().filter(|m| m.at - first <= window).count()
}

/// The shaping actions node `i` keeps in its spool now.
pub fn actions(net: &Net, i: usize) -> Vec<tern::shaping::rules::Action> {
    let spool = net.dir.path().join(format!("node{i}")).join("spool");
    queue::SpoolSnapshot::read(&spool)
        .ok()
        .and_then(|(s, _)| s.state(tern::state::ACTIONS))
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

/// The records of node `i`'s delivery log.
pub fn log(net: &Net, i: usize) -> Vec<serde_json::Value> {
    let file = net
        .dir
        .path()
        .join(format!("node{i}"))
        .join("deliveries.jsonl");
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A command to the test's Redis.
pub async fn redis_cmd<T: redis::FromRedisValue>(redis: &Redis, cmd: &mut redis::Cmd) -> Option<T> {
    let client = redis::Client::open(redis.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}
