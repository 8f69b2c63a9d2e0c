//! The soak: Tern relaying for a long while (30 minutes by default) at a
//! steady share (70 %) of the rate it manages flat out, into receivers
//! that defer one message in 20 at its first try and bounce one in 100,
//! with a config reload every two minutes and a kill -9 and restart half
//! way. Every minute it samples Tern's RSS, open files, CPU per message
//! and backlog; at the end every accepted message must have been
//! delivered or bounced (0 lost), every bounce must have come back as a
//! DSN, and any message sent twice is reported with when it arrived
//! again (only around the kill is acceptable).
//!
//! ```text
//! cargo bench --bench relay -- --soak 30            # measures the maximum first
//! cargo bench --bench relay -- --soak 5 --rate 2000 # a short one at a given rate
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::tern::{Daemon, Setup, Signing};
use crate::{Args, internet, procstat};

/// Clients injecting at once.
const CLIENTS: usize = 50;
/// Seconds between config reloads.
const RELOAD_EVERY: u64 = 120;

/// What the clients saw at the door.
struct Door {
    /// Per id: 1 once answered 250 after its data.
    accepted: Vec<AtomicU8>,
    accepted_total: AtomicU64,
    /// 4xx answers (the message was sent again under a new id).
    deferred: AtomicU64,
    /// Connections lost (the kill): the message in flight is unknown.
    lost_connections: AtomicU64,
}

/// One sample, taken each minute.
struct Sample {
    minute: u64,
    accepted: u64,
    finished: u64,
    backlog: u64,
    rss_mb: u64,
    fds: usize,
    cpu_us: f64,
}

