//! The load: C clients, each on one connection for as many messages as it
//! gets, pipelining MAIL, RCPT and DATA, then the body; message n goes to
//! `u<n>@d<n % domains>.bench` (or R recipients of that domain) and
//! carries `X-Bench-Id: n`, by which the sinks count it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// What to send.
#[derive(Clone)]
pub struct Load {
    /// Where.
    pub target: SocketAddr,
    /// Messages in all.
    pub messages: u64,
    /// Message size in bytes (headers included).
    pub size: usize,
    /// Recipient domains.
    pub domains: usize,
    /// Recipients per message (all in the message's domain).
    pub recipients: usize,
    /// The first message's id (several loads side by side count apart).
    pub first: u64,
    /// Offered rate in messages a second (message n is sent no sooner
    /// than n / rate seconds after the start); `None`: as fast as the
    /// clients go.
    pub rate: Option<u64>,
}

/// What the clients saw.
#[derive(Default)]
pub struct Outcome {
    /// Ids answered 250 after the data.
    pub accepted: Vec<u64>,
    /// Messages answered 4xx (deferred at the door).
    pub deferred: u64,
    /// MAIL-to-250 latencies of the accepted messages.
    pub latencies: Vec<Duration>,
}

/// The message body (after its per-message headers): `size` bytes in all.
pub fn filler(size: usize) -> Vec<u8> {
    let mut b = b"From: Shop <app@shop.example>\r\nSubject: relay benchmark\r\nDate: Mon, 23 Nov 2026 06:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
    while b.len() + 80 < size {
        b.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    b
}

/// The load generator's runtime: one worker thread named `bench-load`,
/// so its CPU time is counted apart from Tern's and the sinks'.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `clients` clients until `load.messages` are sent.
pub async fn run(load: Load, clients: usize) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let body = Arc::new(filler(load.size));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(load.clone(), next.clone(), body.clone(), start)))
        .collect();
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await.expect("client task");
        all.accepted.extend(o.accepted);
        all.deferred += o.deferred;
        all.latencies.extend(o.latencies);
    }
    all
}

/// Reads one reply; returns its code (0 if the connection closed).
pub async fn reply(r: &mut BufReader<OwnedReadHalf>, line: &mut String) -> u16 {
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

async fn connect(
    target: SocketAddr,
) -> (BufReader<OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf) {
    let stream = TcpStream::connect(target)
        .await
        .expect("connect to the MTA");
    stream.set_nodelay(true).unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    assert_eq!(reply(&mut r, &mut line).await, 220, "greeting: {line}");
    w.write_all(b"EHLO load.bench\r\n").await.unwrap();
    assert_eq!(reply(&mut r, &mut line).await, 250, "EHLO: {line}");
    (r, w)
}

async fn client(
    load: Load,
    next: Arc<AtomicU64>,
    body: Arc<Vec<u8>>,
    start: tokio::time::Instant,
) -> Outcome {
    let (mut r, mut w) = connect(load.target).await;
    let mut out = Outcome::default();
    let mut line = String::new();
    let mut wire = Vec::with_capacity(body.len() + 512);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= load.messages {
            break;
        }
        if let Some(rate) = load.rate {
            let due = start + std::time::Duration::from_secs_f64(n as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        let n = load.first + n;
        let domain = n % load.domains as u64;
        wire.clear();
        wire.extend_from_slice(b"MAIL FROM:<app@shop.example>\r\n");
        for k in 0..load.recipients {
            wire.extend_from_slice(format!("RCPT TO:<u{n}.{k}@d{domain}.bench>\r\n").as_bytes());
        }
        wire.extend_from_slice(b"DATA\r\n");
        let t = Instant::now();
        w.write_all(&wire).await.unwrap();
        let mut ok = true;
        for _ in 0..1 + load.recipients {
            ok &= reply(&mut r, &mut line).await == 250;
        }
        if reply(&mut r, &mut line).await != 354 || !ok {
            panic!("envelope refused: {line}");
        }
        wire.clear();
        wire.extend_from_slice(
            format!("To: <u{n}.0@d{domain}.bench>\r\nMessage-ID: <{n}@shop.example>\r\nX-Bench-Id: {n}\r\n").as_bytes(),
        );
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b".\r\n");
        w.write_all(&wire).await.unwrap();
        match reply(&mut r, &mut line).await {
            250 => {
                out.latencies.push(t.elapsed());
                out.accepted.push(n);
            }
            400..=499 => out.deferred += 1,
            _ => panic!("message {n} refused: {line}"),
        }
    }
    let _ = w.write_all(b"QUIT\r\n").await;
    out
}
