//! The burst run: steady injection at B messages/s, then 12 B for a while,
//! then B again, into Tern with a per-path rate and a queue budget, while
//! the sinks accept at a limited rate and defer a share of recipients.
//! Reports what was accepted, deferred at the door (4xx, retried by the
//! clients), delivered and lost (must be 0), Tern's peak RSS, the backlog
//! over time, the drain time, and the highest per-second rate each sink
//! saw against the configured per-path limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::tern::{Daemon, Setup};
use crate::{Args, internet, procstat};

/// The phases: (seconds, messages per second).
pub fn phases(base: u64, factor: u64, secs: u64) -> [(u64, u64); 3] {
    [(secs, base), (secs * 2, base * factor), (secs, base)]
}

/// When message `n` is due under the phases, from the start.
fn due(n: u64, phases: &[(u64, u64)]) -> Option<Duration> {
    let (mut first, mut offset) = (0u64, 0f64);
    for &(secs, rate) in phases {
        let count = secs * rate;
        if n < first + count {
            return Some(Duration::from_secs_f64(
                offset + (n - first) as f64 / rate as f64,
            ));
        }
        first += count;
        offset += secs as f64;
    }
    None
}

/// Counters shared by the clients, and when each message was accepted.
#[derive(Default)]
pub struct Door {
    pub accepted: AtomicU64,
    pub deferred: AtomicU64,
    /// Per message: milliseconds from `t0` to its 250 (0: not yet).
    pub accepted_ms: Vec<AtomicU64>,
    /// What `accepted_ms` counts from.
    pub t0: Option<Instant>,
}

impl Door {
    /// A door that also times each of `ids` messages from `t0`.
    pub fn timed(ids: usize, t0: Instant) -> Self {
        Self {
            accepted_ms: (0..ids).map(|_| AtomicU64::new(0)).collect(),
            t0: Some(t0),
            ..Self::default()
        }
    }

    fn accept(&self, n: u64) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if let (Some(t0), Some(slot)) = (self.t0, self.accepted_ms.get(n as usize)) {
            slot.store(t0.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
        }
    }
}

