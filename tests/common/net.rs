//! A fake internet for one test: its own 127.X.Y.0/24 with a DNS server on
//! .53 (zones as text, `{net}` standing for "127.X.Y"), SMTP sinks on .10
//! and up (all on one port, Tern's `delivery.port`), egress sources .20
//! and .21; plus Tern itself (the daemon of `tern run`) on 127.0.0.1, a
//! plain SMTP client to submit with, and the delivery log's records.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tern::config::values::Duration as Span;
use tern::config::{Config, PoolConfig, PoolMember, SourceConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::dns::TestDns;
use super::sink::{Sink, SinkOptions};

/// The second octet of this process's networks; the third counts tests.
static NEXT_NET: AtomicU8 = AtomicU8::new(1);

/// One test's network.
pub struct Net {
    /// "127.X.Y".
    pub prefix: String,
    /// The DNS server.
    pub dns: TestDns,
    /// The port every sink listens on.
    pub port: u16,
    /// Where the spool and the delivery log go.
    pub dir: tempfile::TempDir,
}

impl Net {
    /// A network whose DNS serves the zone `test.` from `zone` (records
    /// only: the SOA and NS are added).
    pub async fn new(zone: &str) -> Self {
        let x = 100 + (std::process::id() % 100) as u8;
        let y = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("127.{x}.{y}");
        let text = format!(
            "$TTL 300\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n@ IN NS ns.test.\nns IN A {prefix}.53\n{}\n",
            zone.replace("{net}", &prefix)
        );
        let dns_ip: IpAddr = format!("{prefix}.53").parse().unwrap();
        let dns = TestDns::start(dns_ip, &[("test.", &text)]).await;
        // A port free on .10 is free on the other addresses of the network.
        let probe = TcpListener::bind((Self::ip_in(&prefix, 10), 0))
            .await
            .unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        Self {
            prefix,
            dns,
            port,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn ip_in(prefix: &str, last: u8) -> IpAddr {
        format!("{prefix}.{last}").parse().unwrap()
    }

    /// The address `127.X.Y.last`.
    pub fn ip(&self, last: u8) -> IpAddr {
        Self::ip_in(&self.prefix, last)
    }

    /// Starts a sink on `.last`.
    pub async fn sink(&self, last: u8) -> Sink {
        self.sink_with(last, SinkOptions::default()).await
    }

    /// Starts a sink on `.last` with options.
    pub async fn sink_with(&self, last: u8, opts: SinkOptions) -> Sink {
        Sink::start_with(SocketAddr::new(self.ip(last), self.port), opts).await
    }

    /// Tern's config for this network: DNS here, MX port the sinks' port,
    /// sources `a` (.20) and `b` (.21), pool `default` = `a`; retries
    /// after 10 minutes; the delivery log in the test directory.
    pub fn config(&self) -> Config {
        let mut c = super::config(self.dir.path());
        c.dns.nameservers = vec![self.dns.addr.to_string().try_into().unwrap()];
        c.dns.timeout = Span::from_secs(10);
        // Loopback MX hosts are the test's sinks; `.99` stands for a
        // prohibited network.
        c.dns.prohibited_targets = [&format!("{}.99/32", self.prefix), "0.0.0.0/8", "::/128"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        c.delivery.port = self.port;
        c.delivery.retry_first = Span::from_secs(600);
        c.delivery.retry_max = Span::from_secs(1200);
        for (name, last) in [("a", 20), ("b", 21)] {
            c.sources.push(SourceConfig {
                name: name.into(),
                address: Some(self.ip(last)),
                ehlo: Some(format!("{name}.tern.test")),
                proxy: None,
                warmup: None,
                shared: None,
            });
        }
        c.pools = vec![pool("default", &[("a", 1)])];
        c.server.shutdown_grace = Span::from_secs(1);
        c
    }

    /// The records of the delivery log (read after Tern stopped).
    pub fn log(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("deliveries.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The queued recipients and their states (read after Tern stopped).
    pub fn spool(&self) -> Vec<(String, queue::RecipientState)> {
        let (q, _) = super::reopen(self.config().queue.options());
        let mut out = Vec::new();
        for m in q.page(None, usize::MAX) {
            for (r, s) in m.envelope.recipients.iter().zip(m.statuses.iter()) {
                out.push((r.address.to_string(), s.state));
            }
        }
        out
    }

    /// The shaping actions Tern keeps in its spool (read while it runs, or
    /// after).
    pub fn actions(&self) -> Vec<tern::shaping::rules::Action> {
        let spool = self.dir.path().join("spool");
        queue::SpoolSnapshot::read(&spool)
            .ok()
            .and_then(|(s, _)| s.state(tern::state::ACTIONS))
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default()
    }

    /// Stops the DNS server.
    pub async fn stop(self) {
        self.dns.stop().await;
    }
}

/// A pool of weighted sources.
pub fn pool(name: &str, members: &[(&str, u32)]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        sources: members
            .iter()
            .map(|(s, w)| PoolMember {
                source: (*s).into(),
                weight: *w,
            })
            .collect(),
    }
}

/// Tern running in this process, as `tern run` runs it.
pub struct Tern {
    /// Its SMTP listener.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Tern {
    /// Starts Tern on a fresh port of 127.0.0.1.
    pub async fn start(cfg: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, cfg).await
    }

    /// Starts Tern on `listener`.
    pub async fn start_on(listener: TcpListener, mut cfg: Config) -> Self {
        let addr = listener.local_addr().unwrap();
        cfg.listeners[0].address = addr;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tern::daemon::run_with_listeners(
            cfg,
            vec![listener],
            async {
                let _ = stopped.await;
            },
        ));
        Self { addr, stop, task }
    }

    /// Starts Tern on a fresh port of 127.0.0.1, on a queue opened here
    /// with `faults` to inject disk failures into; returns the queue too.
    pub async fn start_with_faults(
        mut cfg: Config,
        faults: std::sync::Arc<queue::faults::Faults>,
    ) -> (Self, std::sync::Arc<queue::Queue>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        cfg.listeners[0].address = addr;
        let mut opts = cfg.queue.options();
        opts.faults = Some(faults);
        let (q, _) = tokio::task::spawn_blocking(move || queue::Queue::open(opts))
            .await
            .unwrap()
            .unwrap();
        let q = std::sync::Arc::new(q);
        let resolver: std::sync::Arc<dyn tern::dns::resolver::Resolver> =
            std::sync::Arc::new(tern::dns::resolver::HickoryResolver::new(&cfg.dns).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tern::daemon::run_on_queue(
            cfg,
            vec![listener],
            resolver,
            q.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        (Self { addr, stop, task }, q)
    }

    /// Starts Tern with one listener per `cfg.listeners` entry, each on a
    /// fresh port of 127.0.0.1; returns it and every listener's address
    /// (`addr` is the first).
    pub async fn start_many(mut cfg: Config) -> (Self, Vec<SocketAddr>) {
        let mut bound = Vec::new();
        let mut addrs = Vec::new();
        for l in &mut cfg.listeners {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.address = listener.local_addr().unwrap();
            addrs.push(l.address);
            bound.push(listener);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tern::daemon::run_with_listeners(cfg, bound, async {
            let _ = stopped.await;
        }));
        let tern = Self {
            addr: addrs[0],
            stop,
            task,
        };
        (tern, addrs)
    }

    /// Stops Tern and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A minimal SMTP client, independent of Tern's: submits one message
/// (dot-stuffed here) and returns the final reply. `from` may be "".
pub async fn submit(addr: SocketAddr, from: &str, to: &[&str], body: &[u8]) -> String {
    submit_with(addr, &format!("MAIL FROM:<{from}>"), to, body).await
}

/// Like [`submit`] with a full MAIL command and RCPT parameters appended
/// after a space in each `to` (for example `"a@b NOTIFY=FAILURE"`).
pub async fn submit_with(addr: SocketAddr, mail: &str, to: &[&str], body: &[u8]) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut s = BufReader::new(stream);
    assert!(read_reply(&mut s).await.starts_with("220"));
    let mut cmds = vec!["EHLO client.test".to_owned(), mail.to_owned()];
    for t in to {
        let (addr, params) = t.split_once(' ').unwrap_or((t, ""));
        cmds.push(format!(
            "RCPT TO:<{addr}>{}{params}",
            if params.is_empty() { "" } else { " " }
        ));
    }
    cmds.push("DATA".into());
    for c in &cmds {
        s.get_mut()
            .write_all(format!("{c}\r\n").as_bytes())
            .await
            .unwrap();
        let r = read_reply(&mut s).await;
        assert!(r.starts_with('2') || r.starts_with("354"), "{c} -> {r}");
    }
    s.get_mut().write_all(&stuff(body)).await.unwrap();
    let done = read_reply(&mut s).await;
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    let _ = read_reply(&mut s).await;
    done
}

/// Submits `n` messages over one connection, message `i` to `to(i)`
/// with `headers` (CRLF-terminated lines) before a Subject naming `i`;
/// each must be accepted.
pub async fn submit_batch(addr: SocketAddr, n: usize, to: impl Fn(usize) -> String, headers: &str) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut s = BufReader::new(stream);
    assert!(read_reply(&mut s).await.starts_with("220"));
    s.get_mut().write_all(b"EHLO batch.test\r\n").await.unwrap();
    assert!(read_reply(&mut s).await.starts_with("250"));
    for i in 0..n {
        let cmds = format!(
            "MAIL FROM:<app@shop.test>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            to(i)
        );
        s.get_mut().write_all(cmds.as_bytes()).await.unwrap();
        for _ in 0..3 {
            let r = read_reply(&mut s).await;
            assert!(r.starts_with('2') || r.starts_with("354"), "{r}");
        }
        let body = format!("{headers}Subject: {i}\r\n\r\nmessage {i}\r\n.\r\n");
        s.get_mut().write_all(body.as_bytes()).await.unwrap();
        let r = read_reply(&mut s).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
}

/// One SMTP reply, all its lines (at most 100).
async fn read_reply(s: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    for _ in 0..100 {
        let mut line = String::new();
        if s.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    all
}

/// Dot-stuffs `body` (which ends with CRLF) and appends the terminator.
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    for line in body.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Moves tokio's clock (and so Tern's) forward by `d` at once, firing the
/// timers that come due, then lets it run in real time again.
///
/// Tests jump only at chosen points, with nothing else waiting on time:
/// an auto-advancing paused clock would also jump while Tern waits for
/// its spool's sync thread or for a loopback packet, and fire timeouts
/// that real time never would.
pub async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

/// Waits at most `limit` for `f` to hold, checking a thousand times (at
/// least 10 ms apart).
pub async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let step = (limit / 1000).max(Duration::from_millis(10));
    for _ in 0..1000 {
        if f() {
            return true;
        }
        tokio::time::sleep(step).await;
    }
    f()
}

/// Records of `kind` for `recipient` in `log`.
pub fn records<'a>(
    log: &'a [serde_json::Value],
    kind: &str,
    recipient: &str,
) -> Vec<&'a serde_json::Value> {
    log.iter()
        .filter(|r| r["type"] == kind && r["recipient"] == recipient)
        .collect()
}

/// The zone most delivery tests use (`{net}` is the test's network):
/// - alpha.test: MX mx.alpha.test (.10)
/// - implicit.test: no MX, an A record (.11)
/// - nullmx.test: `MX 0 .`
/// - backup.test: MX 10 at .12 (nothing listens), MX 20 at .10
/// - sender.test: MX at .13 (where bounces go)
/// - loop.test: MX at .99 (a prohibited network)
/// - tls.test: MX at .14; slow.test: MX at .15; flakydns.test: MX at .10
/// - anything else under test.: NXDOMAIN
pub const ZONE: &str = "
alpha IN MX 10 mx.alpha
mx.alpha IN A {net}.10
implicit IN A {net}.11
nullmx IN MX 0 .
backup IN MX 10 dead.backup
backup IN MX 20 live.backup
dead.backup IN A {net}.12
live.backup IN A {net}.10
sender IN MX 10 mx.sender
mx.sender IN A {net}.13
loop IN MX 10 mx.loop
mx.loop IN A {net}.99
tls IN MX 10 mx.tls
mx.tls IN A {net}.14
slow IN MX 10 mx.slow
mx.slow IN A {net}.15
flakydns IN MX 10 mx.alpha
";

/// How long a test waits (real time) for something due now.
pub const WAIT: Duration = Duration::from_secs(30);

/// Message data as text, for assertions.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
