//! Shared test harness: a real queue in a temporary directory and an SMTP
//! session driven over an in-memory stream (no sockets), plus a TLS
//! certificate made for the test.

#![allow(dead_code)]

pub mod admin;
pub mod ca;
pub mod dkim;
pub mod dns;
pub mod fleet;
pub mod http;
pub mod net;
pub mod proxy;
pub mod redis;
pub mod sink;
pub mod sts;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use queue::{MessageInfo, Queue};
use tern::config::{Config, UserConfig};
use tern::smtp::server::{Credentials, MemoryBudget, Phase, hash_password, run_session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The password of the test user `app`.
pub const PASSWORD: &str = "correct horse battery staple";

/// A self-signed certificate for `localhost`, written to `dir`.
pub struct TestCert {
    pub cert_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

pub fn test_cert(dir: &std::path::Path) -> TestCert {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = c.cert.pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, c.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert_pem,
        cert_path,
        key_path,
    }
}

/// A config for tests: spool under `dir`, no free-space reserve, one user.
pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.hostname = "mx.test".into();
    c.queue.path = dir.join("spool");
    c.queue.min_free_space = tern::config::values::ByteSize(0);
    c.queue.segment_size = tern::config::values::ByteSize(1 << 20);
    // Tests never ask a real name server: this one refuses, so DNS fails
    // (transiently) and mail stays queued unless a test routes it.
    c.dns.nameservers = vec!["127.0.0.1:1".to_owned().try_into().unwrap()];
    c.dns.attempts = 1;
    c.dns.timeout = tern::config::values::Duration::from_secs(1);
    c.log.deliveries = dir.join("deliveries.jsonl");
    // Tests run side by side: no admin API unless a test turns it on.
    c.admin.enabled = false;
    c.auth.users.push(UserConfig {
        name: "app".into(),
        password_hash: password_hash(),
        ..UserConfig::default()
    });
    c
}

/// The argon2 hash of [`PASSWORD`], computed once per test binary (argon2
/// is slow by design, more so in debug builds).
pub fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).unwrap())
        .clone()
}

/// A session under test, driven over an in-memory stream.
pub struct Session<S = DuplexStream> {
    pub client: S,
    pub buf: Vec<u8>,
    pub task: JoinHandle<()>,
    pub queue: Arc<Queue>,
    pub phase: watch::Sender<Phase>,
    pub dir: tempfile::TempDir,
    /// The greeting the session opened with.
    pub greeting: String,
}

/// Starts a session from `peer` with the test config changed by `tweak`.
pub async fn start(peer: &str, tweak: impl FnOnce(&mut Config)) -> Session {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let (queue, _) = Queue::open(cfg.queue.options()).unwrap();
    start_on(dir, cfg, Arc::new(queue), peer).await
}

/// Starts a session on an existing queue.
pub async fn start_on(
    dir: tempfile::TempDir,
    cfg: Config,
    queue: Arc<Queue>,
    peer: &str,
) -> Session {
    let memory = MemoryBudget::new(cfg.server.max_message_memory.0);
    start_with(dir, cfg, queue, memory, peer).await
}

/// Starts a session on an existing queue and memory budget.
pub async fn start_with(
    dir: tempfile::TempDir,
    cfg: Config,
    queue: Arc<Queue>,
    memory: Arc<MemoryBudget>,
    peer: &str,
) -> Session {
    let prepared = tern::prepare::prepare(&cfg).unwrap();
    let services = tern::daemon::Services {
        queue: queue.clone(),
        log: Arc::new(tern::log::DeliveryLog::disabled()),
        clock: tern::clock::Clock::new(),
        wake: Arc::new(tokio::sync::Notify::new()),
        credentials: Arc::new(Credentials::new(&cfg.auth)),
        memory,
        routing: Arc::new(tern::swap::Swap::new(tern::intake::IntakeRouting::new(
            &cfg,
            tern::dkim::Dkim::with_keys(&cfg.dkim, prepared.dkim_keys)
                .unwrap()
                .map(Arc::new),
        ))),
        metrics: Arc::new(tern::metrics::Metrics::new()),
        node: Arc::new(tern::node::NodeState::default()),
        tracer: tern::trace::Tracer::new(),
    };
    let tls = prepared.listener_tls[0].clone();
    let ctx =
        Arc::new(tern::daemon::session_context(&cfg, &cfg.listeners[0], tls, &services).unwrap());
    let (client, server) = tokio::io::duplex(256 * 1024);
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
    let task = tokio::spawn(run_session(server, peer, ctx, phase_rx));
    let mut s = Session {
        client,
        buf: Vec::new(),
        task,
        queue,
        phase,
        dir,
        greeting: String::new(),
    };
    let greeting = s.reply().await;
    assert!(
        greeting.starts_with("220 ") || greeting.starts_with("421 "),
        "{greeting}"
    );
    s.greeting = greeting;
    s
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends raw bytes; false if the server has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.client.write_all(bytes).await.is_ok() && self.client.flush().await.is_ok()
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.unwrap();
        self.client.flush().await.unwrap();
    }

    /// Reads one whole reply (all its lines); "" on EOF. Fails the test
    /// if none comes within 10 s (a test mistake, not a server wait).
    pub async fn reply(&mut self) -> String {
        self.reply_within(Duration::from_secs(10)).await
    }

    /// Reads one whole reply, waiting at most `limit` (on paused time,
    /// tests waiting for a server time limit pass a longer one).
    pub async fn reply_within(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.read_reply()).await {
            Ok(r) => r,
            Err(_) => panic!(
                "no reply within {limit:?}; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    async fn read_reply(&mut self) -> String {
        loop {
            if let Some(end) = complete_reply(&self.buf) {
                let r = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end);
                return r;
            }
            let mut chunk = [0u8; 4096];
            let n = self.client.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command line and checks the reply starts with `expect`.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let r = self.reply().await;
        assert!(
            r.starts_with(expect),
            "{line:?}: expected {expect:?}, got {r:?}"
        );
        r
    }

    /// True once the server has closed the connection (reads EOF).
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.client.read(&mut b).await, Ok(0) | Err(_))
    }

    /// EHLO, MAIL, RCPT, DATA with `body`; returns the final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
        for r in to {
            self.cmd(&format!("RCPT TO:<{r}>"), "250").await;
        }
        self.cmd("DATA", "354").await;
        self.send(body.as_bytes()).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

