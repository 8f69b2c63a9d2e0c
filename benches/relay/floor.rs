//! The floor: the least a store-and-forward relay can do for the relay
//! benchmark's work on this machine, to tell Tern's own cost per message
//! from the cost of the work itself.
//!
//! ```text
//! cargo bench --bench relay -- --floor                 # 500, 1,000, 2,000, 4,000/s and flat out
//! cargo bench --bench relay -- --floor --messages 10000
//! cargo bench --bench relay -- --floor --rate 3500     # one offered rate
//! ```
//!
//! The floor relay runs in a child process (this benchmark binary started
//! again with `--floor-serve`), on the same thread layout as Tern on this
//! VM: one tokio worker and one writer thread. It receives SMTP with
//! PIPELINING, appends each message (envelope and the data as received)
//! to one file and answers `250` only after an `fdatasync` (group
//! commit: one sync for whatever waits), routes the recipients' domain
//! through Tern's own router and resolver (cached), and sends the message
//! on one of 10 kept-open connections per MX host (MAIL, RCPT and DATA
//! pipelined, then the data as received), then appends an outcome record
//! that the next message's sync carries (or a sync within 50 ms), as Tern
//! does. It does nothing else: no checks, no headers, no DKIM, no log, no
//! metrics, no retries, no limits, no TLS, no second recipient domain. It
//! is not an MTA; it is a measuring stick.
//!
//! A second variant syncs on the calling task instead of the writer
//! thread, blocking the runtime's one worker meanwhile: no MTA can afford
//! that under load (it tops out at about 3,500/s here, and a slow disk
//! would stall every session), but it bounds what the hop to a writer
//! thread costs at moderate load.
//!
//! Each offered rate runs the floor, the inline-sync floor, then Tern, on a fresh fake internet
//! (the Rust sinks) with the same load, and reports both CPU figures per
//! message (user + system, the whole process, from /proc).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::tern::{Daemon, Setup};
use crate::{Args, inject, internet, procstat};

/// Connections kept open per MX host (Tern's default `connection_limit`).
const CONNECTIONS: usize = 10;
/// Longest an outcome waits for the sync of a new message.
const OUTCOME_SYNC: Duration = Duration::from_millis(50);

