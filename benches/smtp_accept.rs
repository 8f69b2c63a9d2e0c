//! Accepted messages per second over loopback, and the server's CPU per
//! message: the daemon in-process with durability on (fsync per batch),
//! C clients each on one connection, pipelining MAIL/RCPT/DATA (or one
//! BDAT LAST write with `--bdat`) with S-byte messages. `--buffered` runs
//! the same with buffered durability, to see the cost without fsync.
//!
//! Without `--relay`, delivery is held back (its resolver never answers and
//! one message at a time may wait for it), so only receiving is measured.
//! With `--relay`, the 100 recipient domains are routed to an in-process
//! sink (one smarthost, so one site), and the run lasts until the sink has
//! every message: the CPU is that of receiving, queueing and delivering.
//!
//! `--dkim off,rsa,ed25519` runs once per listed variant, in this process,
//! one after the other: unsigned, signed with an RSA-2048 key, signed with
//! an Ed25519 key (the From domain's, `tests/fixtures/dkim`).
//!
//! ```text
//! cargo bench --bench smtp_accept
//! cargo bench --bench smtp_accept -- --clients 50 --messages 50000 --size 4096 [--bdat] [--buffered] [--relay] [--dkim off,rsa,ed25519]
//! ```
//!
//! Server and clients run on separate runtimes whose threads are named
//! (`tern-…` and `bench-cli`), so the CPU time of each side is read per
//! thread from /proc: "server CPU" is every `tern-` thread (SMTP workers,
//! queue writer and compactor), system time included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tern::dns::resolver::{BoxFuture, LookupError, MxAnswer, Resolver};

#[allow(dead_code)]
#[path = "../tests/common/dns.rs"]
mod dns;
#[allow(dead_code)]
#[path = "relay/internet.rs"]
mod internet;
#[allow(dead_code)]
#[path = "relay/procstat.rs"]
mod procstat;

/// The relay sink's counts, once `--relay` has started it.
type Delivered = Arc<std::sync::Mutex<Option<Arc<internet::Tally>>>>;

/// Messages the sink has counted so far.
fn counted(d: &Delivered) -> u64 {
    d.lock()
        .unwrap()
        .as_ref()
        .map_or(0, |t| t.messages.load(Ordering::Relaxed))
}
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    clients: usize,
    messages: u64,
    size: usize,
    bdat: bool,
    buffered: bool,
    relay: bool,
    dkim: Vec<Signing>,
}

/// A DKIM variant of a run.
#[derive(Debug, Clone, Copy)]
enum Signing {
    Off,
    Rsa,
    Ed25519,
}

fn parse_args() -> Args {
    let mut a = Args {
        clients: 50,
        messages: 50_000,
        size: 4096,
        bdat: false,
        buffered: false,
        relay: false,
        dkim: vec![Signing::Off],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--clients" => a.clients = value().map_or(a.clients, |v| v as usize),
            "--messages" => a.messages = value().unwrap_or(a.messages),
            "--size" => a.size = value().map_or(a.size, |v| v as usize),
            "--bdat" => a.bdat = true,
            "--buffered" => a.buffered = true,
            "--relay" => a.relay = true,
            "--dkim" => {
                let list = it.next().unwrap_or_default();
                a.dkim = list
                    .split(',')
                    .map(|v| match v {
                        "rsa" => Signing::Rsa,
                        "ed25519" => Signing::Ed25519,
                        _ => Signing::Off,
                    })
                    .collect();
            }
            _ => {}
        }
    }
    a
}

/// CPU seconds (user + system) per kind of thread, from /proc.
fn thread_cpu() -> HashMap<&'static str, f64> {
    procstat::own_threads(|comm| {
        if comm.starts_with("tern-queue-wr") {
            "writer"
        } else if comm.starts_with("tern-dkim") {
            "dkim"
        } else if comm.starts_with("tern-") {
            "server"
        } else if comm.starts_with("bench-cli") {
            "client"
        } else if comm.starts_with("bench-net") {
            "sink"
        } else {
            "other"
        }
    })
}

