//! Real egress proxies for one test, each on a free port of 127.0.0.1 and
//! killed when dropped: `microsocks` (SOCKS5, its outgoing side bound to a
//! given address, with or without a username and password) and `haproxy`
//! (accepting the PROXY protocol v2 and sending from the header's source
//! address: `usesrc clientip`). `.ci/run`
//! installs the Debian packages `microsocks` and `haproxy` when missing.
//! Plus [`Silent`]: a port that accepts and never answers (a proxy too
//! slow to finish its handshake).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running proxy process.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proxy {
    /// microsocks on a free port, its connections leaving from `out`.
    pub fn socks5(out: IpAddr, auth: Option<(&str, &str)>) -> Self {
        let port = free_port();
        let mut cmd = Command::new("microsocks");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-b", &out.to_string()]);
        if let Some((u, p)) = auth {
            cmd.args(["-u", u, "-P", p]);
        }
        Self::spawn(cmd, port, None, "microsocks")
    }

    /// haproxy on a free port: PROXY v2 in, sending from the header's
    /// source address to its destination.
    pub fn haproxy() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        let text = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
             frontend smtp_out\n    bind 127.0.0.1:{port} accept-proxy\n    default_backend to_mx\n\
             backend to_mx\n    source 0.0.0.0 usesrc clientip\n    server mx 0.0.0.0\n"
        );
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f"]).arg(&cfg);
        Self::spawn(cmd, port, Some(dir), "haproxy")
    }

    fn spawn(mut cmd: Command, port: u16, dir: Option<tempfile::TempDir>, name: &str) -> Self {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {name} ({e}): install the Debian package {name} (.ci/run does)"
                )
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let p = Self {
            addr,
            child,
            _dir: dir,
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} did not listen on {addr} within 10 s");
    }

    /// True when this HAProxy can send from the address a PROXY header
    /// names. On loopback every 127/8 address is local, so it can even
    /// without the capabilities `usesrc` asks for (checked here by running
    /// the tests with CAP_NET_ADMIN and CAP_NET_RAW dropped); the probe,
    /// one real connection through it, guards the setups where it cannot.
    pub fn binds_sources(&self) -> bool {
        use std::io::Write;
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            return false;
        };
        let port = l.local_addr().unwrap().port();
        let Ok(mut c) = std::net::TcpStream::connect(self.addr) else {
            return false;
        };
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 77, 127, 0, 0, 1, 0, 0]);
        h.extend_from_slice(&port.to_be_bytes());
        if c.write_all(&h).is_err() {
            return false;
        }
        l.set_nonblocking(true).unwrap();
        for _ in 0..100 {
            if let Ok((_, peer)) = l.accept() {
                return peer.ip() == IpAddr::from([127, 0, 0, 77]);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Its URL for `[[source]] proxy`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that accepts connections and never says a word.
pub struct Silent {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        Self { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port of 127.0.0.1 nothing listens on.
pub fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
