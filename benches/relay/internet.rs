//! The fake internet of the relay benchmark, on loopback: a DNS server
//! whose zone `bench.` has N recipient domains `d<i>.bench`, each with an
//! MX record naming one of K hosts `mx<k>.bench` at 127.0.1.(1+k); and K
//! SMTP sinks on those addresses that accept (or, for the deferred-queue
//! run, answer every connection `421`), count each message by the
//! `X-Bench-Id` header the injector put in it, and can keep copies.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The address of sink `k` (and of MX host `mx<k>.bench`).
pub fn sink_ip(k: usize) -> IpAddr {
    IpAddr::from([127, 0, 1, 1 + k as u8])
}

/// The DNS server's address (its port chosen at start, unless given).
pub fn dns_ip() -> IpAddr {
    IpAddr::from([127, 0, 1, 53])
}

/// The zone: `domains` MX records spread over `hosts` MX hosts.
/// The address of sink `k` (MX host `mx{k}`).
pub fn sink_addr(k: usize) -> std::net::IpAddr {
    sink_ip(k)
}

pub fn zone(domains: usize, hosts: usize) -> String {
    let mut z = String::from(
        "$TTL 3600\n@ IN SOA ns.bench. hostmaster.bench. 1 3600 600 86400 300\n@ IN NS ns.bench.\nns IN A 127.0.1.53\n",
    );
    for k in 0..hosts {
        z.push_str(&format!("mx{k} IN A {}\n", sink_ip(k)));
    }
    for i in 0..domains {
        z.push_str(&format!("d{i} IN MX 10 mx{}\n", i % hosts));
    }
    z
}

/// How the sinks answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Accept every message.
    Accept,
    /// Accept every message, offering CHUNKING (RFC 3030) too, as the
    /// big mailbox providers do: BDAT carries the message.
    AcceptChunking,
    /// No sinks here: the port is left free for receivers of another
    /// kind (Postfix's `smtp-sink`), which the run starts itself.
    External,
    /// Greet every connection with `421 4.3.2` and close: every recipient
    /// is deferred.
    Refuse,
    /// Accept at most `per_sec` messages a second over all sinks (the
    /// final reply waits for its turn), and answer every `tempfail_every`th
    /// recipient `451 4.7.1` (0: none).
    Limited {
        /// Messages per second over all sinks.
        per_sec: u32,
        /// One recipient in this many is deferred.
        tempfail_every: u32,
    },
    /// The soak's receivers: accept, except that message ids ending in
    /// 50 (one in 100) are refused `550 5.1.1` at the end of the data
    /// (bounced), and ids ≡ 7 mod 20 (one in 20) get `451 4.7.1` at their
    /// first try (deferred, then accepted). Bounces (null sender) arriving
    /// back are counted in `dsns`.
    Soak,
}

/// What a soak sink answers message `id` at the end of its data.
fn soak_verdict(id: usize, tally: &Tally) -> &'static [u8] {
    if id % 100 == 50 {
        tally.refusals.fetch_add(1, Ordering::Relaxed);
        if bump(&tally.bounced[id]) > 0 {
            tally.repeat();
        }
        return b"550 5.1.1 sink: no such user\r\n";
    }
    if id % 20 == 7 && bump(&tally.tried[id]) == 0 {
        tally.deferrals.fetch_add(1, Ordering::Relaxed);
        return b"451 4.7.1 sink: try again later\r\n";
    }
    tally.record_id(id);
    b"250 2.0.0 ok\r\n"
}

/// Adds one to a saturating per-id counter; returns the value before.
fn bump(slot: &std::sync::atomic::AtomicU8) -> u8 {
    slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(n.saturating_add(1))
    })
    .unwrap_or(u8::MAX)
}

