//! The outbound SMTP client: connects from an egress source to one MX
//! address, greets (EHLO, HELO fallback), starts TLS per policy, and runs
//! transactions with pipelining, reporting a result per recipient.
//!
//! Replies are framed here (bounded in size, malformed ones refused) and
//! parsed by smtp-proto. Message data is dot-stuffed on the way out and
//! ends with exactly one CRLF.CRLF. Every wait has its own timeout from
//! `[delivery.timeouts]`.

mod conn;
mod reply;
mod tls;
mod transaction;

use std::io;
use std::net::{IpAddr, SocketAddr};

pub use conn::{Capabilities, Connection, Greeting};
pub use reply::parse_reply;
pub use tls::{TlsFailure, Verifier};
pub use transaction::{RcptRequest, RcptResult, TxnRequest, local_reply, stuff as dot_stuff};

/// A reply from the remote server, made safe for logs and bounces (no
/// control characters; lines joined with " / ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code, or `[0, 0, 0]` if the server gave none.
    pub esc: [u8; 3],
    /// The text.
    pub text: String,
}

impl RemoteReply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply's enhanced code, or one derived from its class.
    pub fn status(&self) -> [u8; 3] {
        if self.esc[0] != 0 {
            self.esc
        } else {
            [(self.code / 100) as u8, 0, 0]
        }
    }
}

impl std::fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.esc;
        if a == 0 {
            write!(f, "{} {}", self.code, self.text)
        } else {
            write!(f, "{} {a}.{b}.{c} {}", self.code, self.text)
        }
    }
}

/// Why a connection or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The source address could not be bound (the source is unusable; not
    /// the destination's fault).
    #[error("cannot bind source address {0}: {1}")]
    Bind(IpAddr, io::Error),
    /// The source's egress proxy gave no connection (its fault, or the
    /// destination's as it reports: [`ProxyError::is_proxy_fault`]).
    #[error("{0}")]
    Proxy(#[from] crate::egress::proxy::ProxyError),
    /// TCP connect failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    /// A wait ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection broke.
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    /// The server said something that is not an SMTP reply.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the session (greeting, EHLO or STARTTLS).
    #[error("{stage} refused: {reply}")]
    Rejected {
        /// Which step.
        stage: &'static str,
        /// What it said.
        reply: RemoteReply,
    },
    /// TLS could not be established, or not as the policy requires.
    #[error("TLS: {1}")]
    Tls(TlsFailure, String),
}