/// One client: sends the messages it draws, each at its due time; a 4xx
/// at the door is retried after half a second (bounded: 2,000 tries).
async fn client(
    addr: std::net::SocketAddr,
    next: Arc<AtomicU64>,
    phases: Vec<(u64, u64)>,
    start: tokio::time::Instant,
    door: Arc<Door>,
    domains: usize,
) {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    assert_eq!(crate::inject::reply(&mut r, &mut line).await, 220);
    w.write_all(b"EHLO load.bench\r\n").await.unwrap();
    assert_eq!(crate::inject::reply(&mut r, &mut line).await, 250);
    let body = crate::inject::filler(4096);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let Some(at) = due(n, &phases) else { break };
        tokio::time::sleep_until(start + at).await;
        let d = n % domains as u64;
        for _ in 0..2000 {
            let env =
                format!("MAIL FROM:<app@shop.example>\r\nRCPT TO:<u{n}@d{d}.bench>\r\nDATA\r\n");
            w.write_all(env.as_bytes()).await.unwrap();
            let codes = [
                crate::inject::reply(&mut r, &mut line).await,
                crate::inject::reply(&mut r, &mut line).await,
                crate::inject::reply(&mut r, &mut line).await,
            ];
            if codes != [250, 250, 354] {
                assert!(
                    codes.iter().all(|c| *c < 500 || *c == 503 || *c == 554),
                    "5xx at the door: {codes:?} {line}"
                );
                door.deferred.fetch_add(1, Ordering::Relaxed);
                if codes[2] == 354 {
                    w.write_all(b".\r\n").await.unwrap(); // end the empty data
                    crate::inject::reply(&mut r, &mut line).await;
                }
                w.write_all(b"RSET\r\n").await.unwrap();
                crate::inject::reply(&mut r, &mut line).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let head = format!(
                "To: <u{n}@d{d}.bench>\r\nMessage-ID: <{n}@shop.example>\r\nX-Bench-Id: {n}\r\n"
            );
            w.write_all(&[head.as_bytes(), &body, b".\r\n"].concat())
                .await
                .unwrap();
            if crate::inject::reply(&mut r, &mut line).await == 250 {
                door.accept(n);
                break;
            }
            door.deferred.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let _ = w.write_all(b"QUIT\r\n").await;
}

/// A burst's fake internet (sinks that accept `--sink-rate` messages a
/// second in all and defer one recipient in 20) and a directory for
/// Tern.
pub struct Stage {
    pub dir: tempfile::TempDir,
    pub dns: std::net::SocketAddr,
    pub sink_port: u16,
    pub tally: Arc<internet::Tally>,
}

impl Stage {
    /// For `total` messages.
    pub fn new(a: &Args, total: u64) -> Self {
        let mode = internet::SinkMode::Limited {
            per_sec: a.sink_rate,
            tempfail_every: 20,
        };
        let (dns, sink_port, tally) = internet::start(
            internet::zone(a.domains, a.hosts),
            0,
            a.hosts,
            0,
            mode,
            (total as usize, 0),
        );
        let dir = tempfile::tempdir().unwrap();
        Self {
            dir,
            dns,
            sink_port,
            tally,
        }
    }

    /// Tern's setup on it.
    pub fn setup(&self) -> Setup<'_> {
        Setup::plain(self.dir.path(), self.dns, self.sink_port)
    }
}

/// Runs the burst benchmark.
pub fn run(a: &Args, base: u64) {
    let (factor, secs, path_rate) = (12, a.burst_secs, a.path_rate);
    let phases = phases(base, factor, secs).to_vec();
    let total: u64 = phases.iter().map(|(s, r)| s * r).sum();
    let stage = Stage::new(a, total);
    let tally = &stage.tally;
    let daemon = start_tern(a, &stage.setup());
    let rt = crate::inject::runtime();
    let door = Arc::new(Door::default());
    let start = Instant::now();
    let load = rt.spawn(inject(daemon.addr, phases.clone(), door.clone(), a.domains));
    let samples = watch(tally, &door, &load, daemon.pid(), start);
    rt.block_on(load).unwrap();
    let injected = start.elapsed();
    let drained = drain(tally, &door, start);
    let peak = procstat::peak_rss(daemon.pid());
    daemon.stop();
    report(
        a,
        &phases,
        &door,
        tally,
        (injected, drained, peak),
        &samples,
        path_rate,
    );
}

/// Tern with the burst's shaping: every sink's path at `path_rate`, the
/// queue budget, quick retries.
fn start_tern(a: &Args, setup: &Setup<'_>) -> Daemon {
    Daemon::start_with(setup, |c| {
        use tern::config::values::Duration as Span;
        let mut p = tern::config::ProviderConfig {
            name: "bench".into(),
            mx_suffixes: vec![".bench".into()],
            ..Default::default()
        };
        let rate = format!("{}/s,burst=10", a.path_rate);
        p.per_path.message_rate = Some(rate.parse().unwrap());
        c.shaping.providers.push(p);
        c.queue.max_messages = a.queue_budget;
        c.delivery.retry_first = Span::from_secs(5);
        c.delivery.retry_max = Span::from_secs(10);
    })
}

/// 50 clients sending every message of the phases at its due time.
pub async fn inject(
    addr: std::net::SocketAddr,
    phases: Vec<(u64, u64)>,
    door: Arc<Door>,
    domains: usize,
) {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = tokio::time::Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (next, phases, door) = (next.clone(), phases.clone(), door.clone());
            tokio::spawn(client(addr, next, phases, t0, door, domains))
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
}

/// Backlog (accepted, not yet delivered) every 5 s while the load runs.
fn watch(
    tally: &internet::Tally,
    door: &Door,
    load: &tokio::task::JoinHandle<()>,
    pid: u32,
    start: Instant,
) -> Vec<(u64, u64, u64, u64)> {
    let mut out = Vec::new();
    for i in 0..100_000u64 {
        std::thread::sleep(Duration::from_millis(100));
        if i % 50 == 0 {
            let acc = door.accepted.load(Ordering::Relaxed);
            let del = tally.messages.load(Ordering::Relaxed);
            out.push((
                start.elapsed().as_secs(),
                acc,
                acc.saturating_sub(del),
                procstat::rss(pid) >> 20,
            ));
        }
        if load.is_finished() {
            break;
        }
    }
    out
}

/// Waits until every accepted message arrived (bounded: nothing for 120 s
/// fails the run); returns when, from the start.
pub fn drain(tally: &internet::Tally, door: &Door, start: Instant) -> Duration {
    let accepted = door.accepted.load(Ordering::Relaxed);
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let n = tally.messages.load(Ordering::Relaxed);
        if n >= accepted {
            return start.elapsed();
        }
        if n != last {
            (last, since) = (n, Instant::now());
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "FAILED: {n} of {accepted} delivered, none for 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(
    a: &Args,
    phases: &[(u64, u64)],
    door: &Door,
    tally: &internet::Tally,
    (injected, drained, peak): (Duration, Duration, u64),
    samples: &[(u64, u64, u64, u64)],
    path_rate: u64,
) {
    let accepted = door.accepted.load(Ordering::Relaxed);
    let delivered = tally.messages.load(Ordering::Relaxed);
    let missing = tally
        .seen
        .iter()
        .take(accepted as usize)
        .filter(|s| s.load(Ordering::Relaxed) == 0)
        .count();
    println!(
        "\nburst: phases {phases:?} (seconds, messages/s); {} domains on {} sinks; sinks accept {}/s in all and defer 1 recipient in 20; per-path limit {path_rate}/s; queue budget {} messages",
        a.domains, a.hosts, a.sink_rate, a.queue_budget
    );
    println!(
        "accepted {accepted}, deferred at the door {} (retried by the clients), delivered {delivered}, lost {missing}",
        door.deferred.load(Ordering::Relaxed)
    );
    println!(
        "injection over after {:.1} s; every accepted message delivered after {:.1} s (drain {:.1} s); Tern peak RSS {} MB",
        injected.as_secs_f64(),
        drained.as_secs_f64(),
        (drained - injected).as_secs_f64(),
        peak >> 20
    );
    println!("time  accepted  backlog  RSS(MB)");
    for (t, acc, backlog, rss) in samples {
        println!("{t:>4}s {acc:>9} {backlog:>8} {rss:>8}");
    }
    let per = tally.per_second.lock().unwrap();
    let worst = (0..a.hosts)
        .map(|k| {
            per.iter()
                .filter(|((s, _), _)| *s == k)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        })
        .collect::<Vec<_>>();
    println!(
        "highest messages in one second per sink (one path each): {worst:?}; limit {path_rate}/s (burst 10)"
    );
    assert_eq!(missing, 0, "FAILED: accepted messages were lost");
}