/// What the sinks saw, shared with the benchmark.
pub struct Tally {
    /// Messages accepted, in all.
    pub messages: AtomicU64,
    /// Connections, in all.
    pub connections: AtomicU64,
    /// Per `X-Bench-Id`: how many times it arrived.
    pub seen: Vec<std::sync::atomic::AtomicU8>,
    /// Per `X-Bench-Id`: milliseconds from `started` to its first arrival.
    pub arrived_ms: Vec<AtomicU64>,
    /// Messages without a readable `X-Bench-Id` (should stay 0).
    pub unidentified: AtomicU64,
    /// Soak: per id, how many times it was refused permanently.
    pub bounced: Vec<std::sync::atomic::AtomicU8>,
    /// Soak: per id of the deferred share, how many times it was offered.
    pub tried: Vec<std::sync::atomic::AtomicU8>,
    /// Soak: bounces (null reverse path) received.
    pub dsns: AtomicU64,
    /// Soak: `550` and `451` answers given at the end of the data.
    pub refusals: AtomicU64,
    pub deferrals: AtomicU64,
    /// Milliseconds from `started` of each arrival of an id already seen.
    pub repeats_ms: Mutex<Vec<u64>>,
    /// Copies of the first `capture` messages (data as received).
    pub captured: Mutex<Vec<Vec<u8>>>,
    capture: usize,
    /// Messages accepted per (sink, second since the start).
    pub per_second: Mutex<std::collections::HashMap<(usize, u64), u32>>,
    /// When the sinks started (for `per_second`).
    pub started: std::time::Instant,
    /// RCPTs answered so far (for the tempfail share; delivery attempts
    /// when every recipient is deferred).
    pub rcpts: AtomicU64,
    /// The next free acceptance slot under a `Limited` mode.
    next_slot: Mutex<tokio::time::Instant>,
}

impl Tally {
    /// Forgets every count (between runs).
    pub fn reset(&self) {
        self.messages.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.unidentified.store(0, Ordering::Relaxed);
        for s in &self.seen {
            s.store(0, Ordering::Relaxed);
        }
        for a in &self.arrived_ms {
            a.store(0, Ordering::Relaxed);
        }
        for s in self.bounced.iter().chain(&self.tried) {
            s.store(0, Ordering::Relaxed);
        }
        for c in [&self.dsns, &self.refusals, &self.deferrals] {
            c.store(0, Ordering::Relaxed);
        }
        self.repeats_ms.lock().unwrap().clear();
        self.captured.lock().unwrap().clear();
    }

    fn new(ids: usize, capture: usize) -> Arc<Self> {
        Arc::new(Self {
            messages: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            seen: (0..ids)
                .map(|_| std::sync::atomic::AtomicU8::new(0))
                .collect(),
            arrived_ms: (0..ids).map(|_| AtomicU64::new(0)).collect(),
            unidentified: AtomicU64::new(0),
            bounced: (0..ids)
                .map(|_| std::sync::atomic::AtomicU8::new(0))
                .collect(),
            tried: (0..ids)
                .map(|_| std::sync::atomic::AtomicU8::new(0))
                .collect(),
            dsns: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            deferrals: AtomicU64::new(0),
            repeats_ms: Mutex::new(Vec::new()),
            captured: Mutex::new(Vec::new()),
            capture,
            per_second: Mutex::new(std::collections::HashMap::new()),
            started: std::time::Instant::now(),
            rcpts: AtomicU64::new(0),
            next_slot: Mutex::new(tokio::time::Instant::now()),
        })
    }

    /// Under a rate, when this message may be answered.
    fn slot(&self, per_sec: u32) -> tokio::time::Instant {
        let gap = std::time::Duration::from_secs(1) / per_sec.max(1);
        let mut next = self.next_slot.lock().unwrap();
        let now = tokio::time::Instant::now();
        let at = (*next).max(now);
        *next = at + gap;
        at
    }