fn body(size: usize) -> Vec<u8> {
    let mut b = b"From: app@shop.example\r\nTo: user@d.example\r\nSubject: benchmark\r\nMessage-ID: <m@shop.example>\r\nDate: Mon, 23 Nov 2026 06:00:00 +0000\r\n\r\n".to_vec();
    while b.len() < size {
        b.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    b
}

/// Reads one reply; returns its code.
async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, line: &mut String) -> u16 {
    loop {
        line.clear();
        if r.read_line(line).await.unwrap_or(0) == 0 {
            return 0;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// One client: sends messages until the shared counter reaches `total`;
/// returns the latency of each (end of data to 250).
async fn client(
    addr: std::net::SocketAddr,
    next: Arc<AtomicU64>,
    total: u64,
    body: Arc<Vec<u8>>,
    bdat: bool,
) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    assert_eq!(reply(&mut r, &mut line).await, 220);
    w.write_all(b"EHLO bench.example\r\n").await.unwrap();
    assert_eq!(reply(&mut r, &mut line).await, 250);
    let mut latencies = Vec::new();
    let mut wire = Vec::with_capacity(body.len() + 200);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        wire.clear();
        let envelope = format!(
            "MAIL FROM:<app@shop.example>\r\nRCPT TO:<user{n}@d{}.example>\r\n",
            n % 100
        );
        wire.extend_from_slice(envelope.as_bytes());
        if bdat {
            wire.extend_from_slice(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
            wire.extend_from_slice(&body);
            let t = Instant::now();
            w.write_all(&wire).await.unwrap();
            for _ in 0..2 {
                assert_eq!(reply(&mut r, &mut line).await, 250, "{line}");
            }
            assert_eq!(reply(&mut r, &mut line).await, 250, "{line}");
            latencies.push(t.elapsed());
        } else {
            wire.extend_from_slice(b"DATA\r\n");
            w.write_all(&wire).await.unwrap();
            for _ in 0..2 {
                assert_eq!(reply(&mut r, &mut line).await, 250, "{line}");
            }
            assert_eq!(reply(&mut r, &mut line).await, 354, "{line}");
            // The body and its end in one write, as a buffering client does.
            wire.clear();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(b".\r\n");
            let t = Instant::now();
            w.write_all(&wire).await.unwrap();
            assert_eq!(reply(&mut r, &mut line).await, 250, "{line}");
            latencies.push(t.elapsed());
        }
    }
    let _ = w.write_all(b"QUIT\r\n").await;
    latencies
}

fn main() {
    let a = parse_args();
    for signing in a.dkim.clone() {
        run(&a, signing);
    }
}

/// One run with a fresh daemon and spool.
fn run(a: &Args, signing: Signing) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tern-srv")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-cli")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let delivered: Delivered = Arc::new(std::sync::Mutex::new(None));
    let (mut cfg, resolver) = setup(a, dir.path(), delivered.clone());
    sign_with(&mut cfg, signing);
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = server_rt.spawn(tern::daemon::run_with(
        cfg,
        vec![listener],
        resolver,
        async {
            let _ = stopped.await;
        },
    ));
    std::thread::sleep(Duration::from_millis(200)); // the queue opens

    let body = Arc::new(body(a.size));
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let latencies: Vec<Duration> = client_rt.block_on(async {
        let tasks: Vec<_> = (0..a.clients)
            .map(|_| tokio::spawn(client(addr, next.clone(), a.messages, body.clone(), a.bdat)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client"));
        }
        all
    });
    let accepted = start.elapsed();
    if a.relay {
        // Every message relayed (bounded: at most 10 minutes).
        for _ in 0..60_000 {
            if counted(&delivered) >= a.messages {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(counted(&delivered), a.messages, "not all relayed");
    }
    let elapsed = start.elapsed();
    let cpu1 = thread_cpu();
    stop.send(()).unwrap();
    server_rt.block_on(daemon).unwrap().unwrap();

    println!("--- DKIM {signing:?}");
    report(a, body.len(), (accepted, elapsed), &cpu0, &cpu1, latencies);
}

/// Configures the From domain's key for `signing`.
fn sign_with(cfg: &mut tern::config::Config, signing: Signing) {
    use tern::config::{DkimKeyConfig, KeyAlgorithm};
    let (file, algorithm) = match signing {
        Signing::Off => return,
        Signing::Rsa => ("rsa2048.pkcs8.pem", KeyAlgorithm::RsaSha256),
        Signing::Ed25519 => ("ed25519.pem", KeyAlgorithm::Ed25519Sha256),
    };
    cfg.dkim.keys.push(DkimKeyConfig {
        domain: "shop.example".into(),
        selector: "bench".into(),
        algorithm,
        key: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dkim")
            .join(file),
    });
}

/// The daemon's config and resolver for a run: spool and delivery log in
/// `dir`; with `--relay`, the sink started and the domains routed to it.
fn setup(
    a: &Args,
    dir: &std::path::Path,
    delivered: Delivered,
) -> (tern::config::Config, Arc<dyn Resolver>) {
    let mut cfg = tern::config::Config::default();
    cfg.server.hostname = "bench.test".into();
    cfg.log.level = "warn".into();
    cfg.log.deliveries = dir.join("deliveries.jsonl");
    cfg.queue.path = dir.join("spool");
    cfg.queue.min_free_space = tern::config::values::ByteSize(0);
    cfg.queue.max_messages = 0;
    if a.buffered {
        cfg.queue.durability = tern::config::DurabilityMode::Buffered;
    }
    let resolver: Arc<dyn Resolver> = if a.relay {
        let (_, port, tally) = internet::start(
            internet::zone(1, 1),
            0,
            1,
            0,
            internet::SinkMode::Accept,
            (0, 0),
        );
        *delivered.lock().unwrap() = Some(tally);
        let sink_addr = std::net::SocketAddr::new(internet::sink_ip(0), port);
        for i in 0..100 {
            cfg.routes.push(tern::config::RouteConfig {
                domain: format!("d{i}.example"),
                smarthost: vec![sink_addr.to_string()],
                ..Default::default()
            });
        }
        Arc::new(tern::dns::resolver::HickoryResolver::new(&cfg.dns).unwrap())
    } else {
        cfg.delivery.max_in_flight = 1;
        Arc::new(Unanswered)
    };
    (cfg, resolver)
}

/// A resolver that never answers: delivery waits, and only receiving is
/// measured.
struct Unanswered;

impl Resolver for Unanswered {
    fn mx<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<MxAnswer, LookupError>> {
        Box::pin(std::future::pending())
    }
    fn addresses<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
        Box::pin(std::future::pending())
    }
    fn txt<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<String>, LookupError>> {
        Box::pin(std::future::pending())
    }
}

/// Prints the results of one run.
fn report(
    a: &Args,
    body_len: usize,
    (accepted, elapsed): (Duration, Duration),
    cpu0: &HashMap<&str, f64>,
    cpu1: &HashMap<&str, f64>,
    mut latencies: Vec<Duration>,
) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let used = |k: &str| cpu1.get(k).copied().unwrap_or(0.0) - cpu0.get(k).copied().unwrap_or(0.0);
    let per_msg = |secs: f64| secs * 1e6 / a.messages as f64;
    println!(
        "{} clients, {} messages of {} B via {}, durability {}",
        a.clients,
        a.messages,
        body_len,
        if a.bdat { "BDAT" } else { "DATA" },
        if a.buffered {
            "buffered (no fsync per batch)"
        } else {
            "fsync"
        }
    );
    println!(
        "accepted: {:.0} messages/s ({:.2} s)",
        a.messages as f64 / accepted.as_secs_f64(),
        accepted.as_secs_f64()
    );
    if a.relay {
        println!(
            "relayed (all at the sink): {:.0} messages/s ({:.2} s)",
            a.messages as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    println!(
        "server CPU: {:.1} us/message (SMTP threads {:.1}, queue writer {:.1}, DKIM {:.1}); client CPU {:.1}, sink CPU {:.1} us/message",
        per_msg(used("server") + used("writer") + used("dkim")),
        per_msg(used("server")),
        per_msg(used("writer")),
        per_msg(used("dkim")),
        per_msg(used("client")),
        per_msg(used("sink"))
    );
    println!(
        "end of data to 250: p50 {:?}, p99 {:?}",
        pct(0.50),
        pct(0.99)
    );
}
