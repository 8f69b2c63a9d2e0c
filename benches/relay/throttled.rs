//! The burst with a throttled provider: the same 12x injection, run twice
//! on fresh daemons and sinks. First with every path at `--path-rate`;
//! then with one provider (the MX hosts of half the domains, so half the
//! traffic) limited to a tenth of its share of the peak, whose backlog
//! outgrows `max_in_flight`. The question is what the throttled backlog
//! costs everyone else: the unthrottled destinations' delivery latency
//! (accepted to arrived at the sink) should be the same in both runs.
//! After the injection the throttle is lifted by a reload (SIGHUP), so
//! the throttled backlog drains and every accepted message is checked.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::burst::{Door, Stage, drain, inject, phases};
use crate::tern::Daemon;
use crate::{Args, procstat};

/// The MX hosts of the throttled provider (of the 4 sinks).
const THROTTLED_HOSTS: [usize; 2] = [0, 1];

/// What one run measured.
struct Run {
    accepted: u64,
    unthrottled_ms: Vec<u64>,
    throttled_backlog: u64,
    peak_rss: u64,
    lost: usize,
    drain: Duration,
}

fn throttled(id: usize, domains: usize, hosts: usize) -> bool {
    THROTTLED_HOSTS.contains(&((id % domains) % hosts))
}

/// Runs both variants and prints them side by side.
pub fn run(a: &Args, base: u64) {
    assert!(a.hosts >= 4, "--throttle needs 4 sinks or more");
    let phases = phases(base, 12, a.burst_secs).to_vec();
    let total: u64 = phases.iter().map(|(s, r)| s * r).sum();
    // Half the peak goes to the throttled provider; it gets a tenth of
    // that, over its paths.
    let share = base * 12 / 2;
    let per_path = (share / 10 / THROTTLED_HOSTS.len() as u64).max(1);
    let plain = one(a, &phases, total, None);
    let slowed = one(a, &phases, total, Some(per_path));
    println!(
        "\nthrottled burst: phases {phases:?} (seconds, messages/s); {} domains on {} sinks (sinks accept {}/s in all, 1 recipient in 20 deferred); per-path limit {}/s; max_in_flight {}",
        a.domains, a.hosts, a.sink_rate, a.path_rate, IN_FLIGHT
    );
    println!(
        "throttled provider: the MX hosts of half the domains, {per_path}/s per path ({} in all, a tenth of its {share}/s share of the peak)",
        per_path * THROTTLED_HOSTS.len() as u64
    );
    println!("                         no throttle   throttled provider");
    let row = |name: &str, f: &dyn Fn(&Run) -> String| {
        println!("{name:<24} {:>12}   {:>12}", f(&plain), f(&slowed));
    };
    row("accepted", &|r| r.accepted.to_string());
    row("unthrottled p50 (ms)", &|r| {
        pct(&r.unthrottled_ms, 50).to_string()
    });
    row("unthrottled p90 (ms)", &|r| {
        pct(&r.unthrottled_ms, 90).to_string()
    });
    row("unthrottled p99 (ms)", &|r| {
        pct(&r.unthrottled_ms, 99).to_string()
    });
    row("unthrottled max (ms)", &|r| {
        pct(&r.unthrottled_ms, 100).to_string()
    });
    row("throttled backlog", &|r| r.throttled_backlog.to_string());
    row("Tern peak RSS (MB)", &|r| (r.peak_rss >> 20).to_string());
    row("drain after (s)", &|r| {
        format!("{:.1}", r.drain.as_secs_f64())
    });
    row("lost", &|r| r.lost.to_string());
    println!(
        "(one recipient in 20 is deferred by the sinks and retried 5 s later: the p99 and max are those retries)"
    );
    assert_eq!(
        plain.lost + slowed.lost,
        0,
        "FAILED: accepted messages were lost"
    );
}

/// Sends in flight at once in these runs: far below the throttled backlog.
const IN_FLIGHT: u32 = 2_000;

fn pct(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) * p / 100).min(v.len() - 1)]
}

/// One run: fresh sinks, a fresh daemon, the injection, then the throttle
/// lifted and the rest drained.
fn one(a: &Args, phases: &[(u64, u64)], total: u64, throttle: Option<u64>) -> Run {
    let stage = Stage::new(a, total);
    let tally = &stage.tally;
    let shape = |c: &mut tern::config::Config, throttle: Option<u64>| {
        use tern::config::values::Duration as Span;
        let mut p = tern::config::ProviderConfig {
            name: "bench".into(),
            mx_suffixes: vec![".bench".into()],
            ..Default::default()
        };
        p.per_path.message_rate = Some(format!("{}/s,burst=10", a.path_rate).parse().unwrap());
        c.shaping.providers = vec![p];
        if let Some(rate) = throttle {
            let mut t = tern::config::ProviderConfig {
                name: "throttled".into(),
                mx_suffixes: THROTTLED_HOSTS
                    .iter()
                    .map(|k| format!(".mx{k}.bench"))
                    .collect(),
                ..Default::default()
            };
            t.per_path.message_rate = Some(format!("{rate}/s").parse().unwrap());
            c.shaping.providers.push(t);
        }
        c.queue.max_messages = 0;
        c.delivery.max_in_flight = IN_FLIGHT;
        c.delivery.retry_first = Span::from_secs(5);
        c.delivery.retry_max = Span::from_secs(10);
    };
    let daemon = Daemon::start_with(&stage.setup(), |c| shape(c, throttle));
    let rt = crate::inject::runtime();
    let door = Arc::new(Door::timed(total as usize, tally.started));
    let load = rt.spawn(inject(
        daemon.addr,
        phases.to_vec(),
        door.clone(),
        a.domains,
    ));
    rt.block_on(load).unwrap();
    let accepted = door.accepted.load(Ordering::Relaxed);
    let arrived = |id: usize| tally.arrived_ms[id].load(Ordering::Relaxed) > 0;
    let throttled_backlog = (0..total as usize)
        .filter(|id| throttled(*id, a.domains, a.hosts))
        .filter(|id| door.accepted_ms[*id].load(Ordering::Relaxed) > 0 && !arrived(*id))
        .count() as u64;
    // Lift the throttle: a reload.
    let lifted = Instant::now();
    if throttle.is_some() {
        daemon.rewrite(|c| shape(c, None));
        daemon.reload();
    }
    let start = Instant::now() - tally.started.elapsed();
    drain(tally, &door, start);
    let drained = lifted.elapsed();
    let peak_rss = procstat::peak_rss(daemon.pid());
    daemon.stop();
    let mut unthrottled_ms: Vec<u64> = (0..total as usize)
        .filter(|id| !throttled(*id, a.domains, a.hosts))
        .filter_map(|id| {
            let acc = door.accepted_ms[id].load(Ordering::Relaxed);
            let arr = tally.arrived_ms[id].load(Ordering::Relaxed);
            (acc > 0 && arr > 0).then(|| arr.saturating_sub(acc))
        })
        .collect();
    unthrottled_ms.sort_unstable();
    let lost = tally
        .seen
        .iter()
        .zip(&door.accepted_ms)
        .filter(|(s, acc)| acc.load(Ordering::Relaxed) > 0 && s.load(Ordering::Relaxed) == 0)
        .count();
    Run {
        accepted,
        unthrottled_ms,
        throttled_backlog,
        peak_rss,
        lost,
        drain: drained,
    }
}
