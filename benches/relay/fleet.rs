//! The fleet simulation: N Tern nodes (`tern run` children, each with its
//! own spool) share one redis-server and relay to the sinks under one
//! provider limit (`--fleet-rate`, a total kept in Redis). For each N it
//! reports the rate the sinks saw after the burst against the limit, the
//! Redis round trips per message (the nodes' own counters), the CPU per
//! message of the nodes and of Redis, and checks that nothing was lost
//! or sent twice. Then the drain: a node with `--drain` messages queued
//! hands them to another, and the rate of the hand-over is reported.
//!
//! ```text
//! cargo bench --bench relay -- --fleet 1,2,4,8 --fleet-rate 2000 --fleet-secs 10 --drain 20000
//! ```

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::internet::{self, SinkMode};
use crate::tern::{Daemon, Setup};
use crate::{Args, inject, procstat};

#[allow(dead_code)]
#[path = "../../tests/common/redis.rs"]
mod redis_server;

/// What one fleet size measured.
struct Row {
    nodes: usize,
    messages: u64,
    seen_rate: f64,
    round_trips: f64,
    node_cpu_us: f64,
    redis_cpu_us: f64,
    /// The same fleet without [cluster], each node at limit / N.
    alone_cpu_us: f64,
}

/// Runs the simulation for each fleet size, then the drain.
pub fn run(a: &Args, sizes: &[usize]) {
    let rt = inject::runtime();
    let redis = rt.block_on(redis_server::Redis::start());
    let redis_pid = redis.pid().expect("redis-server runs");
    let mut rows = Vec::new();
    for &n in sizes {
        flush(&redis);
        let mut row = one(a, Some((&redis, redis_pid)), n);
        row.alone_cpu_us = one(a, None, n).node_cpu_us;
        rows.push(row);
    }
    println!(
        "\nfleet: provider limit {}/s (burst {}), shared through one redis-server; {} s of backlog; 1 recipient per message",
        a.fleet_rate, a.fleet_rate, a.fleet_secs
    );
    println!(
        "nodes  messages  rate at sinks  vs limit  Redis round trips/msg  node CPU/msg  alone CPU/msg  Redis CPU/msg  added by the cluster"
    );
    for r in &rows {
        let err = (r.seen_rate / a.fleet_rate as f64 - 1.0) * 100.0;
        let added = r.node_cpu_us - r.alone_cpu_us + r.redis_cpu_us;
        println!(
            "{:>5}  {:>8}  {:>11.1}/s  {:>+7.2}%  {:>21.3}  {:>9.1} us  {:>10.1} us  {:>10.2} us  {:>+17.1} us",
            r.nodes,
            r.messages,
            r.seen_rate,
            err,
            r.round_trips,
            r.node_cpu_us,
            r.alone_cpu_us,
            r.redis_cpu_us,
            added
        );
    }
    println!(
        "(alone: the same nodes without [cluster], each with a local limit of limit / nodes; added = node CPU - alone CPU + Redis CPU, per message)"
    );
    if a.drain > 0 {
        flush(&redis);
        drain(a, &redis);
    }
}

fn flush(redis: &redis_server::Redis) {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut c = client.get_connection().expect("connect to redis-server");
    redis::cmd("FLUSHALL")
        .query::<()>(&mut c)
        .expect("FLUSHALL");
}

/// A node of the fleet: [cluster] on `redis` (if any), its admin API on
/// a free port (for its metrics), the provider limit.
fn node_config(c: &mut tern::config::Config, redis: Option<&str>, i: usize, rate: u64) {
    use tern::config::values::Duration as Span;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    c.admin.enabled = true;
    c.admin.address = probe.local_addr().unwrap();
    c.cluster = redis.map(|redis| tern::config::ClusterConfig {
        redis: redis.into(),
        node: Some(format!("node{i}")),
        heartbeat: Span::from_millis(500),
        ..Default::default()
    });
    let mut p = tern::config::ProviderConfig {
        name: "bench".into(),
        mx_suffixes: vec![".bench".into()],
        ..Default::default()
    };
    p.total.message_rate = Some(format!("{rate}/s").parse().unwrap());
    c.shaping.providers = vec![p];
    c.queue.max_messages = 0;
}

