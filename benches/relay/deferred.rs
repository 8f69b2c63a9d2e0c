//! The queue-memory run: fill Tern's queue with deferred recipients (every
//! MX host answers `451` to every recipient, so each message is tried
//! once and deferred in the spool for an hour), measure its resident
//! memory per queued recipient, then restart it on that spool and time the
//! recovery (the greeting, the first `250`, every message back), then time
//! the views and the bulk operations over the whole queue (`bulk`), with
//! the delivery attempts the receivers see meanwhile.

use std::time::{Duration, Instant};

use crate::tern::{Daemon, Setup};
use crate::{Args, inject, internet, procstat};

/// Waits until Tern's CPU time stops moving (less than 20 ms used in a
/// second) after the injection: every first attempt made and logged.
/// Bounded: 10 minutes.
fn settle(pid: u32) -> Duration {
    let t = Instant::now();
    let mut last = procstat::process_cpu(pid);
    for _ in 0..600 {
        std::thread::sleep(Duration::from_secs(1));
        let now = procstat::process_cpu(pid);
        if now - last < 0.02 {
            return t.elapsed();
        }
        last = now;
    }
    panic!("tern did not settle within 10 minutes");
}

/// Fills the queue with `recipients` deferred recipients, `a.recipients`
/// per message, and reports memory and recovery.
pub fn run(a: &Args, recipients: u64) {
    let per_message = a.recipients as u64;
    let messages = recipients.div_ceil(per_message);
    let (dns, sink_port, tally) = internet::start(
        internet::zone(a.domains, a.hosts),
        a.dns_port,
        a.hosts,
        a.sink_port,
        internet::SinkMode::Limited {
            per_sec: 1_000_000,
            tempfail_every: 1,
        },
        (0, 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::plain(dir.path(), dns, sink_port);
    // Deferred for an hour: nothing is tried again during the run unless
    // an operator's retry says so.
    let hour = |c: &mut tern::config::Config| {
        c.delivery.retry_first = tern::config::values::Duration::from_secs(3600);
        c.delivery.retry_max = tern::config::values::Duration::from_secs(7200);
    };
    let daemon = Daemon::start_with(&setup, hour);
    let pid = daemon.pid();
    let base_rss = procstat::rss(pid);
    let load_rt = crate::inject::runtime();
    let t = Instant::now();
    let load = inject::Load {
        target: daemon.addr,
        messages,
        size: a.size,
        domains: a.domains,
        recipients: a.recipients,
        first: 0,
        rate: None,
    };
    let outcome = load_rt.block_on(inject::run(load, a.clients));
    let injected = t.elapsed();
    assert_eq!(
        outcome.accepted.len() as u64,
        messages,
        "every message accepted"
    );
    let settled = settle(pid);
    let queued = messages * per_message;
    let full_rss = procstat::rss(pid);
    let peak = procstat::peak_rss(pid);
    let connections = tally.connections.load(std::sync::atomic::Ordering::Relaxed);
    daemon.stop();
    let spool_bytes = dir_size(&dir.path().join("spool"));

    let admin: std::net::SocketAddr = {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        p.local_addr().unwrap()
    };
    let again = Daemon::start_with(&setup, |c| {
        hour(c);
        c.admin.enabled = true;
        c.admin.address = admin;
    });
    let restart = Restart {
        greeting: again.startup,
        first_accept: again.startup + accept_one(again.addr),
        recovered: recovered(&crate::bulk::admin(admin), messages).map(|t| again.startup + t),
    };
    let recovered_rss = procstat::rss(again.pid());
    // Once it has settled (every recovered message handed out to its
    // destination's queue, the memory recovery freed given back).
    settle(again.pid());
    let settled_rss = procstat::rss(again.pid());
    let attempts = &tally.rcpts;
    let relay = format!("127.0.1.1:{sink_port}");
    let bulk = (!a.no_bulk).then(|| crate::bulk::run(&crate::bulk::admin(admin), attempts, &relay));
    again.stop();

    print(
        a,
        (queued, messages, per_message),
        (injected, settled, connections),
        (base_rss, full_rss, peak, (recovered_rss, settled_rss)),
        (restart, spool_bytes),
    );
    if let Some(bulk) = &bulk {
        crate::bulk::print(bulk);
    }
}

/// How soon the restarted daemon did what, from its spawn.
struct Restart {
    greeting: Duration,
    /// The first `250` to a new message.
    first_accept: Duration,
    /// The first queued messages back in the queue (schedulable), half
    /// of them, and every one (the admin API's summary says so).
    recovered: [Duration; 3],
}

/// Sends one message (to a refusing host: it stays queued) and returns
/// how long until its `250`.
fn accept_one(addr: std::net::SocketAddr) -> Duration {
    use std::io::{BufRead, BufReader, Write};
    let t = Instant::now();
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).expect("reply");
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.clone();
            }
        }
    };
    assert!(reply().starts_with("220"));
    for (cmd, want) in [
        ("EHLO bench.example\r\n", "250"),
        ("MAIL FROM:<app@shop.example>\r\n", "250"),
        ("RCPT TO:<first@d0.bench>\r\n", "250"),
        ("DATA\r\n", "354"),
        (
            "Subject: first after the restart\r\n\r\nhello\r\n.\r\n",
            "250",
        ),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(want), "{cmd:?}: {got}");
    }
    let elapsed = t.elapsed();
    let _ = w.write_all(b"QUIT\r\n");
    elapsed
}