/// Runs the soak for `minutes`.
pub fn run(a: &Args, minutes: u64) {
    let rate = a.rate.unwrap_or_else(|| seventy_percent(a));
    let secs = minutes * 60;
    let ids = (rate * secs) as usize + 100_000;
    let (dns, sink_port, tally) = internet::start(
        internet::zone(a.domains, a.hosts),
        0,
        a.hosts,
        0,
        internet::SinkMode::Soak,
        (ids, 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::plain(dir.path(), dns, sink_port);
    let mut daemon = Daemon::start_with(&setup, |c| {
        c.delivery.retry_first = tern::config::values::Duration::from_secs(60);
        c.routes.push(tern::config::RouteConfig {
            domain: "shop.example".into(),
            smarthost: vec![format!("{}:{sink_port}", internet::sink_ip(0))],
            ..Default::default()
        });
    });
    println!(
        "soak: {minutes} min at {rate} messages/s ({CLIENTS} clients, {} B, {} domains on {} sinks); the sinks defer 1 message in 20 once and bounce 1 in 100; reload every {RELOAD_EVERY} s; kill -9 at {} s",
        a.size,
        a.domains,
        a.hosts,
        secs / 2
    );
    let door = Arc::new(Door {
        accepted: (0..ids).map(|_| AtomicU8::new(0)).collect(),
        accepted_total: AtomicU64::new(0),
        deferred: AtomicU64::new(0),
        lost_connections: AtomicU64::new(0),
    });
    let load_rt = crate::inject::runtime();
    let load = load_rt.spawn(inject(
        daemon.addr,
        rate,
        secs,
        ids,
        a.clone(),
        door.clone(),
    ));
    let watched = watch(&mut daemon, &tally, &door, secs, &load);
    let drained = settle(&tally, &door);
    let end_cpu = procstat::process_cpu(daemon.pid());
    daemon.stop();
    report(&tally, &door, &watched, drained, end_cpu);
}

/// Measures the relay rate flat out (20,000 messages into accepting sinks)
/// and returns 70 % of it.
fn seventy_percent(a: &Args) -> u64 {
    let quick = Args {
        messages: 20_000,
        ..a.clone()
    };
    let net = crate::accepting(&quick, 0);
    let run = crate::relay(&quick, &net, Signing::Off, None);
    let max = run.accepted as f64 / run.end_to_end.as_secs_f64();
    println!("maximum measured: {max:.0} messages/s end to end");
    (max * 0.7) as u64
}

/// `CLIENTS` clients sending message n at n / rate seconds, until `secs`.
async fn inject(addr: SocketAddr, rate: u64, secs: u64, ids: usize, a: Args, door: Arc<Door>) {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = tokio::time::Instant::now();
    let body = Arc::new(crate::inject::filler(a.size));
    let end = (rate * secs).min(ids as u64);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, door, body) = (next.clone(), door.clone(), body.clone());
            let domains = a.domains as u64;
            tokio::spawn(async move {
                let mut conn = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break;
                    }
                    let due = Duration::from_secs_f64(n as f64 / rate as f64);
                    tokio::time::sleep_until(t0 + due).await;
                    send(addr, &mut conn, n, n % domains, &body, &door).await;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("soak client");
    }
}

type Conn = (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
);

/// Connects and says EHLO, trying again for up to two minutes (Tern may
/// be restarting).
async fn connect(addr: SocketAddr) -> Conn {
    let mut line = String::new();
    for _ in 0..1200 {
        if let Ok(s) = TcpStream::connect(addr).await {
            let _ = s.set_nodelay(true);
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            if crate::inject::reply(&mut r, &mut line).await == 220
                && w.write_all(b"EHLO load.bench\r\n").await.is_ok()
                && crate::inject::reply(&mut r, &mut line).await == 250
            {
                return (r, w);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("FAILED: no SMTP greeting from Tern for two minutes");
}

/// Sends message `n` on the client's connection (opened as needed). A
/// lost connection leaves the message unknown (it may or may not have
/// been queued); the next one opens a new connection.
async fn send(addr: SocketAddr, conn: &mut Option<Conn>, n: u64, d: u64, body: &[u8], door: &Door) {
    let (r, w) = match conn {
        Some(c) => c,
        None => conn.insert(connect(addr).await),
    };
    let mut line = String::new();
    let envelope = format!("MAIL FROM:<app@shop.example>\r\nRCPT TO:<u{n}@d{d}.bench>\r\nDATA\r\n");
    let text = [
        format!("To: <u{n}@d{d}.bench>\r\nMessage-ID: <{n}@shop.example>\r\nX-Bench-Id: {n}\r\n")
            .as_bytes(),
        body,
        b".\r\n",
    ]
    .concat();
    // The text only after the 354: Tern refuses input sent ahead of it.
    let mut codes = [0u16; 4];
    if w.write_all(envelope.as_bytes()).await.is_ok() {
        for c in &mut codes[..3] {
            *c = crate::inject::reply(r, &mut line).await;
        }
    }
    if codes[2] == 354 && w.write_all(&text).await.is_ok() {
        codes[3] = crate::inject::reply(r, &mut line).await;
    } else if codes[2] != 0 {
        codes[3] = codes[2];
    }
    match codes {
        [250, 250, 354, 250] => {
            door.accepted[n as usize].store(1, Ordering::Relaxed);
            door.accepted_total.fetch_add(1, Ordering::Relaxed);
        }
        c if c.contains(&0) => {
            door.lost_connections.fetch_add(1, Ordering::Relaxed);
            *conn = None;
        }
        c if c.iter().all(|c| *c < 500) => {
            door.deferred.fetch_add(1, Ordering::Relaxed);
        }
        c => panic!("FAILED: 5xx at the door for message {n}: {c:?} {line}"),
    }
}

/// What happened while the load ran.
struct Watched {
    samples: Vec<Sample>,
    reloads: u32,
    /// Seconds from the sinks' start to the kill, and the restart's length.
    kill: (u64, Duration),
    /// CPU seconds of the killed process.
    cpu_before_kill: f64,
}

/// Samples every minute, reloads every `RELOAD_EVERY` s, kills and
/// restarts Tern half way; returns once the load is over.
fn watch(
    daemon: &mut Daemon,
    tally: &internet::Tally,
    door: &Door,
    secs: u64,
    load: &tokio::task::JoinHandle<()>,
) -> Watched {
    let start = Instant::now();
    let mut w = Watched {
        samples: Vec::new(),
        reloads: 0,
        kill: (0, Duration::ZERO),
        cpu_before_kill: 0.0,
    };
    let (mut last_cpu, mut last_acc) = (0.0, 0);
    let mut killed = false;
    for second in 1..=secs + 600 {
        std::thread::sleep(
            (start + Duration::from_secs(second)).saturating_duration_since(Instant::now()),
        );
        if second % 60 == 0 {
            let cpu = w.cpu_before_kill + procstat::process_cpu(daemon.pid());
            let acc = door.accepted_total.load(Ordering::Relaxed);
            w.samples.push(sample(
                second / 60,
                daemon.pid(),
                tally,
                acc,
                (cpu - last_cpu, acc - last_acc),
            ));
            (last_cpu, last_acc) = (cpu, acc);
        }
        if second % RELOAD_EVERY == 0 && second < secs {
            let on = w.reloads.is_multiple_of(2);
            daemon.rewrite(|c| toggle_shaping(c, on));
            daemon.reload();
            w.reloads += 1;
        }
        if !killed && second >= secs / 2 {
            killed = true;
            w.cpu_before_kill += procstat::process_cpu(daemon.pid());
            let at = tally.started.elapsed().as_secs();
            w.kill = (at, daemon.kill_and_restart());
            println!(
                "kill -9 at {at} s; greeting again after {:.2} s",
                w.kill.1.as_secs_f64()
            );
        }
        if load.is_finished() {
            break;
        }
    }
    w
}

/// A harmless config change for a reload: a connection limit for one
/// domain, on and off.
fn toggle_shaping(c: &mut tern::config::Config, on: bool) {
    c.shaping.domains.retain(|d| d.domain != "d0.bench");
    if on {
        let mut d = tern::config::DomainShapingConfig {
            domain: "d0.bench".into(),
            ..Default::default()
        };
        d.per_path.connection_limit = Some(20);
        c.shaping.domains.push(d);
    }
}

fn sample(
    minute: u64,
    pid: u32,
    tally: &internet::Tally,
    accepted: u64,
    (cpu, msgs): (f64, u64),
) -> Sample {
    let finished = tally.messages.load(Ordering::Relaxed) + tally.refusals.load(Ordering::Relaxed);
    let s = Sample {
        minute,
        accepted,
        finished,
        backlog: accepted.saturating_sub(finished),
        rss_mb: procstat::rss(pid) >> 20,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        cpu_us: cpu * 1e6 / msgs.max(1) as f64,
    };
    println!(
        "{:>4} min  accepted {:>9}  finished {:>9}  backlog {:>7}  RSS {:>4} MB  fds {:>5}  CPU {:>6.1} us/msg",
        s.minute, s.accepted, s.finished, s.backlog, s.rss_mb, s.fds, s.cpu_us
    );
    s
}

/// Waits until every accepted message was delivered or bounced and every
/// bounce's DSN arrived (bounded: nothing new for 240 s ends the wait);
/// returns how long the drain took.
fn settle(tally: &internet::Tally, door: &Door) -> Duration {
    let t = Instant::now();
    let (mut last, mut since) = (usize::MAX, Instant::now());
    loop {
        let open = open_ids(tally, door).len();
        let bounced = tally
            .bounced
            .iter()
            .filter(|b| b.load(Ordering::Relaxed) > 0)
            .count() as u64;
        if open == 0 && tally.dsns.load(Ordering::Relaxed) >= bounced {
            return t.elapsed();
        }
        if open != last {
            (last, since) = (open, Instant::now());
        }
        if since.elapsed() > Duration::from_secs(240) {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Accepted ids neither delivered nor bounced.
fn open_ids(tally: &internet::Tally, door: &Door) -> Vec<usize> {
    (0..door.accepted.len())
        .filter(|&i| {
            door.accepted[i].load(Ordering::Relaxed) == 1
                && tally.seen[i].load(Ordering::Relaxed) == 0
                && tally.bounced[i].load(Ordering::Relaxed) == 0
        })
        .collect()
}

fn report(tally: &internet::Tally, door: &Door, w: &Watched, drained: Duration, end_cpu: f64) {
    let lost = open_ids(tally, door);
    let count = |v: &[AtomicU8]| v.iter().filter(|b| b.load(Ordering::Relaxed) > 0).count();
    let bounced = count(&tally.bounced);
    let repeats = tally.repeats_ms.lock().unwrap().clone();
    let near_kill = repeats
        .iter()
        .filter(|ms| (**ms / 1000).abs_diff(w.kill.0) <= 120)
        .count();
    let accepted = door.accepted_total.load(Ordering::Relaxed);
    let cpu = w.cpu_before_kill + end_cpu;
    println!("\nsoak summary");
    println!(
        "accepted {accepted}; deferred at the door {}; connections lost at the kill {} (those messages unacknowledged)",
        door.deferred.load(Ordering::Relaxed),
        door.lost_connections.load(Ordering::Relaxed)
    );
    println!(
        "delivered {} distinct; bounced {bounced} (DSNs back {}); deferred by the sinks {}; drain after the load {:.0} s",
        count(&tally.seen),
        tally.dsns.load(Ordering::Relaxed),
        tally.deferrals.load(Ordering::Relaxed),
        drained.as_secs_f64()
    );
    println!(
        "reloads {}; kill -9 at {} s, greeting again after {:.2} s; Tern CPU {:.0} s in all, {:.1} us per accepted message",
        w.reloads,
        w.kill.0,
        w.kill.1.as_secs_f64(),
        cpu,
        cpu * 1e6 / accepted.max(1) as f64
    );
    println!(
        "sent twice: {} ({near_kill} within 2 minutes of the kill); lost: {} {:?}",
        repeats.len(),
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let peak_rss = w.samples.iter().map(|s| s.rss_mb).max().unwrap_or(0);
    let fds = w.samples.iter().map(|s| s.fds).max().unwrap_or(0);
    println!("highest RSS sampled {peak_rss} MB; most open files {fds}");
    assert!(lost.is_empty(), "FAILED: accepted messages were lost");
    assert_eq!(
        tally.unidentified.load(Ordering::Relaxed),
        0,
        "FAILED: unidentified messages"
    );
}
