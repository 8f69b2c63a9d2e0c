//! The relay benchmark: Tern (`tern run`, a child process) between a load
//! of SMTP clients and a fake internet on loopback, end to end.
//!
//! ```text
//! cargo bench --bench relay                       # the three variants below
//! cargo bench --bench relay -- --dkim off --messages 50000 --clients 50 --size 4096
//! cargo bench --bench relay -- --target 127.0.0.1:25 --dns-port 53 --sink-port 25
//! cargo bench --bench relay -- --deferred 1000000 # the queue-memory / recovery run
//! cargo bench --bench relay -- --deferred 1000000 --no-bulk # its restart only
//! cargo bench --bench relay -- --burst 200         # B/s, then 12 B/s, then B/s
//! cargo bench --bench relay -- --burst 100 --throttle  # the same, with and without a throttled provider
//! cargo bench --bench relay -- --fleet 1,2,4,8 --drain 20000  # nodes sharing a limit through Redis; a drain
//! cargo bench --bench relay -- --proxy socks5      # direct, then through microsocks (or haproxy)
//! cargo bench --bench relay -- --api --dkim off,rsa  # POST /v1/messages (MJML) against SMTP
//! cargo bench --bench relay -- --events            # with and without a webhook getting every event
//! cargo bench --bench relay -- --soak 30           # 30 minutes at 70 % of the maximum, reloads, a kill -9
//! cargo bench --bench relay -- --curve             # CPU per message at 500, 1,000, 2,000, 4,000/s and flat out
//! cargo bench --bench relay -- --rate 2000         # the standard run, offered at 2,000 messages/s
//! cargo bench --bench relay -- --chunking          # the sinks offer CHUNKING: Tern sends with BDAT
//! cargo bench --bench relay -- --floor             # the curve's rates into a minimal relay, then Tern
//! ```
//!
//! A run: the fake internet (DNS: `--domains` domains, MX on `--hosts`
//! sinks), Tern started on a config resolving through it and sending from
//! 127.0.1.20, then `--messages` messages of `--size` bytes injected by
//! `--clients` clients, until every accepted message is counted at the
//! sinks. It reports accepted and end-to-end messages/s, the clients'
//! MAIL-to-250 latency, Tern's CPU (user + system, the whole process) per
//! message, its peak RSS, and the CPU of the load and the sinks (they share
//! the machine). A message accepted but not delivered, or delivered twice,
//! fails the run.
//!
//! `--target HOST:PORT` aims the load at another MTA instead (configure it
//! to resolve through `--dns-port` on 127.0.1.53 and deliver to port
//! `--sink-port`); `--target-pid PID` then reports that process's CPU.

mod api;
mod bulk;
mod burst;
mod curve;
mod deferred;
mod events;
mod fleet;
mod floor;
mod inject;
mod internet;
mod procstat;
mod proxied;
mod report;
mod soak;
mod tern;
mod throttled;

#[allow(dead_code)]
#[path = "../../tests/common/dns.rs"]
mod dns;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern::Signing;

/// The plain fake internet of a run's `Args`: its domains and hosts, sinks
/// that accept everything, counting `a.messages` ids and keeping the first
/// `capture` messages whole.
pub fn accepting(a: &Args, capture: usize) -> (SocketAddr, u16, std::sync::Arc<internet::Tally>) {
    internet::start(
        internet::zone(a.domains, a.hosts),
        a.dns_port,
        a.hosts,
        a.sink_port,
        match a.chunking {
            true => internet::SinkMode::AcceptChunking,
            false => internet::SinkMode::Accept,
        },
        (a.messages as usize, capture),
    )
}

