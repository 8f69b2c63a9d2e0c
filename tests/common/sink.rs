//! Scripted SMTP sinks: small servers, written independently of Tern's own
//! server, whose replies depend on the recipient's local part, and which
//! record every session (peer address, commands, raw and unstuffed data).
//!
//! Local parts: `tempfail…` gets 450 at RCPT; `multiline…` a two-line 450;
//! `permfail…` 550; `overquota…` 552; `flaky…` 450 the first time each address is tried,
//! then 250; `datafail…` makes the final reply 554; `dropdata…` closes the
//! connection after the dot without replying. Anything else is accepted.
//! [`SinkOptions`] add a slow banner, a recipient limit per transaction
//! (`452 4.5.3` past it), STARTTLS (working or broken), and RCPTs held
//! until the test releases them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// Who connected.
    pub peer: SocketAddr,
    /// MAIL FROM address.
    pub from: String,
    /// Accepted recipients.
    pub rcpts: Vec<String>,
    /// The data as sent (dot-stuffed, terminator included; with BDAT, the
    /// chunks as they came).
    pub raw: Vec<u8>,
    /// The data unstuffed, without the terminator.
    pub data: Vec<u8>,
    /// The session was under TLS.
    pub tls: bool,
    /// The commands of the session up to this message.
    pub commands: Vec<String>,
    /// When it arrived (tokio's clock).
    pub at: tokio::time::Instant,
}

/// STARTTLS behaviour.
#[derive(Clone)]
pub enum StartTls {
    /// Offered, and the handshake works (any certificate).
    Working(TlsAcceptor),
    /// Offered, answered 220, then garbage instead of a handshake.
    Broken,
}

/// How a sink behaves beyond the local-part script.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// Wait this long before the banner.
    pub banner_delay: Option<Duration>,
    /// Greet with `421 4.3.2` and close: a site that refuses everyone.
    pub refuse: bool,
    /// Recipients accepted per transaction; further ones get 452 4.5.3.
    pub max_rcpts: Option<usize>,
    /// STARTTLS, if offered.
    pub starttls: Option<StartTls>,
    /// Every RCPT waits for [`Sink::release`] before it is answered.
    pub hold: bool,
    /// DATA gets 354 even when no recipient was accepted (as a pipelining
    /// server may); the data then sent is kept in [`Sink::empty_data`].
    pub always_354: bool,
    /// 8BITMIME is not offered.
    pub no_8bitmime: bool,
    /// SMTPUTF8 is offered.
    pub smtputf8: bool,
    /// DSN is not offered (so delivery notices are the sender's MTA's).
    pub no_dsn: bool,
    /// Close the connection right after answering a message (as a
    /// receiver that drops idle connections does), without QUIT.
    pub close_after_message: bool,
    /// Wait this long after the data before answering it (a slow
    /// receiver).
    pub data_delay: Option<Duration>,
    /// CHUNKING (RFC 3030) is offered: BDAT carries messages.
    pub chunking: bool,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    tries: Mutex<HashMap<String, u32>>,
    sessions: Mutex<Vec<(SocketAddr, Vec<String>)>>,
    hold: Notify,
    changed: Notify,
    empty_data: Mutex<Vec<Vec<u8>>>,
    connections: std::sync::atomic::AtomicUsize,
    /// Connections open now, and the most open at once.
    open: std::sync::atomic::AtomicUsize,
    max_open: std::sync::atomic::AtomicUsize,
}

/// Counts a connection open while it lives.
struct Open(Arc<Shared>);

impl Open {
    fn new(s: Arc<Shared>) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let now = s.open.fetch_add(1, SeqCst) + 1;
        s.max_open.fetch_max(now, SeqCst);
        Self(s)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running sink.
pub struct Sink {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Listens on `addr` with the default behaviour.
    pub async fn start(addr: SocketAddr) -> Self {
        Self::start_with(addr, SinkOptions::default()).await
    }