/// Waits (bounded: 10 minutes) until the daemon's queue has every queued
/// message back (of `queued`, and the one `accept_one` added); returns
/// how long from now until the first ones, half of them and all were.
fn recovered(admin: &tern::config::AdminConfig, queued: u64) -> [Duration; 3] {
    let t = Instant::now();
    let (mut first, mut half) = (None, None);
    for _ in 0..60_000 {
        let s: tern::admin::types::QueueSummary =
            tern::admin::client::get(admin, "/v1/queue/summary?top=1").expect("summary");
        let back = s.messages.saturating_sub(1);
        if back > 0 {
            first.get_or_insert(t.elapsed());
        }
        if back >= queued / 2 {
            half.get_or_insert(t.elapsed());
        }
        if !s.recovering {
            let all = t.elapsed();
            return [first.unwrap_or(all), half.unwrap_or(all), all];
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the spool was not recovered within 10 minutes");
}

#[allow(clippy::type_complexity)]
fn print(
    a: &Args,
    (queued, messages, per_message): (u64, u64, u64),
    (injected, settled, connections): (Duration, Duration, u64),
    (base_rss, full_rss, peak, (recovered_rss, settled_rss)): (u64, u64, u64, (u64, u64)),
    (restart, spool_bytes): (Restart, u64),
) {
    let per = |rss: u64, base: u64| rss.saturating_sub(base) as f64 / queued as f64;
    println!(
        "\ndeferred queue: {queued} recipients in {messages} messages of {} B ({per_message} recipients each, {} domains)",
        a.size, a.domains
    );
    println!(
        "injected in {:.1} s, first attempts done {:.1} s later ({connections} connections, every recipient answered 451)",
        injected.as_secs_f64(),
        settled.as_secs_f64()
    );
    println!(
        "RSS: {} MB at start, {} MB with the queue full (peak {} MB): {:.0} bytes per queued recipient",
        base_rss >> 20,
        full_rss >> 20,
        peak >> 20,
        per(full_rss, base_rss)
    );
    println!(
        "restart with {queued} recipients queued: greeting {:.2} s after spawn, first 250 {:.2} s, first queued messages back {:.2} s, half {:.2} s, every one {:.2} s; RSS then {} MB ({:.0} bytes per queued recipient), settled {} MB ({:.0} bytes)",
        restart.greeting.as_secs_f64(),
        restart.first_accept.as_secs_f64(),
        restart.recovered[0].as_secs_f64(),
        restart.recovered[1].as_secs_f64(),
        restart.recovered[2].as_secs_f64(),
        recovered_rss >> 20,
        per(recovered_rss, base_rss),
        settled_rss >> 20,
        per(settled_rss, base_rss)
    );
    println!("spool on disk: {} MB", spool_bytes >> 20);
    println!(
        "goals: < 300 bytes of RAM per queued deferred recipient; recovery of 1,000,000 in < 10 s"
    );
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