/// The command line.
#[derive(Clone)]
pub struct Args {
    messages: u64,
    clients: usize,
    size: usize,
    domains: usize,
    hosts: usize,
    dkim: Vec<Signing>,
    target: Option<SocketAddr>,
    target_pid: Option<u32>,
    dns_port: u16,
    sink_port: u16,
    deferred: Option<u64>,
    /// The deferred run stops after the restart (no views, no bulk operations).
    no_bulk: bool,
    recipients: usize,
    burst: Option<u64>,
    burst_secs: u64,
    throttle: bool,
    path_rate: u64,
    sink_rate: u32,
    queue_budget: u64,
    fleet: Option<Vec<usize>>,
    fleet_rate: u64,
    fleet_secs: u64,
    drain: u64,
    proxy: Option<String>,
    api: bool,
    events: bool,
    soak: Option<u64>,
    rate: Option<u64>,
    curve: bool,
    /// The accepting sinks offer CHUNKING (BDAT).
    chunking: bool,
    /// The curve's rates against the floor relay, then Tern.
    floor: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        messages: 20_000,
        clients: 50,
        size: 4096,
        domains: 100,
        hosts: 4,
        dkim: vec![Signing::Off, Signing::Rsa, Signing::Ed25519],
        target: None,
        target_pid: None,
        dns_port: 0,
        sink_port: 0,
        deferred: None,
        no_bulk: false,
        recipients: 10,
        burst: None,
        burst_secs: 10,
        throttle: false,
        path_rate: 250,
        sink_rate: 1000,
        queue_budget: 20_000,
        fleet: None,
        fleet_rate: 2000,
        fleet_secs: 10,
        drain: 20_000,
        proxy: None,
        api: false,
        events: false,
        soak: None,
        rate: None,
        curve: false,
        chunking: false,
        floor: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        let num = |v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--messages" => a.messages = num(value()),
            "--clients" => a.clients = num(value()) as usize,
            "--size" => a.size = num(value()) as usize,
            "--domains" => a.domains = num(value()) as usize,
            "--hosts" => a.hosts = num(value()).clamp(1, 50) as usize,
            "--dns-port" => a.dns_port = num(value()) as u16,
            "--sink-port" => a.sink_port = num(value()) as u16,
            "--target-pid" => a.target_pid = Some(num(value()) as u32),
            "--deferred" => a.deferred = Some(num(value())),
            "--no-bulk" => a.no_bulk = true,
            "--recipients" => a.recipients = num(value()).max(1) as usize,
            "--burst" => a.burst = Some(num(value()).max(1)),
            "--burst-secs" => a.burst_secs = num(value()).max(1),
            "--throttle" => a.throttle = true,
            "--path-rate" => a.path_rate = num(value()).max(1),
            "--sink-rate" => a.sink_rate = num(value()).max(1) as u32,
            "--queue-budget" => a.queue_budget = num(value()),
            "--fleet" => {
                a.fleet = Some(
                    value()
                        .split(',')
                        .map(|n| n.parse().expect("--fleet 1,2,4,8"))
                        .collect(),
                )
            }
            "--fleet-rate" => a.fleet_rate = num(value()).max(1),
            "--fleet-secs" => a.fleet_secs = num(value()).max(1),
            "--drain" => a.drain = num(value()),
            "--proxy" => a.proxy = Some(value()),
            "--api" => a.api = true,
            "--events" => a.events = true,
            "--soak" => a.soak = Some(num(value()).max(1)),
            "--rate" => a.rate = Some(num(value()).max(1)),
            "--curve" => a.curve = true,
            "--chunking" => a.chunking = true,
            "--floor" => a.floor = true,
            "--target" => a.target = Some(value().parse().expect("--target HOST:PORT")),
            "--dkim" => {
                a.dkim = value()
                    .split(',')
                    .map(|v| match v {
                        "off" => Signing::Off,
                        "rsa" => Signing::Rsa,
                        "ed25519" => Signing::Ed25519,
                        other => panic!("--dkim: off, rsa or ed25519, not {other:?}"),
                    })
                    .collect()
            }
            "--bench" => {} // cargo bench passes it
            other => panic!("unknown argument {other:?} (see benches/relay/main.rs)"),
        }
    }
    a
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--floor-serve") {
        floor::serve(&argv[2..]);
        return;
    }
    let a = parse_args();
    if a.floor {
        floor::run(&a);
        return;
    }
    if let Some(sizes) = a.fleet.clone() {
        fleet::run(&a, &sizes);
        return;
    }
    if a.api {
        api::run(&a);
        return;
    }
    if a.events {
        events::run(&a);
        return;
    }
    if let Some(minutes) = a.soak {
        soak::run(&a, minutes);
        return;
    }
    if a.curve {
        curve::run(&a);
        return;
    }
    if let Some(kind) = a.proxy.clone() {
        proxied::run(&a, &kind);
        return;
    }
    if let Some(recipients) = a.deferred {
        deferred::run(&a, recipients);
        return;
    }
    if let Some(base) = a.burst {
        match a.throttle {
            true => throttled::run(&a, base),
            false => burst::run(&a, base),
        }
        return;
    }
    let variants = if a.target.is_some() {
        vec![Signing::Off]
    } else {
        a.dkim.clone()
    };
    let net = accepting(&a, 0);
    if a.target.is_some() {
        println!(
            "fake internet: DNS {}, sinks 127.0.1.1-{} port {}",
            net.0, a.hosts, net.1
        );
    }
    let mut rows = Vec::new();
    for signing in variants {
        net.2.reset();
        rows.push(relay(&a, &net, signing, None));
    }
    report::table(&a, &rows);
}