fn one(a: &Args, redis: Option<(&redis_server::Redis, u32)>, n: usize) -> Row {
    let total = a.fleet_rate * (a.fleet_secs + 1);
    let (dns, sink_port, tally) = internet::start(
        internet::zone(a.domains, a.hosts),
        0,
        a.hosts,
        0,
        SinkMode::Accept,
        (total as usize, 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let daemons: Vec<Daemon> = (0..n)
        .map(|i| {
            let d = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let setup = Setup::plain(&d, dns, sink_port);
            Daemon::start_with(&setup, |c| match redis {
                Some((r, _)) => node_config(c, Some(&r.url()), i, a.fleet_rate),
                None => node_config(c, None, i, a.fleet_rate / n as u64),
            })
        })
        .collect();
    let cpu0: f64 = daemons.iter().map(|d| procstat::process_cpu(d.pid())).sum();
    let redis_cpu = || redis.map_or(0.0, |(_, pid)| procstat::process_cpu(pid));
    let redis0 = redis_cpu();
    let per = total / n as u64;
    let rt = inject::runtime();
    let loads: Vec<_> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let load = inject::Load {
                target: d.addr,
                messages: per,
                size: a.size,
                domains: a.domains,
                recipients: 1,
                first: i as u64 * per,
                rate: None,
            };
            rt.spawn(inject::run(load, (a.clients / n).max(2)))
        })
        .collect();
    let mut accepted = 0;
    for l in loads {
        accepted += rt.block_on(l).unwrap().accepted.len() as u64;
    }
    crate::wait_delivered(&tally, accepted, None);
    let cpu1: f64 = daemons.iter().map(|d| procstat::process_cpu(d.pid())).sum();
    let redis1 = redis_cpu();
    let trips: f64 = daemons.iter().map(round_trips).sum();
    for d in daemons {
        d.stop();
    }
    let lost = (0..accepted as usize)
        .filter(|id| tally.seen[*id].load(Ordering::Relaxed) == 0)
        .count();
    let twice = tally
        .seen
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) > 1)
        .count();
    assert_eq!((lost, twice), (0, 0), "FAILED: messages lost or sent twice");
    Row {
        nodes: n,
        messages: accepted,
        seen_rate: steady_rate(&tally, accepted as usize, a.fleet_rate as usize),
        round_trips: trips / accepted as f64,
        node_cpu_us: (cpu1 - cpu0) * 1e6 / accepted as f64,
        redis_cpu_us: (redis1 - redis0) * 1e6 / accepted as f64,
        alone_cpu_us: 0.0,
    }
}

/// The rate the sinks saw, as the limit counts it: a limit of R/s with a
/// burst of B lets at most B + R * T messages arrive in T seconds, so
/// (arrivals - B) / (last arrival - first arrival) is at most R when the
/// limit holds, and near R when mail flowed at the limit.
fn steady_rate(tally: &internet::Tally, n: usize, burst: usize) -> f64 {
    let at: Vec<u64> = (0..n)
        .map(|id| tally.arrived_ms[id].load(Ordering::Relaxed))
        .collect();
    let (Some(first), Some(last)) = (at.iter().min(), at.iter().max()) else {
        return 0.0;
    };
    let span = (last - first) as f64 / 1000.0;
    n.saturating_sub(burst) as f64 / span.max(1e-3)
}

/// A node's Redis round trips so far, from its metrics.
fn round_trips(d: &Daemon) -> f64 {
    let admin = &d.config().admin;
    let text = tern::admin::client::get_text(admin, "/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("tern_cluster_redis_round_trips_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A node with `--drain` messages queued (its site refuses connections)
/// hands them to another; reports messages moved per second.
fn drain(a: &Args, redis: &redis_server::Redis) {
    let total = a.drain;
    let (dns, sink_port, tally) = internet::start(
        internet::zone(a.domains, a.hosts),
        0,
        a.hosts,
        0,
        SinkMode::Accept,
        (total as usize, 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize, port: u16| {
        let d = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let setup = Setup::plain(&d, dns, port);
        Daemon::start_with(&setup, |c| {
            node_config(c, Some(&redis.url()), i, 1_000_000);
            c.cluster.as_mut().unwrap().drain_batch = 500;
            c.delivery.retry_first = tern::config::values::Duration::from_secs(1);
            // Its own source name: the pauses of node 0's dead paths
            // (shared by the fleet) are not node 1's.
            c.sources[0].name = format!("ip-of-node{i}");
            c.pools[0].sources[0].source = format!("ip-of-node{i}");
        })
    };
    // Node 0's mail cannot leave: its sinks' port is closed.
    let closed = std::net::TcpListener::bind("127.0.1.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let from = start(0, closed);
    let to = start(1, sink_port);
    let rt = inject::runtime();
    let load = inject::Load {
        target: from.addr,
        messages: total,
        size: a.size,
        domains: a.domains,
        recipients: 1,
        first: 0,
        rate: None,
    };
    let accepted = rt.block_on(inject::run(load, a.clients)).accepted.len() as u64;
    let admin = from.config().admin.clone();
    let t = Instant::now();
    let req = tern::admin::types::DrainRequest {
        to: vec!["node1".into()],
    };
    let started: Result<tern::cluster::drain::Progress, _> =
        tern::admin::client::send(&admin, "POST", "/v1/drain", &req);
    started.expect("drain started");
    let moved = loop {
        let p: tern::cluster::drain::Progress =
            tern::admin::client::get(&admin, "/v1/drain").expect("drain progress");
        if p.state == "done" {
            break p.moved;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "FAILED: the drain did not end: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    crate::wait_delivered(&tally, accepted, None);
    from.stop();
    to.stop();
    let twice = tally
        .seen
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) > 1)
        .count();
    assert_eq!(twice, 0, "FAILED: messages sent twice after the drain");
    println!(
        "\ndrain: {accepted} queued messages of {} bytes handed from node0 to node1: {moved} moved in {:.2} s = {:.0} messages/s; all {accepted} then delivered by node1, none twice",
        a.size,
        took.as_secs_f64(),
        moved as f64 / took.as_secs_f64()
    );
}