/// Runs each offered rate against the floor, then against Tern.
pub fn run(a: &Args) {
    println!(
        "floor relay against Tern: {} B messages, {} clients, {} domains on {} hosts, Rust sinks, DKIM off",
        a.size, a.clients, a.domains, a.hosts
    );
    println!("(us: CPU per message; /s: achieved end to end)");
    println!(
        "offered/s  messages  floor us     /s  inline-sync floor us     /s  Tern us     /s  Tern - floor"
    );
    let rates = match a.rate {
        Some(r) => vec![Some(r)],
        None => crate::curve::RATES.to_vec(),
    };
    for rate in rates {
        let messages = crate::curve::messages_at(a, rate);
        let floor = point(a, rate, messages, Target::Floor);
        let inline = point(a, rate, messages, Target::FloorInline);
        let tern = point(a, rate, messages, Target::Tern);
        println!(
            "{:>9}  {:>8}  {:>8.0}  {:>5.0}  {:>20.0}  {:>5.0}  {:>7.0}  {:>5.0}  {:>12.0}",
            rate.map_or("max".to_owned(), |r| r.to_string()),
            messages,
            floor.0,
            floor.1,
            inline.0,
            inline.1,
            tern.0,
            tern.1,
            tern.0 - floor.0
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The floor relay with its writer thread.
    Floor,
    /// The floor relay syncing on its one worker.
    FloorInline,
    Tern,
}

/// One offered rate into fresh sinks: (CPU us per message, achieved/s).
fn point(a: &Args, rate: Option<u64>, messages: u64, target: Target) -> (f64, f64) {
    let (dns, sink_port, tally) = internet::start(
        internet::zone(a.domains, a.hosts),
        0,
        a.hosts,
        0,
        internet::SinkMode::Accept,
        (messages as usize, 0),
    );
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::plain(dir.path(), dns, sink_port);
    let (addr, pid, running) = match target {
        Target::Floor | Target::FloorInline => {
            let inline = target == Target::FloorInline;
            let f = Floor::start(dir.path(), dns, sink_port, inline);
            (f.addr, f.child.id(), Running::Floor(f))
        }
        Target::Tern => {
            let d = Daemon::start(&setup);
            (d.addr, d.pid(), Running::Tern(Box::new(d)))
        }
    };
    let cpu0 = procstat::process_cpu(pid);
    let start = Instant::now();
    let accepted = crate::curve::offer(a, addr, rate, messages);
    crate::wait_delivered(&tally, accepted as u64, None);
    let took = start.elapsed();
    let cpu = procstat::process_cpu(pid) - cpu0;
    match running {
        Running::Floor(f) => drop(f),
        Running::Tern(d) => d.stop(),
    }
    (
        cpu * 1e6 / accepted.max(1) as f64,
        accepted as f64 / took.as_secs_f64(),
    )
}

enum Running {
    Floor(Floor),
    Tern(Box<Daemon>),
}

/// The floor relay's child process.
struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Floor {
    /// Starts the child on a free port; returns once it greets.
    fn start(dir: &Path, dns: SocketAddr, sink_port: u16, inline: bool) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--floor-serve")
            .args([addr.to_string(), dns.to_string(), sink_port.to_string()])
            .arg(dir)
            .arg(if inline { "inline" } else { "thread" })
            .stdout(Stdio::null())
            .spawn()
            .expect("start the floor relay");
        for _ in 0..1000 {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::Read;
                let mut b = [0u8; 3];
                if s.read_exact(&mut b).is_ok() && &b == b"220" {
                    return Self { child, addr };
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the floor relay did not greet on {addr}");
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record for the writer thread; `done` is answered after its sync
/// (`None`: an outcome, synced with the next message or within 50 ms).
struct Record {
    head: Vec<u8>,
    body: Bytes,
    done: Option<oneshot::Sender<()>>,
}

/// A message on its way to its MX host.
struct Message {
    id: u64,
    sender: String,
    recipients: Vec<String>,
    /// The data as received, dot-stuffed, with its final `.\r\n`.
    data: Bytes,
}

/// Where records go.
enum Spool {
    /// To the writer thread (group commit).
    Thread(std::sync::mpsc::Sender<Record>),
    /// Written and synced on the calling task, blocking the runtime's one
    /// worker meanwhile (no thread hop; no MTA could afford it under
    /// load, but it bounds what the hop costs).
    Inline(Mutex<std::fs::File>),
}

impl Spool {
    /// Appends `r`; a new message (`done`) is synced before it is
    /// answered.
    fn append(&self, r: Record) {
        match self {
            Spool::Thread(tx) => tx.send(r).unwrap(),
            Spool::Inline(file) => {
                let mut f = file.lock().unwrap();
                f.write_all(&[&r.head[..], &r.body[..]].concat()).unwrap();
                if let Some(done) = r.done {
                    f.sync_data().unwrap();
                    let _ = done.send(());
                }
            }
        }
    }
}

/// What the sessions and connections share.
struct Relay {
    spool: Spool,
    router: ::tern::dns::route::Router,
    routes: Mutex<HashMap<String, SocketAddr>>,
    hosts: Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Message>>>,
    next_id: AtomicU64,
}

/// The child's entry: `--floor-serve LISTEN DNS SINK_PORT DIR thread|inline`.
pub fn serve(args: &[String]) {
    let [listen, dns, sink_port, dir, inline] = args else {
        panic!("--floor-serve LISTEN DNS SINK_PORT DIR thread|inline");
    };
    let listen: SocketAddr = listen.parse().unwrap();
    let dir = PathBuf::from(dir);
    let setup = Setup::plain(&dir, dns.parse().unwrap(), sink_port.parse().unwrap());
    let config = crate::tern::config(&setup, listen);
    let file = std::fs::File::create(dir.join("floor.spool")).unwrap();
    let spool = match inline.as_str() {
        "inline" => Spool::Inline(Mutex::new(file)),
        _ => {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("floor-writer".into())
                .spawn(move || writer(rx, file))
                .unwrap();
            Spool::Thread(tx)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let resolver = ::tern::dns::resolver::HickoryResolver::new(&config.dns).unwrap();
        let relay = Arc::new(Relay {
            spool,
            router: ::tern::dns::route::Router::new(&config, Arc::new(resolver)),
            routes: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let listener = TcpListener::bind(listen).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(session(relay.clone(), stream));
        }
    });
}

/// The writer thread: takes every waiting record, writes them in one
/// `write`, syncs if a new message is among them (or an outcome has
/// waited 50 ms), then answers.
fn writer(rx: std::sync::mpsc::Receiver<Record>, mut file: std::fs::File) {
    let (mut batch, mut buf) = (Vec::new(), Vec::new());
    let mut unsynced: Option<Instant> = None;
    loop {
        let first = match unsynced {
            None => rx.recv().ok(),
            Some(since) => {
                let left = OUTCOME_SYNC.saturating_sub(since.elapsed());
                match rx.recv_timeout(left) {
                    Ok(r) => Some(r),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        file.sync_data().unwrap();
                        unsynced = None;
                        continue;
                    }
                    Err(_) => None,
                }
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        batch.extend(rx.try_iter());
        buf.clear();
        for r in &batch {
            buf.extend_from_slice(&r.head);
            buf.extend_from_slice(&r.body);
        }
        file.write_all(&buf).unwrap();
        if batch.iter().any(|r| r.done.is_some()) {
            file.sync_data().unwrap();
            unsynced = None;
        } else if unsynced.is_none() {
            unsynced = Some(Instant::now());
        }
        for r in batch.drain(..) {
            if let Some(done) = r.done {
                let _ = done.send(());
            }
        }
    }
}

/// The address inside `<...>` of a MAIL or RCPT line.
fn path_of(line: &[u8]) -> String {
    let start = line.iter().position(|b| *b == b'<').map_or(0, |p| p + 1);
    let end = line.iter().rposition(|b| *b == b'>').unwrap_or(line.len());
    String::from_utf8_lossy(&line[start..end.max(start)]).into_owned()
}

/// One SMTP session: commands answered in one write per read.
async fn session(relay: Arc<Relay>, stream: TcpStream) {
    stream.set_nodelay(true).unwrap();
    let (mut r, mut w) = stream.into_split();
    let (mut buf, mut out) = (BytesMut::with_capacity(16 << 10), Vec::new());
    let (mut sender, mut recipients) = (String::new(), Vec::new());
    let mut in_data = false;
    w.write_all(b"220 floor.bench ESMTP\r\n").await.unwrap();
    loop {
        loop {
            if in_data {
                let end = match buf.starts_with(b".\r\n") {
                    true => Some(0),
                    false => memchr::memmem::find(&buf, b"\r\n.\r\n").map(|p| p + 2),
                };
                let Some(end) = end else { break };
                let data = buf.split_to(end + 3).freeze();
                in_data = false;
                let m = Message {
                    id: relay.next_id.fetch_add(1, Ordering::Relaxed),
                    sender: std::mem::take(&mut sender),
                    recipients: std::mem::take(&mut recipients),
                    data,
                };
                store(&relay, &m).await;
                out.extend_from_slice(b"250 2.0.0 queued\r\n");
                forward(&relay, m).await;
                continue;
            }
            let Some(p) = memchr::memmem::find(&buf, b"\r\n") else {
                break;
            };
            let line = buf.split_to(p + 2);
            let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
            match &verb[..] {
                b"EHLO" => out.extend_from_slice(b"250-floor.bench\r\n250 PIPELINING\r\n"),
                b"MAIL" => {
                    sender = path_of(&line);
                    out.extend_from_slice(b"250 2.1.0 ok\r\n");
                }
                b"RCPT" => {
                    recipients.push(path_of(&line));
                    out.extend_from_slice(b"250 2.1.5 ok\r\n");
                }
                b"DATA" => {
                    in_data = true;
                    out.extend_from_slice(b"354 go ahead\r\n");
                }
                b"QUIT" => {
                    let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                    return;
                }
                _ => out.extend_from_slice(b"250 2.0.0 ok\r\n"),
            }
        }
        if !out.is_empty() {
            w.write_all(&out).await.unwrap();
            out.clear();
        }
        if r.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
    }
}

/// Appends the message and waits for its sync.
async fn store(relay: &Relay, m: &Message) {
    let mut head = format!("M {} <{}>", m.id, m.sender);
    for r in &m.recipients {
        head.push_str(&format!(" <{r}>"));
    }
    head.push_str("\r\n");
    let (done, synced) = oneshot::channel();
    let record = Record {
        head: head.into_bytes(),
        body: m.data.clone(),
        done: Some(done),
    };
    relay.spool.append(record);
    synced.await.unwrap();
}

/// Routes the message (once per domain) to its MX host's connections.
async fn forward(relay: &Arc<Relay>, m: Message) {
    let domain = m.recipients[0].rsplit('@').next().unwrap_or("").to_owned();
    let known = relay.routes.lock().unwrap().get(&domain).copied();
    let addr = match known {
        Some(a) => a,
        None => {
            let route = relay.router.route(&domain).await.expect("a route");
            let a = route.hosts[0].addrs[0];
            relay.routes.lock().unwrap().insert(domain, a);
            a
        }
    };
    let mut hosts = relay.hosts.lock().unwrap();
    let tx = hosts.entry(addr).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..CONNECTIONS {
            tokio::spawn(connection(relay.clone(), addr, rx.clone()));
        }
        tx
    });
    tx.send(m).expect("the host's connections");
}

/// One kept-open connection to an MX host, sending whatever its host's
/// queue hands it.
async fn connection(
    relay: Arc<Relay>,
    addr: SocketAddr,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect to the sink");
    stream.set_nodelay(true).unwrap();
    let (r, mut w) = stream.into_split();
    let (mut r, mut line, mut out) = (BufReader::new(r), String::new(), Vec::new());
    assert_eq!(inject::reply(&mut r, &mut line).await, 220, "{line}");
    w.write_all(b"EHLO floor.bench\r\n").await.unwrap();
    assert_eq!(inject::reply(&mut r, &mut line).await, 250, "{line}");
    loop {
        let Some(m) = queue.lock().await.recv().await else {
            return;
        };
        out.clear();
        write!(out, "MAIL FROM:<{}>\r\n", m.sender).unwrap();
        for rcpt in &m.recipients {
            write!(out, "RCPT TO:<{rcpt}>\r\n").unwrap();
        }
        out.extend_from_slice(b"DATA\r\n");
        w.write_all(&out).await.unwrap();
        for _ in 0..=m.recipients.len() {
            assert_eq!(inject::reply(&mut r, &mut line).await, 250, "{line}");
        }
        assert_eq!(inject::reply(&mut r, &mut line).await, 354, "{line}");
        w.write_all(&m.data).await.unwrap();
        assert_eq!(inject::reply(&mut r, &mut line).await, 250, "{line}");
        let outcome = Record {
            head: format!("D {}\r\n", m.id).into_bytes(),
            body: Bytes::new(),
            done: None,
        };
        relay.spool.append(outcome);
    }
}