/// What one run measured.
pub struct Run {
    signing: Signing,
    accepted: usize,
    deferred_at_door: u64,
    inject: Duration,
    end_to_end: Duration,
    latencies: Vec<Duration>,
    mta_cpu: Option<f64>,
    mta_peak_rss: Option<u64>,
    load_cpu: f64,
    net_cpu: f64,
    duplicates: u64,
}

fn classify(thread: &str) -> &'static str {
    if thread.starts_with("bench-load") {
        "load"
    } else if thread.starts_with("bench-net") {
        "net"
    } else {
        "other"
    }
}

/// One run: counts reset, a fresh Tern and spool (its source leaving
/// through `proxy`, if given).
pub(crate) fn relay(
    a: &Args,
    net: &(SocketAddr, u16, std::sync::Arc<internet::Tally>),
    signing: Signing,
    proxy: Option<&str>,
) -> Run {
    relay_with(a, net, signing, |c| {
        c.sources[0].proxy = proxy.map(|p| p.parse().expect("a proxy URL"));
    })
}

/// [`relay`] with Tern's config changed by `tweak`.
pub(crate) fn relay_with(
    a: &Args,
    (dns, sink_port, tally): &(SocketAddr, u16, std::sync::Arc<internet::Tally>),
    signing: Signing,
    tweak: impl FnOnce(&mut ::tern::config::Config),
) -> Run {
    let (dns, sink_port) = (*dns, *sink_port);
    let dir = tempfile::tempdir().unwrap();
    let setup = tern::Setup {
        dir: dir.path(),
        dns,
        sink_port,
        signing,
        log_level: "warn",
    };
    let daemon = a
        .target
        .is_none()
        .then(|| tern::Daemon::start_with(&setup, tweak));
    let target = a.target.unwrap_or_else(|| daemon.as_ref().unwrap().addr);
    let pid = daemon.as_ref().map(|d| d.pid()).or(a.target_pid);
    let load_rt = crate::inject::runtime();
    let cpu0 = (
        pid.map(procstat::process_cpu),
        procstat::own_threads(classify),
    );
    let start = Instant::now();
    let load = inject::Load {
        target,
        messages: a.messages,
        size: a.size,
        domains: a.domains,
        recipients: 1,
        first: 0,
        rate: a.rate,
    };
    let outcome = load_rt.block_on(inject::run(load, a.clients));
    let inject = start.elapsed();
    let accepted = outcome.accepted.len() as u64;
    wait_delivered(tally, accepted, daemon.as_ref());
    let end_to_end = start.elapsed();
    let cpu1 = (
        pid.map(procstat::process_cpu),
        procstat::own_threads(classify),
    );
    let mta_peak_rss = pid.map(procstat::peak_rss);
    let dup = verify(tally, &outcome.accepted);
    if let Some(d) = daemon {
        d.stop();
    }
    let used =
        |k: &str| cpu1.1.get(k).copied().unwrap_or(0.0) - cpu0.1.get(k).copied().unwrap_or(0.0);
    Run {
        signing,
        accepted: outcome.accepted.len(),
        deferred_at_door: outcome.deferred,
        inject,
        end_to_end,
        latencies: outcome.latencies,
        mta_cpu: cpu0.0.zip(cpu1.0).map(|(a, b)| b - a),
        mta_peak_rss,
        load_cpu: used("load"),
        net_cpu: used("net"),
        duplicates: dup,
    }
}

/// Waits until the sinks have counted `accepted` messages; fails loudly
/// when nothing arrives for 60 s (or Tern died).
pub(crate) fn wait_delivered(
    tally: &internet::Tally,
    accepted: u64,
    daemon: Option<&tern::Daemon>,
) {
    use std::sync::atomic::Ordering;
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let n = tally.messages.load(Ordering::Relaxed);
        if n >= accepted {
            return;
        }
        if n != last {
            (last, since) = (n, Instant::now());
        }
        if since.elapsed() > Duration::from_secs(60) {
            let log = daemon.map(|d| d.log()).unwrap_or_default();
            panic!("FAILED: {n} of {accepted} accepted messages arrived, none for 60 s\n{log}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every accepted id arrived; returns how many arrived more than once.
fn verify(tally: &internet::Tally, accepted: &[u64]) -> u64 {
    use std::sync::atomic::Ordering;
    let missing: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|id| tally.seen[*id as usize].load(Ordering::Relaxed) == 0)
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "FAILED: accepted messages never arrived, e.g. {missing:?}"
    );
    let unidentified = tally.unidentified.load(Ordering::Relaxed);
    assert_eq!(
        unidentified, 0,
        "FAILED: messages without their X-Bench-Id arrived"
    );
    tally
        .seen
        .iter()
        .map(|s| u64::from(s.load(Ordering::Relaxed).saturating_sub(1)))
        .sum()
}
