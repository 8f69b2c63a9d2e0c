//! Live tracing of SMTP dialogues (`tern trace`, `GET /v1/trace`): the
//! commands and replies of inbound sessions and outbound connections, as
//! they happen, for whoever is watching. Message content (DATA and BDAT
//! payloads) is never traced, and AUTH credentials are masked.
//!
//! Costs nothing while nobody watches: every trace point first reads one
//! atomic counter of watchers; only when it is non-zero is an event built
//! and broadcast. A watcher that falls behind is told how many events it
//! missed, and never slows a session down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events a watcher may fall behind by before it misses some.
const BACKLOG: usize = 4096;

/// Longest traced line, in characters.
const MAX_LINE: usize = 512;

/// Which side of Tern a session is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// A client sending to Tern.
    In,
    /// Tern sending to a next hop.
    Out,
}

/// One traced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceEvent {
    /// When (RFC 3339, milliseconds).
    pub at: String,
    /// The session (inbound) or connection (outbound), numbered from the
    /// daemon's start.
    pub session: u64,
    /// Inbound or outbound.
    pub side: Side,
    /// The other end's address.
    pub peer: String,
    /// Outbound: the host connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Outbound: the recipient domain whose mail opened the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Outbound: the source it leaves from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `>` sent by Tern, `<` received by Tern, `*` what happened (opened,
    /// closed, TLS).
    pub dir: String,
    /// The line (commands and replies; never message content).
    pub text: String,
}

/// Which sessions a watcher wants: every criterion given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceFilter {
    /// Outbound connections opened for mail to this domain.
    pub domain: Option<String>,
    /// Outbound connections from this source.
    pub source: Option<String>,
    /// Inbound sessions from this client address.
    pub client: Option<std::net::IpAddr>,
}

impl TraceFilter {
    /// True if `e` is wanted.
    pub fn matches(&self, e: &TraceEvent) -> bool {
        let domain = (self.domain.as_deref()).is_none_or(|d| {
            e.domain
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(d))
        });
        let source = (self.source.as_deref()).is_none_or(|s| e.source.as_deref() == Some(s));
        let client = self.client.is_none_or(|ip| {
            e.side == Side::In && e.peer.parse::<SocketAddr>().is_ok_and(|p| p.ip() == ip)
        });
        domain && source && client
    }
}

/// The daemon's tracer: one per daemon, shared by the SMTP server, the
/// SMTP client and the admin API.
pub struct Tracer {
    tx: broadcast::Sender<Arc<TraceEvent>>,
    watchers: AtomicUsize,
    sessions: AtomicU64,
}

impl Default for Tracer {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            watchers: AtomicUsize::new(0),
            sessions: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("watchers", &self.watchers.load(Ordering::Relaxed))
            .finish()
    }
}

/// A watcher's subscription; counted until dropped.
pub struct Watch {
    tracer: Arc<Tracer>,
    /// The events, as they come.
    pub rx: broadcast::Receiver<Arc<TraceEvent>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.tracer.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracer {
    /// A new tracer, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts watching.
    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            tracer: self.clone(),
            rx: self.tx.subscribe(),
        }
    }

    /// True while someone watches: the one check on every trace point.
    pub fn active(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// A number for a new session or connection.
    pub fn next_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends `event` to the watchers (built only when someone watches).
    pub fn emit(&self, event: impl FnOnce() -> TraceEvent) {
        if self.active() {
            let _ = self.tx.send(Arc::new(event()));
        }
    }
}

/// What an outbound connection's events say of it.
#[derive(Clone)]
pub struct OutboundTrace {
    pub tracer: Arc<Tracer>,
    pub session: u64,
    pub domain: Arc<str>,
    pub source: Arc<str>,
}

impl OutboundTrace {
    /// Traces each line of `bytes` (commands sent, or a reply received).
    pub fn lines(&self, peer: SocketAddr, host: &str, dir: &str, bytes: &[u8]) {
        if !self.tracer.active() {
            return;
        }
        for line in split_lines(bytes) {
            self.tracer.emit(|| TraceEvent {
                at: now(),
                session: self.session,
                side: Side::Out,
                peer: peer.to_string(),
                host: Some(host.to_owned()),
                domain: Some(self.domain.to_string()),
                source: Some(self.source.to_string()),
                dir: dir.to_owned(),
                text: line,
            });
        }
    }
}

/// An inbound event.
pub fn inbound(session: u64, peer: SocketAddr, dir: &str, text: String) -> TraceEvent {
    TraceEvent {
        at: now(),
        session,
        side: Side::In,
        peer: peer.to_string(),
        host: None,
        domain: None,
        source: None,
        dir: dir.to_owned(),
        text,
    }
}

/// The lines of `bytes`, printable and capped.
pub fn split_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(|l| {
            String::from_utf8_lossy(l)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(MAX_LINE)
                .collect()
        })
        .collect()
}

/// A client's command line as it may be shown: AUTH arguments and the
/// answers to a 334 challenge are masked.
pub fn masked(line: String, answering_challenge: bool) -> String {
    if answering_challenge {
        return "*** (credentials)".into();
    }
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some(verb), Some(mech), Some(_)) if verb.eq_ignore_ascii_case("AUTH") => {
            format!("{verb} {mech} ***")
        }
        _ => line,
    }
}

fn now() -> String {
    crate::clock::rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_while_nobody_watches_and_credentials_are_masked() {
        let t = Tracer::new();
        let mut built = 0;
        t.emit(|| {
            built += 1;
            inbound(1, "127.0.0.1:1".parse().unwrap(), "<", "EHLO x".into())
        });
        assert_eq!(built, 0);
        let mut w = t.watch();
        t.emit(|| inbound(1, "127.0.0.1:1".parse().unwrap(), "<", "EHLO x".into()));
        assert_eq!(w.rx.try_recv().unwrap().text, "EHLO x");
        drop(w);
        assert!(!t.active());
        assert_eq!(
            masked("AUTH PLAIN AGFiYwBz".into(), false),
            "AUTH PLAIN ***"
        );
        assert_eq!(masked("AUTH LOGIN".into(), false), "AUTH LOGIN");
        assert_eq!(masked("c2VjcmV0".into(), true), "*** (credentials)");
        assert_eq!(split_lines(b"250-a\r\n250 b\x07\r\n"), ["250-a", "250 b?"]);
    }

    #[test]
    fn filters_pick_sessions() {
        let peer: SocketAddr = "127.0.0.9:25".parse().unwrap();
        let mut out = inbound(1, peer, ">", "MAIL FROM:<a@b>".into());
        out.side = Side::Out;
        out.domain = Some("gmail.com".into());
        out.source = Some("ip1".into());
        let f = |d: Option<&str>, s: Option<&str>, c: Option<&str>| TraceFilter {
            domain: d.map(Into::into),
            source: s.map(Into::into),
            client: c.map(|c| c.parse().unwrap()),
        };
        assert!(f(Some("GMAIL.com"), None, None).matches(&out));
        assert!(f(Some("gmail.com"), Some("ip1"), None).matches(&out));
        assert!(!f(None, Some("ip2"), None).matches(&out));
        assert!(
            !f(None, None, Some("127.0.0.9")).matches(&out),
            "inbound only"
        );
        let inb = inbound(2, peer, "<", "EHLO x".into());
        assert!(f(None, None, Some("127.0.0.9")).matches(&inb));
        assert!(!f(Some("gmail.com"), None, None).matches(&inb));
    }
}
