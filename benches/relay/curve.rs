//! The CPU-per-message curve (issue 23's figure): the standard relay work
//! (`--messages` of `--size` bytes, `--clients` clients pipelining MAIL,
//! RCPT and DATA, DKIM off) offered at 500, 1,000, 2,000 and 4,000
//! messages a second and flat out, delivered to this benchmark's Rust
//! sinks (without and with CHUNKING offered) and, when Postfix's `smtp-sink` is installed (Debian package
//! `postfix`), to `smtp-sink` receivers on the same addresses. Reports
//! Tern's CPU (user + system, the whole process) per message at each
//! offered rate, the rate achieved end to end and the peak RSS.
//!
//! ```text
//! cargo bench --bench relay -- --curve
//! cargo bench --bench relay -- --curve --messages 10000
//! ```
//!
//! A run ends when Tern's delivery log counts every accepted message as
//! delivered (the same test for both kinds of receivers: `smtp-sink`
//! counts nothing per message).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tern::{Daemon, Setup};
use crate::{Args, inject, internet, procstat};

/// Offered rates; `None` is flat out.
pub(crate) const RATES: [Option<u64>; 5] = [Some(500), Some(1000), Some(2000), Some(4000), None];

/// Shortest time a paced point runs: enough messages for 10 s of it.
const POINT_SECS: u64 = 10;

/// Which receivers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sinks {
    Rust,
    /// The Rust sinks offering CHUNKING too (BDAT, as the big providers).
    RustChunking,
    SmtpSink,
}

/// One point of the curve.
struct Point {
    offered: Option<u64>,
    messages: usize,
    achieved: f64,
    cpu_us: f64,
    peak_rss: u64,
}

/// Runs the curve for each kind of receiver available.
pub fn run(a: &Args) {
    let mut kinds = vec![Sinks::Rust, Sinks::RustChunking];
    match Path::new("/usr/sbin/smtp-sink").exists() {
        true => kinds.push(Sinks::SmtpSink),
        false => println!("(smtp-sink is not installed: apt-get install postfix for its curve)"),
    }
    for kind in kinds {
        let name = match kind {
            Sinks::Rust => "Rust sinks",
            Sinks::RustChunking => "Rust sinks offering CHUNKING",
            Sinks::SmtpSink => "smtp-sink",
        };
        println!(
            "\nreceivers: {name}; {} B messages, {} clients, {} domains on {} hosts, DKIM off",
            a.size, a.clients, a.domains, a.hosts
        );
        println!("offered/s  messages  achieved/s  CPU us/msg  peak RSS MB");
        for rate in RATES {
            let p = point(a, kind, rate);
            println!(
                "{:>9}  {:>8}  {:>10.0}  {:>10.0}  {:>11}",
                p.offered.map_or("max".to_owned(), |r| r.to_string()),
                p.messages,
                p.achieved,
                p.cpu_us,
                p.peak_rss >> 20
            );
        }
    }
}

/// How many messages a point offered at `rate` sends: `--messages`, or
/// 10 s of the rate if that is fewer (at least 1,000).
pub(crate) fn messages_at(a: &Args, rate: Option<u64>) -> u64 {
    rate.map_or(a.messages, |r| a.messages.min(r * POINT_SECS).max(1000))
}

/// One offered rate into fresh receivers and a fresh Tern.
fn point(a: &Args, kind: Sinks, rate: Option<u64>) -> Point {
    let messages = messages_at(a, rate);
    let mode = match kind {
        Sinks::Rust => internet::SinkMode::Accept,
        Sinks::RustChunking => internet::SinkMode::AcceptChunking,
        Sinks::SmtpSink => internet::SinkMode::External,
    };
    let (dns, sink_port, _tally) = internet::start(
        internet::zone(a.domains, a.hosts),
        0,
        a.hosts,
        0,
        mode,
        (messages as usize, 0),
    );
    let sinks: Vec<Child> = match kind {
        Sinks::Rust | Sinks::RustChunking => Vec::new(),
        Sinks::SmtpSink => (0..a.hosts).map(|k| smtp_sink(k, sink_port)).collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::plain(dir.path(), dns, sink_port);
    let daemon = Daemon::start(&setup);
    let pid = daemon.pid();
    let cpu0 = procstat::process_cpu(pid);
    let start = Instant::now();
    let accepted = offer(a, daemon.addr, rate, messages);
    wait_logged(&dir.path().join("deliveries.jsonl"), accepted, &daemon);
    let took = start.elapsed();
    let cpu = procstat::process_cpu(pid) - cpu0;
    let peak_rss = procstat::peak_rss(pid);
    daemon.stop();
    for mut s in sinks {
        let _ = s.kill();
        let _ = s.wait();
    }
    Point {
        offered: rate,
        messages: accepted,
        achieved: accepted as f64 / took.as_secs_f64(),
        cpu_us: cpu * 1e6 / accepted.max(1) as f64,
        peak_rss,
    }
}

/// Offers `messages` single-recipient messages to `target` at `rate` (the
/// run's clients, size and domains); returns how many were accepted.
pub(crate) fn offer(
    a: &Args,
    target: std::net::SocketAddr,
    rate: Option<u64>,
    messages: u64,
) -> usize {
    let load = inject::Load {
        target,
        messages,
        size: a.size,
        domains: a.domains,
        recipients: 1,
        first: 0,
        rate,
    };
    let outcome = inject::runtime().block_on(inject::run(load, a.clients));
    outcome.accepted.len()
}

/// `smtp-sink` on MX host `k`'s address (as Debian's Postfix ships it:
/// PIPELINING offered, every message accepted, 1,024 sessions at most).
fn smtp_sink(k: usize, port: u16) -> Child {
    let at = format!("{}:{port}", internet::sink_addr(k));
    let mut child = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "nobody", "-c", "-m", "1024", "-t", "100", &at, "1024"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start smtp-sink");
    for _ in 0..500 {
        if std::net::TcpStream::connect(&at).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("smtp-sink did not listen on {at}");
}

/// Waits until the delivery log has `n` deliveries (bounded: nothing new
/// for 60 s fails the run).
fn wait_logged(log: &Path, n: usize, daemon: &Daemon) {
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let done = text.matches("\"type\":\"delivery\"").count();
        if done >= n {
            return;
        }
        if done != last {
            (last, since) = (done, Instant::now());
        }
        if since.elapsed() > Duration::from_secs(60) {
            panic!(
                "FAILED: {done} of {n} delivered, none for 60 s\n{}",
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