    /// Listens on `addr`.
    pub async fn start_with(addr: SocketAddr, opts: SinkOptions) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("sink on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (stop, mut stopped) = watch::channel(false);
        let (s, opts) = (shared.clone(), Arc::new(opts));
        let task = tokio::spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((stream, peer)) = a else { continue };
                        s.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (s, o) = (s.clone(), opts.clone());
                        sessions.spawn(async move {
                            let _open = Open::new(s.clone());
                            if let Some(d) = o.banner_delay {
                                tokio::time::sleep(d).await;
                            }
                            session(Box::new(stream), peer, s, o, false).await;
                        });
                    }
                    _ = stopped.changed() => break,
                }
            }
            sessions.abort_all();
        });
        Self {
            addr,
            shared,
            stop,
            task,
        }
    }

    /// Messages accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `n` messages have been accepted (or `limit` passes);
    /// returns those accepted.
    pub async fn wait_received(&self, n: usize, limit: Duration) -> Vec<Received> {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                if self.shared.received.lock().unwrap().len() >= n {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.received()
    }

    /// Finished sessions so far: (peer, commands).
    pub fn sessions(&self) -> Vec<(SocketAddr, Vec<String>)> {
        self.shared.sessions.lock().unwrap().clone()
    }

    /// What clients sent after a 354 that followed no accepted RCPT.
    pub fn empty_data(&self) -> Vec<Vec<u8>> {
        self.shared.empty_data.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most connections open at once so far.
    pub fn max_open(&self) -> usize {
        self.shared
            .max_open
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many times RCPT TO named `address`.
    pub fn tries(&self, address: &str) -> u32 {
        self.shared
            .tries
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(0)
    }

    /// Lets every held RCPT be answered.
    pub fn release(&self) {
        self.shared.hold.notify_waiters();
    }

    /// Stops the sink and its sessions.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The state of one session.
struct Txn {
    from: String,
    rcpts: Vec<String>,
    fail_data: bool,
    drop_data: bool,
    /// BDAT chunks so far.
    chunks: Vec<u8>,
}

impl Txn {
    fn new() -> Self {
        Self {
            from: String::new(),
            rcpts: Vec::new(),
            fail_data: false,
            drop_data: false,
            chunks: Vec::new(),
        }
    }
}

/// What to do after a command.
enum Next {
    Reply(String),
    Close,
    StartTls(TlsAcceptor),
}

fn session(
    stream: Box<dyn Io>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    opts: Arc<SinkOptions>,
    tls: bool,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut r = BufReader::new(stream);
        let mut commands = Vec::new();
        if opts.refuse {
            let _ = r
                .get_mut()
                .write_all(b"421 4.3.2 sink.test refuses\r\n")
                .await;
            return;
        }
        if !tls {
            let _ = r.get_mut().write_all(b"220 sink.test ESMTP\r\n").await;
        }
        let mut txn = Txn::new();
        let mut line = String::new();
        for _ in 0..10_000 {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let cmd = line.trim_end().to_owned();
            commands.push(cmd.clone());
            let next = command(&cmd, &mut r, &mut txn, &commands, peer, &shared, &opts, tls).await;
            match next {
                Next::Reply(reply) => {
                    let _ = r
                        .get_mut()
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await;
                    if opts.close_after_message && reply.starts_with("250 2.0.0 queued") {
                        let _ = r.get_mut().flush().await;
                        break;
                    }
                }
                Next::Close => break,
                Next::StartTls(acceptor) => {
                    let _ = r.get_mut().write_all(b"220 go ahead\r\n").await;
                    shared.sessions.lock().unwrap().push((peer, commands));
                    if let Ok(s) = acceptor.accept(r.into_inner()).await {
                        session(Box::new(s), peer, shared, opts, true).await;
                    }
                    return;
                }
            }
        }
        shared.sessions.lock().unwrap().push((peer, commands));
        shared.changed.notify_waiters();
    })
}

#[allow(clippy::too_many_arguments)]
async fn command(
    cmd: &str,
    r: &mut BufReader<Box<dyn Io>>,
    txn: &mut Txn,
    commands: &[String],
    peer: SocketAddr,
    shared: &Shared,
    opts: &SinkOptions,
    tls: bool,
) -> Next {
    let upper = cmd.to_ascii_uppercase();
    let reply = if upper.starts_with("EHLO") {
        let tls_ext = if opts.starttls.is_some() && !tls {
            "250-STARTTLS\r\n"
        } else {
            ""
        };
        let mime = if opts.no_8bitmime {
            ""
        } else {
            "250-8BITMIME\r\n"
        };
        let utf8 = if opts.smtputf8 {
            "250-SMTPUTF8\r\n"
        } else {
            ""
        };
        let last = if opts.no_dsn { "250 HELP" } else { "250 DSN" };
        let chunking = if opts.chunking {
            "250-CHUNKING\r\n"
        } else {
            ""
        };
        format!(
            "250-sink.test\r\n{tls_ext}250-PIPELINING\r\n{chunking}{mime}{utf8}250-SIZE 100000000\r\n{last}"
        )
    } else if upper.starts_with("HELO") || upper == "RSET" || upper == "NOOP" {
        *txn = Txn::new();
        "250 ok".into()
    } else if upper == "STARTTLS" && !tls {
        match &opts.starttls {
            Some(StartTls::Working(a)) => return Next::StartTls(a.clone()),
            Some(StartTls::Broken) => {
                // Answers the ClientHello with garbage.
                let _ = r.get_mut().write_all(b"220 go ahead\r\n").await;
                let mut hello = [0u8; 512];
                let _ = tokio::io::AsyncReadExt::read(r, &mut hello).await;
                let _ = r.get_mut().write_all(b"this is not TLS\r\n").await;
                return Next::Close;
            }
            None => "502 5.5.1 not implemented".into(),
        }
    } else if upper.starts_with("MAIL FROM:") {
        *txn = Txn::new();
        txn.from = angle(cmd);
        "250 2.1.0 sender ok".into()
    } else if upper.starts_with("RCPT TO:") {
        rcpt(cmd, txn, shared, opts).await
    } else if upper == "DATA" {
        if txn.rcpts.is_empty() && !opts.always_354 {
            "554 5.5.1 no valid recipients".into()
        } else {
            let _ = r.get_mut().write_all(b"354 go ahead\r\n").await;
            let raw = read_data(r).await;
            let t = std::mem::replace(txn, Txn::new());
            if t.drop_data {
                return Next::Close;
            }
            if t.fail_data {
                "554 5.6.0 content rejected".into()
            } else if t.rcpts.is_empty() {
                // RFC 2920 3.1: nothing is delivered; the data is kept for the test.
                shared.empty_data.lock().unwrap().push(raw);
                "554 5.5.1 no valid recipients".into()
            } else {
                let data = unstuff(&raw);
                let m = Received {
                    peer,
                    from: t.from,
                    rcpts: t.rcpts,
                    raw,
                    data,
                    tls,
                    commands: commands.to_vec(),
                    at: tokio::time::Instant::now(),
                };
                keep(m, shared, opts).await
            }
        }
    } else if upper.starts_with("BDAT ") && opts.chunking {
        let mut words = upper.split_ascii_whitespace().skip(1);
        let Some(size) = words.next().and_then(|n| n.parse::<usize>().ok()) else {
            return Next::Reply("501 5.5.4 BDAT needs a size".into());
        };
        let last = words.next() == Some("LAST");
        let start = txn.chunks.len();
        txn.chunks.resize(start + size, 0);
        if tokio::io::AsyncReadExt::read_exact(r, &mut txn.chunks[start..])
            .await
            .is_err()
        {
            return Next::Close;
        }
        if !last {
            return Next::Reply(format!("250 2.0.0 {size} bytes received"));
        }
        let t = std::mem::replace(txn, Txn::new());
        match () {
            _ if t.drop_data => return Next::Close,
            _ if t.fail_data => "554 5.6.0 content rejected".into(),
            _ if t.rcpts.is_empty() => {
                shared.empty_data.lock().unwrap().push(t.chunks);
                "554 5.5.1 no valid recipients".into()
            }
            _ => {
                let m = Received {
                    peer,
                    from: t.from,
                    rcpts: t.rcpts,
                    raw: t.chunks.clone(),
                    data: t.chunks,
                    tls,
                    commands: commands.to_vec(),
                    at: tokio::time::Instant::now(),
                };
                keep(m, shared, opts).await
            }
        }
    } else if upper == "QUIT" {
        let _ = r.get_mut().write_all(b"221 bye\r\n").await;
        return Next::Close;
    } else {
        "502 5.5.1 not implemented".into()
    };
    Next::Reply(reply)
}

/// Keeps an accepted message (after `data_delay`, a slow receiver) and
/// answers it.
async fn keep(m: Received, shared: &Shared, opts: &SinkOptions) -> String {
    if let Some(d) = opts.data_delay {
        tokio::time::sleep(d).await;
    }
    let m = Received {
        at: tokio::time::Instant::now(),
        ..m
    };
    shared.received.lock().unwrap().push(m);
    shared.changed.notify_waiters();
    "250 2.0.0 queued".into()
}

async fn rcpt(cmd: &str, txn: &mut Txn, shared: &Shared, opts: &SinkOptions) -> String {
    let to = angle(cmd);
    let local = to.split('@').next().unwrap_or("").to_ascii_lowercase();
    let tries = {
        let mut t = shared.tries.lock().unwrap();
        let n = t.entry(to.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if opts.hold {
        shared.hold.notified().await;
    }
    if opts.max_rcpts.is_some_and(|m| txn.rcpts.len() >= m) {
        return "452 4.5.3 too many recipients".into();
    }
    match () {
        _ if local.starts_with("tempfail") => "450 4.2.0 mailbox busy".into(),
        _ if local.starts_with("multiline") => {
            "450-4.2.0 mailbox busy\r\n450 4.2.0 come back later".into()
        }
        _ if local.starts_with("permfail") => "550 5.1.1 no such user".into(),
        _ if local.starts_with("overquota") => "552 5.2.2 mailbox full".into(),
        _ if local.starts_with("flaky") && tries == 1 => "450 4.7.1 try again later".into(),
        _ => {
            txn.fail_data |= local.starts_with("datafail");
            txn.drop_data |= local.starts_with("dropdata");
            txn.rcpts.push(to);
            "250 2.1.5 ok".into()
        }
    }
}

fn angle(cmd: &str) -> String {
    let start = cmd.find('<').map_or(0, |i| i + 1);
    let end = cmd[start..].find('>').map_or(cmd.len(), |i| start + i);
    cmd[start..end].to_owned()
}

/// Reads DATA up to and including CRLF.CRLF.
async fn read_data<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..1_000_000 {
        let n = r.read_until(b'\n', &mut raw).await.unwrap_or(0);
        if n == 0 || raw.ends_with(b"\r\n.\r\n") || raw == b".\r\n" {
            break;
        }
    }
    raw
}

/// Undoes dot-stuffing and drops the terminator.
fn unstuff(raw: &[u8]) -> Vec<u8> {
    let body = raw.strip_suffix(b".\r\n").unwrap_or(raw);
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// A TLS acceptor with a fresh self-signed certificate.
pub fn acceptor() -> TlsAcceptor {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let c = rcgen::generate_simple_self_signed(vec!["sink.test".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}
