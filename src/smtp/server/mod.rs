//! The inbound ESMTP server: accepts connections on a listener, applies the
//! connection limits, and runs a session for each client.
//!
//! Layout: [`protocol`] is the state machine without I/O (one file per verb
//! group: `ehlo`, `mail`, `rcpt`, `data`, `auth`; `address` and `scan` are
//! the checks they share); [`session`] drives it over any stream (`conn`
//! adds STARTTLS); this file accepts connections. The server never touches
//! the queue directly: complete messages go to the intake.

mod address;
mod auth;
mod budget;
mod conn;
mod credentials;
mod data;
mod ehlo;
mod mail;
pub mod protocol;
mod rcpt;
mod scan;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

pub use budget::MemoryBudget;
pub use credentials::{Credentials, hash_password};
pub use protocol::SessionContext;
pub use session::{Phase, run_session};

use crate::smtp::reply::{self, Reply};

/// Open sessions, in total and per client address.
pub struct ConnLimits {
    max_total: u32,
    max_per_ip: u32,
    open: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

/// Holds one session's place; released when dropped.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    /// Limits of `max_total` sessions, `max_per_ip` per address.
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a place for a client at `ip`, or says why not.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Reply> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.max_total {
            return Err(reply::TOO_MANY_CONNECTIONS);
        }
        let per_ip = open.1.entry(ip).or_insert(0);
        if *per_ip >= self.max_per_ip {
            return Err(reply::TOO_MANY_FROM_IP);
        }
        *per_ip += 1;
        open.0 += 1;
        Ok(ConnGuard {
            limits: self.clone(),
            ip,
        })
    }

    /// Open sessions now.
    pub fn open(&self) -> u32 {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until the phase leaves `Running`. Each session
/// holds a clone of `sessions`; when every clone is dropped, all sessions
/// have ended.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    mut phase: watch::Receiver<Phase>,
    sessions: mpsc::Sender<()>,
) {
    let limits = ConnLimits::new(
        ctx.listener.max_connections,
        ctx.listener.max_connections_per_ip,
    );
    // A descriptor kept spare, to answer one client 421 when the process
    // runs out of them (rather than leave it waiting in the backlog).
    let mut spare = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = phase.changed() => {
                if *phase.borrow() != Phase::Running {
                    break;
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: answer one client
                // 421 with the spare descriptor, and back off instead of
                // spinning.
                tracing::warn!(error = %e, "accept failed");
                if out_of_descriptors(&e) {
                    shed(&listener, &mut spare).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match limits.acquire(peer.ip()) {
            Ok(guard) => {
                let (ctx, phase, done) = (ctx.clone(), phase.clone(), sessions.clone());
                tokio::spawn(async move {
                    run_session(stream, peer, ctx, phase).await;
                    drop((guard, done));
                });
            }
            Err(r) => {
                tracing::info!(peer = %peer, reply = %r.to_line(), "connection refused by limits");
                ctx.intake.refused(crate::metrics::Refusal::Connections);
                tokio::spawn(refuse(stream, r));
            }
        }
    }
    tracing::info!(address = %ctx.listener.address, "listener stopped accepting");
}

/// True when accept failed for want of a file descriptor.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

/// Frees the spare descriptor, accepts one waiting client and tells it
/// 421, then takes the spare again.
async fn shed(listener: &TcpListener, spare: &mut Option<std::fs::File>) {
    if spare.take().is_none() {
        return;
    }
    let waiting = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
    if let Ok(Ok((stream, peer))) = waiting {
        tracing::warn!(%peer, "out of file descriptors: client refused with 421");
        refuse(stream, reply::TOO_MANY_DESCRIPTORS).await;
    }
    *spare = std::fs::File::open("/dev/null").ok();
}

/// Tells a client it cannot be served now, then closes.
async fn refuse(mut stream: TcpStream, r: Reply) {
    let mut out = Vec::new();
    r.write(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&out)).await;
}

/// The peer address of a session; used by tests that drive sessions over
/// in-memory streams.
pub fn loopback_peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