    fn record(&self, sink: usize, data: &[u8]) {
        let second = self.started.elapsed().as_secs();
        *self
            .per_second
            .lock()
            .unwrap()
            .entry((sink, second))
            .or_insert(0) += 1;
        match bench_id(data).filter(|id| *id < self.seen.len()) {
            Some(id) => self.record_id(id),
            None => {
                self.unidentified.fetch_add(1, Ordering::Relaxed);
                self.messages.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.capture > 0 {
            let mut c = self.captured.lock().unwrap();
            if c.len() < self.capture {
                c.push(data.to_vec());
            }
        }
    }

    /// Notes when an id arrived again.
    fn repeat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.repeats_ms.lock().unwrap().push(ms);
    }

    /// Counts an arrival of message `id` (below `seen.len()`).
    fn record_id(&self, id: usize) {
        if bump(&self.seen[id]) > 0 {
            self.repeat();
        }
        let ms = self.started.elapsed().as_millis().max(1) as u64;
        let _ = self.arrived_ms[id].compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `X-Bench-Id` value in the header section.
fn bench_id(data: &[u8]) -> Option<usize> {
    let head_end = memchr::memmem::find(data, b"\r\n\r\n").unwrap_or(data.len());
    let at = memchr::memmem::find(&data[..head_end], b"\r\nX-Bench-Id: ")? + 14;
    let end = data[at..].iter().position(|b| *b == b'\r')? + at;
    std::str::from_utf8(&data[at..end]).ok()?.parse().ok()
}

/// Starts the DNS server and `hosts` sinks on port `sink_port` (0: a free
/// one) on a thread named `bench-net`; returns the DNS address, the sink
/// port and the tally. The thread lives until the process ends.
pub fn start(
    zone_text: String,
    dns_port: u16,
    hosts: usize,
    sink_port: u16,
    mode: SinkMode,
    (ids, capture): (usize, usize),
) -> (SocketAddr, u16, Arc<Tally>) {
    let tally = Tally::new(ids, capture);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = tally.clone();
    std::thread::Builder::new()
        .name("bench-net".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let dns = crate::dns::TestDns::start_at(
                    SocketAddr::new(dns_ip(), dns_port),
                    &[("bench.", &zone_text)],
                )
                .await;
                let port = serve_sinks(hosts, sink_port, mode, t).await;
                tx.send((dns.addr, port)).unwrap();
                std::future::pending::<()>().await;
            })
        })
        .unwrap();
    let (dns, port) = rx.recv().expect("the fake internet starts");
    (dns, port, tally)
}

/// Binds every sink on one port (free on all of them) and serves them.
async fn serve_sinks(hosts: usize, port: u16, mode: SinkMode, tally: Arc<Tally>) -> u16 {
    let first = TcpListener::bind((sink_ip(0), port))
        .await
        .expect("bind sink");
    let port = first.local_addr().unwrap().port();
    if mode == SinkMode::External {
        return port; // `first` is dropped: the port is free again
    }
    let mut listeners = vec![first];
    for k in 1..hosts {
        listeners.push(
            TcpListener::bind((sink_ip(k), port))
                .await
                .expect("bind sink"),
        );
    }
    for (k, l) in listeners.into_iter().enumerate() {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tally.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(session(s, k, mode, tally.clone()));
            }
        });
    }
    port
}

/// `BDAT <size> [LAST]`: the size and whether it is the last chunk.
fn bdat_args(line: &[u8]) -> Option<(usize, bool)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace().skip(1);
    let size = words.next()?.parse().ok()?;
    let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
    Some((size, last))
}

