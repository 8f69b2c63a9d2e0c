//! Tern under test: a child process (`tern run`) with a config written for
//! the fake internet, so that its CPU time and peak RSS are its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern::config::values::{ByteSize, Duration as Span};
use tern::config::{Config, DkimKeyConfig, KeyAlgorithm, PoolConfig, PoolMember, SourceConfig};

/// DKIM variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// No key.
    Off,
    /// RSA-2048 for the From domain.
    Rsa,
    /// Ed25519 for the From domain.
    Ed25519,
}

/// Where the child sends, and how.
pub struct Setup<'a> {
    /// Its spool, log and config go here.
    pub dir: &'a Path,
    /// The fake internet's DNS server.
    pub dns: SocketAddr,
    /// The sinks' port.
    pub sink_port: u16,
    /// DKIM.
    pub signing: Signing,
    /// `info` to see the recovery report; `warn` for speed.
    pub log_level: &'a str,
}

impl<'a> Setup<'a> {
    /// The usual run: no DKIM, diagnostics at `warn`.
    pub fn plain(dir: &'a Path, dns: SocketAddr, sink_port: u16) -> Self {
        Self {
            dir,
            dns,
            sink_port,
            signing: Signing::Off,
            log_level: "warn",
        }
    }
}

/// The config of a run.
pub fn config(s: &Setup<'_>, listen: SocketAddr) -> Config {
    let mut c = Config::default();
    c.server.hostname = "tern.bench".into();
    c.server.shutdown_grace = Span::from_secs(2);
    c.log.level = s.log_level.into();
    c.log.deliveries = s.dir.join("deliveries.jsonl");
    c.listeners[0].address = listen;
    c.queue.path = s.dir.join("spool");
    c.queue.min_free_space = ByteSize(0);
    c.queue.max_messages = 0;
    c.dns.nameservers = vec![s.dns.to_string().try_into().unwrap()];
    // The MX hosts are on loopback, which Tern refuses by default.
    c.dns.prohibited_targets = vec!["0.0.0.0/8".parse().unwrap()];
    c.delivery.port = s.sink_port;
    c.admin.enabled = false;
    c.sources = vec![SourceConfig {
        name: "ip1".into(),
        address: Some("127.0.1.20".parse().unwrap()),
        ehlo: Some("ip1.tern.bench".into()),
        proxy: None,
        warmup: None,
        shared: None,
    }];
    c.pools = vec![PoolConfig {
        name: "default".into(),
        sources: vec![PoolMember {
            source: "ip1".into(),
            weight: 1,
        }],
    }];
    let key = |file: &str, algorithm| DkimKeyConfig {
        domain: "shop.example".into(),
        selector: "bench".into(),
        algorithm,
        key: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dkim")
            .join(file),
    };
    match s.signing {
        Signing::Off => {}
        Signing::Rsa => c
            .dkim
            .keys
            .push(key("rsa2048.pkcs8.pem", KeyAlgorithm::RsaSha256)),
        Signing::Ed25519 => c
            .dkim
            .keys
            .push(key("ed25519.pem", KeyAlgorithm::Ed25519Sha256)),
    }
    c
}

/// True once `addr` answers a connection with its `220` greeting (the
/// kernel accepts connections as soon as the socket listens; Tern greets
/// only once its spool is recovered).
fn greeted(addr: SocketAddr) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf[..3] == b"220"
}

/// Starts `tern run` on the config at `path`, its stderr appended to
/// `stderr`.
fn spawn(path: &Path, stderr: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(stderr)
        .expect("tern's stderr file");
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["run", "--config"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tern")
}

/// A running `tern run`.
pub struct Daemon {
    child: Child,
    /// Its config, and the file it was written to.
    config: (Config, PathBuf),
    /// Its SMTP listener.
    pub addr: SocketAddr,
    /// Its stderr, for when something goes wrong.
    pub stderr: PathBuf,
    /// From spawn until its listener accepted a connection.
    pub startup: Duration,
}

impl Daemon {
    /// Writes the config and starts Tern; returns once it accepts
    /// connections (bounded: 60 s).
    pub fn start(s: &Setup<'_>) -> Self {
        Self::start_with(s, |_| {})
    }

    /// Like [`Daemon::start`], with the config changed by `tweak`.
    pub fn start_with(s: &Setup<'_>, tweak: impl FnOnce(&mut Config)) -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let mut cfg = config(s, addr);
        tweak(&mut cfg);
        let path = s.dir.join("tern.toml");
        std::fs::write(&path, toml::to_string(&cfg).expect("config as TOML")).unwrap();
        let stderr = s.dir.join("tern.stderr");
        std::fs::File::create(&stderr).unwrap();
        let child = spawn(&path, &stderr);
        let mut d = Self {
            child,
            config: (cfg, path),
            addr,
            stderr,
            startup: Duration::ZERO,
        };
        d.startup = d.await_greeting();
        d
    }

    /// Waits (bounded: 120 s) until the child greets; returns how long
    /// that took.
    fn await_greeting(&mut self) -> Duration {
        let t = Instant::now();
        for _ in 0..12_000 {
            if greeted(self.addr) {
                return t.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tern exited ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("tern did not listen within 120 s: {}", self.log());
    }

    /// SIGKILL, then the same config and spool started again on the same
    /// address; returns how long until it greeted again.
    pub fn kill_and_restart(&mut self) -> Duration {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let t = Instant::now();
        self.child = spawn(&self.config.1, &self.stderr);
        self.await_greeting();
        t.elapsed()
    }

    /// Writes its config file again, changed by `tweak` (see
    /// [`Daemon::reload`]).
    pub fn rewrite(&self, tweak: impl FnOnce(&mut Config)) {
        let (cfg, path) = &self.config;
        let mut cfg = cfg.clone();
        tweak(&mut cfg);
        std::fs::write(path, toml::to_string(&cfg).expect("config as TOML")).unwrap();
    }

    /// SIGHUP: it reloads its config file.
    pub fn reload(&self) {
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
    }

    /// The config it runs with.
    pub fn config(&self) -> &Config {
        &self.config.0
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded: 60 s; then SIGKILL and a panic).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..6000 {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "tern stopped with {status}: {}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("tern did not stop within 60 s of SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only after a panic: never leave a daemon behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
