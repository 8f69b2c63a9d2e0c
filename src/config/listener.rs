//! `[[listener]]`: where Tern accepts SMTP from upstream applications, who
//! may relay through it, and the limits each session lives under.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::{ByteSize, Cidr, Duration};

/// What to do with a bare CR or LF (not part of CRLF) in message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Refuse the message with `550 5.6.0`.
    Reject,
    /// Turn each bare CR or LF into CRLF and accept the message.
    Normalize,
}

/// What to do with a line of message data over `max_data_line_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongLines {
    /// Refuse the message with `550 5.6.0`, naming the line.
    Reject,
    /// Re-encode each text part with such a line as quoted-printable
    /// before signing (a long header line, or one in a part already
    /// encoded or in an attached message, is still refused).
    Encode,
}

/// What to do with NUL bytes in message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NulBytes {
    /// Refuse the message with `550 5.6.0`.
    Reject,
    /// Remove them and accept the message.
    Strip,
}

/// One SMTP listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address and port to accept SMTP connections on.
    pub address: SocketAddr,
    /// Clients that may relay without AUTH (addresses or CIDR networks).
    /// Everyone else must authenticate, or gets `554 5.7.1` at RCPT.
    pub relay_from: Vec<Cidr>,
    /// PEM certificate chain for STARTTLS. STARTTLS is offered only when
    /// both this and `tls_key` are set.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_certificate`.
    pub tls_key: Option<PathBuf>,
    /// Largest message accepted (advertised as SIZE; `552 5.3.4` above it).
    pub max_message_size: ByteSize,
    /// Recipients per message; each one beyond gets `452 4.5.3`.
    pub max_recipients: u32,
    /// Longest command line in bytes, CRLF included (`500 5.5.2` beyond).
    pub max_line_length: u32,
    /// Longest line of message data in bytes, CRLF excluded; RFC 5322 says
    /// 998. Longer lines get `550 5.6.0` (or see `long_lines`). 0 allows
    /// any length.
    pub max_data_line_length: u32,
    /// A line over `max_data_line_length`: "reject" (`550 5.6.0`, the
    /// default) or "encode" (the part is re-encoded as quoted-printable,
    /// for applications that cannot be fixed).
    pub long_lines: LongLines,
    /// Bare CR or LF in message data: "reject" (`550 5.6.0`) or "normalize".
    pub bare_line_endings: BareLineEndings,
    /// NUL bytes in message data (RFC 5321 4.1.1.4 forbids them; receivers
    /// treat them in different ways, which smuggling exploits): "reject"
    /// (`550 5.6.0`) or "strip".
    pub nul_bytes: NulBytes,
    /// Enforce command synchronization (RFC 2920 3.1): input sent ahead of
    /// a reply the client had to wait for (after EHLO, HELO, DATA, QUIT,
    /// or any command without PIPELINING) ends the session with `554
    /// 5.5.0`. Pipelined MAIL/RCPT/DATA and BDAT chunks are not affected.
    pub strict_pipelining: bool,
    /// Open sessions on this listener; beyond, new clients get `421 4.3.2`.
    pub max_connections: u32,
    /// Open sessions per client address; beyond, `421 4.7.0`.
    pub max_connections_per_ip: u32,
    /// How long a client may take to send each command, and each block of
    /// message data (`421 4.4.2` after it).
    pub command_timeout: Duration,
    /// Longest a session may last, however busy (`421 4.4.2` after it).
    pub session_timeout: Duration,
    /// Slowest accepted message data, in bytes per second, after a first
    /// `command_timeout` of grace: a trickling client cannot hold a slot.
    pub min_data_rate: ByteSize,
    /// Errors (rejected or malformed commands) before the session is closed
    /// with `421 4.7.0`.
    pub max_errors: u32,
    /// Messages with more Received headers than this are refused as a mail
    /// loop (`554 5.4.6`).
    pub max_received_headers: u32,
    /// Add a Message-ID header to messages that lack one.
    pub add_message_id: bool,
    /// Add a Date header to messages that lack one.
    pub add_date: bool,
    /// The pool messages from this listener are sent from, unless their
    /// user or header names another (default: `delivery.default_pool`).
    pub pool: Option<String>,
    /// The tenant messages from this listener belong to, unless their user
    /// names another.
    pub tenant: Option<String>,
    /// The priority class of its messages ("high", "normal", "low",
    /// "bulk"), unless their header, user or tenant says otherwise.
    pub priority: Option<super::Priority>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 2525)),
            relay_from: vec![
                "127.0.0.0/8".parse().expect("valid network"),
                "::1/128".parse().expect("valid network"),
            ],
            tls_certificate: None,
            tls_key: None,
            max_message_size: ByteSize(25_000_000),
            max_recipients: 1000,
            max_line_length: 2048,
            max_data_line_length: 998,
            long_lines: LongLines::Reject,
            bare_line_endings: BareLineEndings::Reject,
            nul_bytes: NulBytes::Reject,
            strict_pipelining: true,
            max_connections: 1000,
            max_connections_per_ip: 200,
            command_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
            min_data_rate: ByteSize(500),
            max_errors: 20,
            max_received_headers: 100,
            add_message_id: true,
            add_date: true,
            pool: None,
            tenant: None,
            priority: None,
        }
    }
}

/// The listeners used when the file declares none: one on 127.0.0.1:2525.
pub fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig::default()]
}

impl ListenerConfig {
    /// True if STARTTLS is configured.
    pub fn tls_enabled(&self) -> bool {
        self.tls_certificate.is_some() && self.tls_key.is_some()
    }

    fn validate(&self, i: usize, issues: &mut Vec<Issue>) {
        let key = |f: &str| at("listener").index(i).field(f);
        if self.tls_certificate.is_some() != self.tls_key.is_some() {
            let missing = if self.tls_key.is_none() {
                "tls_key"
            } else {
                "tls_certificate"
            };
            issues.push(Issue::new(
                key(missing),
                "tls_certificate and tls_key must be set together",
            ));
        }
        if self.max_message_size.0 < 1000 || self.max_message_size.0 > 512_000_000 {
            issues.push(Issue::new(
                key("max_message_size"),
                "must be between 1KB and 512MB",
            ));
        }
        if self.max_recipients < 100 {
            issues.push(Issue::new(
                key("max_recipients"),
                "RFC 5321 requires accepting at least 100 recipients",
            ));
        }
        if !(512..=65_536).contains(&self.max_line_length) {
            issues.push(Issue::new(
                key("max_line_length"),
                "must be between 512 (the RFC 5321 minimum) and 65536",
            ));
        }
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_errors", self.max_errors),
        ] {
            if v == 0 {
                issues.push(Issue::new(key(name), "must be at least 1"));
            }
        }
        for (name, d) in [
            ("command_timeout", self.command_timeout),
            ("session_timeout", self.session_timeout),
        ] {
            if d.get().is_zero() {
                issues.push(Issue::new(key(name), "must be above 0s"));
            }
        }
    }
}

pub(super) fn validate(listeners: &[ListenerConfig], issues: &mut Vec<Issue>) {
    if listeners.is_empty() {
        issues.push(Issue::new(
            at("listener"),
            "at least one listener is needed",
        ));
    }
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i]
            .iter()
            .any(|other| other.address == l.address)
        {
            issues.push(Issue::new(
                at("listener").index(i).field("address"),
                format!("{} is used by an earlier listener", l.address),
            ));
        }
        l.validate(i, issues);
    }
}