/// One SMTP session: pipelining-aware (replies are written when the input
/// is drained), DATA read line by line and unstuffed.
/// Reads message data up to the lone dot, unstuffed, into `data`; false
/// if the connection ended first.
async fn read_data(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> bool {
    data.clear();
    loop {
        line.clear();
        if r.read_until(b'\n', line).await.unwrap_or(0) == 0 {
            return false;
        }
        if line == b".\r\n" {
            return true;
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

async fn session(s: TcpStream, sink: usize, mode: SinkMode, tally: Arc<Tally>) {
    let _ = s.set_nodelay(true);
    let (r, mut w) = s.into_split();
    if mode == SinkMode::Refuse {
        let _ = w.write_all(b"421 4.3.2 sink busy, try later\r\n").await;
        return;
    }
    let mut r = BufReader::with_capacity(64 << 10, r);
    let (mut line, mut out) = (Vec::new(), b"220 sink ESMTP\r\n".to_vec());
    let mut data = Vec::with_capacity(8 << 10);
    let mut rcpts_ok = 0u32;
    let mut null_sender = false;
    loop {
        if r.buffer().is_empty() && !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        line.clear();
        if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        match line.get(..4).map(|c| c.to_ascii_uppercase()).as_deref() {
            Some(b"EHLO") if mode == SinkMode::AcceptChunking => out.extend_from_slice(
                b"250-sink\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n",
            ),
            Some(b"EHLO") => out.extend_from_slice(
                b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n",
            ),
            Some(b"BDAT") if mode == SinkMode::AcceptChunking => {
                let Some((size, last)) = bdat_args(&line) else {
                    out.extend_from_slice(b"501 5.5.4 BDAT needs a size\r\n");
                    continue;
                };
                let start = data.len();
                data.resize(start + size, 0);
                if r.read_exact(&mut data[start..]).await.is_err() {
                    return;
                }
                match (last, rcpts_ok) {
                    (false, _) => out.extend_from_slice(b"250 2.0.0 chunk ok\r\n"),
                    (true, 0) => out.extend_from_slice(b"554 5.5.1 no valid recipients\r\n"),
                    (true, _) => {
                        tally.record(sink, &data);
                        out.extend_from_slice(b"250 2.0.0 ok\r\n");
                    }
                }
                if last {
                    data.clear();
                    rcpts_ok = 0;
                }
            }
            Some(b"DATA") if rcpts_ok == 0 => {
                out.extend_from_slice(b"554 5.5.1 no valid recipients\r\n")
            }
            Some(b"DATA") => {
                rcpts_ok = 0;
                out.extend_from_slice(b"354 go\r\n");
                if w.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                if !read_data(&mut r, &mut line, &mut data).await {
                    return;
                }
                if let SinkMode::Limited { per_sec, .. } = mode {
                    tokio::time::sleep_until(tally.slot(per_sec)).await;
                }
                if mode != SinkMode::Soak {
                    tally.record(sink, &data);
                    out.extend_from_slice(b"250 2.0.0 ok\r\n");
                    continue;
                }
                match bench_id(&data).filter(|id| *id < tally.seen.len()) {
                    Some(id) if !null_sender => out.extend_from_slice(soak_verdict(id, &tally)),
                    _ if null_sender => {
                        tally.dsns.fetch_add(1, Ordering::Relaxed);
                        out.extend_from_slice(b"250 2.0.0 ok\r\n")
                    }
                    _ => {
                        tally.unidentified.fetch_add(1, Ordering::Relaxed);
                        out.extend_from_slice(b"250 2.0.0 ok\r\n")
                    }
                }
            }
            Some(b"RCPT") => {
                let n = tally.rcpts.fetch_add(1, Ordering::Relaxed) + 1;
                match mode {
                    SinkMode::Limited { tempfail_every, .. }
                        if tempfail_every > 0 && n.is_multiple_of(u64::from(tempfail_every)) =>
                    {
                        out.extend_from_slice(b"451 4.7.1 sink says later\r\n")
                    }
                    _ => {
                        rcpts_ok += 1;
                        out.extend_from_slice(b"250 ok\r\n")
                    }
                }
            }
            Some(b"MAIL") | Some(b"RSET") => {
                rcpts_ok = 0;
                data.clear();
                null_sender = memchr::memmem::find(&line, b":<>").is_some();
                out.extend_from_slice(b"250 ok\r\n")
            }
            Some(b"QUIT") => {
                let _ = w.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => out.extend_from_slice(b"250 ok\r\n"),
        }
    }
}