impl Session {
    /// The queued messages with their bodies.
    pub fn queued(&self) -> Vec<(MessageInfo, Vec<u8>)> {
        self.queue
            .page(None, usize::MAX)
            .into_iter()
            .map(|m| {
                let body = self.queue.body(m.id).unwrap().to_vec();
                (m, body)
            })
            .collect()
    }
}

/// The end of the first complete reply in `buf` (a line `ddd text\r\n`
/// ends it; `ddd-text` lines continue it).
fn complete_reply(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        let line = &buf[start..start + nl + 1];
        start += nl + 1;
        if line.len() < 4 || line[3] != b'-' {
            return Some(start);
        }
    }
    None
}

/// The message data after Tern's Received header.
pub fn after_received(body: &[u8]) -> &[u8] {
    let text = body;
    let mut i = 0;
    // Skip "Received:" and its folded continuation lines.
    loop {
        let nl = text[i..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| i + p + 1)
            .unwrap_or(text.len());
        i = nl;
        if i >= text.len() || !(text[i] == b'\t' || text[i] == b' ') {
            break;
        }
    }
    &text[i..]
}

/// Bounded wait for a condition (10 ms steps, at most 5 s).
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A TLS client for the test certificate.
pub fn connector(cert_pem: &str) -> TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Starts a session with STARTTLS configured, from `peer`.
pub async fn start_tls_capable(peer: &str) -> (Session, String) {
    let certdir = tempfile::tempdir().unwrap();
    let cert = test_cert(certdir.path());
    let s = start(peer, |c| {
        c.listeners[0].tls_certificate = Some(cert.cert_path.clone());
        c.listeners[0].tls_key = Some(cert.key_path.clone());
    })
    .await;
    (s, cert.cert_pem)
}

/// Runs the client side of the handshake after `220 Ready to start TLS`.
pub async fn upgrade(s: Session, cert_pem: &str) -> Session<TlsStream<DuplexStream>> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector(cert_pem)
        .connect(name, s.client)
        .await
        .expect("TLS handshake");
    Session {
        client: tls,
        buf: s.buf,
        task: s.task,
        queue: s.queue,
        phase: s.phase,
        dir: s.dir,
        greeting: s.greeting,
    }
}

pub fn plain(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A session from `peer` that has said EHLO, started TLS and said EHLO again.
pub async fn tls_session(peer: &str) -> Session<TlsStream<DuplexStream>> {
    let (mut s, pem) = start_tls_capable(peer).await;
    s.cmd("EHLO x.example", "250").await;
    s.cmd("STARTTLS", "220 2.0.0").await;
    let mut s = upgrade(s, &pem).await;
    s.cmd("EHLO x.example", "250").await;
    s
}

/// Opens a spool a daemon has just closed. A lock can outlive its closing
/// for a moment when another test of the binary spawns a process: the
/// child holds a copy of every descriptor from fork until exec (which
/// closes them), so `Locked` is retried for up to a second. Recovers in
/// the foreground whatever the config says: the caller inspects it all.
pub fn reopen(mut opts: queue::QueueOptions) -> (Queue, queue::RecoveryReport) {
    opts.recover_in_background = false;
    for _ in 0..50 {
        match Queue::open(opts.clone()) {
            Err(queue::QueueError::Locked(_)) => std::thread::sleep(Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    Queue::open(opts).unwrap()
}

/// Queues `n` messages straight into the spool of `cfg` (the daemon not
/// running), a thousand at a time: message `i` from `news@shop.test` to
/// `to(i)`, with metadata `meta`, due at `due`.
pub async fn fill_spool(
    cfg: &Config,
    n: u64,
    to: impl Fn(u64) -> String,
    meta: &[u8],
    due: queue::Timestamp,
) {
    let (q, _) = Queue::open(cfg.queue.options()).unwrap();
    let q = Arc::new(q);
    for batch in 0..n.div_ceil(1000) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in batch * 1000..((batch + 1) * 1000).min(n) {
            let m = queue::NewMessage {
                id: None,
                envelope: queue::Envelope {
                    sender: "news@shop.test".into(),
                    meta: meta.into(),
                    recipients: vec![queue::EnvelopeRecipient::new(to(i).as_str())].into(),
                },
                arrival: queue::Timestamp::now(),
                first_attempt: due,
                priority: queue::DEFAULT_PRIORITY,
                body: bytes::Bytes::from_static(b"Subject: campaign\r\n\r\nbuy\r\n"),
            };
            let q = q.clone();
            tasks.spawn(async move { q.enqueue(m).await.unwrap() });
        }
        while tasks.join_next().await.is_some() {}
    }
    tokio::task::spawn_blocking(move || q.close())
        .await
        .unwrap();
}
