//! `[delivery]` and `[[route]]`: how queued mail leaves: limits per egress
//! path, retries, expiry, bounces, SMTP client timeouts, and per-domain
//! routing overrides.

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::{ByteSize, Duration};

/// Whether outbound sessions use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Never start TLS.
    Off,
    /// Start TLS when the server offers it; if the handshake fails, retry
    /// that host in plaintext. Certificates are not verified.
    Opportunistic,
    /// TLS is mandatory: a host that does not offer STARTTLS, or whose
    /// handshake fails, is skipped; never plaintext. Certificates are not
    /// verified.
    Required,
    /// TLS is mandatory and the host's certificate must be valid for its
    /// MX name, chained to the system's roots (or `tls_ca_file`'s); a
    /// host that fails is skipped, the mail deferred, never plaintext.
    Verify,
}

impl TlsPolicy {
    /// Mail must not leave in plaintext.
    pub fn requires_tls(self) -> bool {
        matches!(self, TlsPolicy::Required | TlsPolicy::Verify)
    }
}

/// What a bounce returns of the original message when the sender did not
/// say (DSN `RET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceReturn {
    /// The headers only.
    Headers,
    /// The whole message.
    Full,
}

/// Per-command timeouts of the SMTP client (RFC 5321 4.5.3.2 minimums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTimeouts {
    /// Establishing the TCP connection (through a proxy, the proxy's
    /// handshake and its CONNECT too).
    pub connect: Duration,
    /// Waiting for the 220 greeting.
    pub banner: Duration,
    /// EHLO / HELO.
    pub ehlo: Duration,
    /// STARTTLS and the handshake.
    pub starttls: Duration,
    /// MAIL FROM.
    pub mail: Duration,
    /// Each RCPT TO.
    pub rcpt: Duration,
    /// DATA (waiting for 354).
    pub data: Duration,
    /// Sending each block of message data.
    pub data_block: Duration,
    /// Waiting for the reply to the final dot.
    pub data_done: Duration,
    /// RSET and QUIT.
    pub rset: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            connect: s(30),
            banner: s(300),
            ehlo: s(300),
            starttls: s(120),
            mail: s(300),
            rcpt: s(300),
            data: s(120),
            data_block: s(180),
            data_done: s(600),
            rset: s(60),
        }
    }
}

/// A message's delivery priority class: due messages are taken, and jobs
/// leave their egress path, in this order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Transactional mail that must not wait (password resets, order
    /// confirmations).
    High,
    /// The default.
    #[default]
    Normal,
    /// Less urgent.
    Low,
    /// Campaigns: anything else goes first.
    Bulk,
}

impl Priority {
    /// The queue's priority number (0 first).
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The class of a queue priority number (past the last: bulk).
    pub fn from_rank(rank: u8) -> Self {
        match rank {
            0 => Self::High,
            1 => Self::Normal,
            2 => Self::Low,
            _ => Self::Bulk,
        }
    }

    /// Its name in the config and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
            Self::Bulk => "bulk",
        }
    }

    /// The class named `s` (case-insensitive), for the priority header.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Some(Self::High),
            "normal" => Some(Self::Normal),
            "low" => Some(Self::Low),
            "bulk" => Some(Self::Bulk),
            _ => None,
        }
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The pool of messages that name none (by header, user or listener).
    pub default_pool: String,
    /// A header naming the pool to send from (for example "X-Tern-Pool");
    /// removed from the message at intake. Unset: not used.
    pub pool_header: Option<String>,
    /// A header naming the message's priority class (for example
    /// "X-Tern-Priority: high"); removed at intake. Unset: not used.
    pub priority_header: Option<String>,
    /// TCP port of MX hosts.
    pub port: u16,
    /// STARTTLS: "off", "opportunistic", "required" or "verify".
    pub tls: TlsPolicy,
    /// Extra trusted roots (PEM) for `tls = "verify"`, besides the
    /// system's (a private CA); unset: the system's only.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Connections at once per egress path (source and destination site).
    pub connection_limit: u32,
    /// Messages sent over one connection before it is closed.
    pub max_messages_per_connection: u32,
    /// Recipients per transaction; more are sent in further transactions.
    pub max_recipients_per_transaction: u32,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// After this many consecutive failed connections (no host answered,
    /// or all refused), an egress path pauses: its mail waits without
    /// connecting until `dead_site_pause` is over (no attempt is counted,
    /// nothing bounces; `tern resume` and `tern retry` end it early).
    pub dead_site_failures: u32,
    /// How long a path paused by `dead_site_failures` waits before it
    /// tries again (one connection; success ends the pause).
    pub dead_site_pause: Duration,
    /// Messages being sent at once, over all paths: a bound on what
    /// delivery holds in RAM. Mail waiting for a rate, a connection, a
    /// suspension or a pause never counts; it waits in its destination's
    /// scheduled queue as metadata only.
    pub max_in_flight: u32,
    /// Bytes of message bodies being sent at once (read from the spool for
    /// the send); a send waits for room. A message larger than this is
    /// sent alone.
    pub max_in_flight_size: ByteSize,
    /// Jobs an egress path (source and site) keeps ready to send; the rest
    /// of a destination's mail waits in its scheduled queue, so that a
    /// path that cannot send holds no more than this, and a new message
    /// (of another tenant, or more urgent) waits behind at most this many.
    pub max_ready: u32,
    /// Body bytes of the jobs an egress path keeps ready to send.
    pub max_ready_size: ByteSize,
    /// Delay before the first retry of a deferred recipient; later delays
    /// double (with jitter) up to `retry_max`.
    pub retry_first: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
    /// A recipient still undelivered this long after reception expires and
    /// bounces.
    pub max_age: Duration,
    /// What bounces return of the original when the sender did not ask.
    pub bounce_return: BounceReturn,
    /// A recipient whose sender asked for delay notices (NOTIFY=DELAY)
    /// and that is still undelivered this long after reception gets one
    /// (at the first attempt past that time); "0s" sends none.
    pub delay_notice_after: Duration,
    /// After the first, a further delay notice each time this much more
    /// has passed, until the recipient is delivered or expires.
    pub delay_notice_interval: Duration,
    /// SMTP client timeouts.
    pub timeouts: ClientTimeouts,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            default_pool: "default".into(),
            pool_header: None,
            priority_header: None,
            port: 25,
            tls: TlsPolicy::Opportunistic,
            tls_ca_file: None,
            connection_limit: 10,
            max_messages_per_connection: 100,
            max_recipients_per_transaction: 100,
            idle_timeout: Duration::from_secs(10),
            dead_site_failures: 3,
            dead_site_pause: Duration::from_secs(300),
            max_in_flight: 10_000,
            max_in_flight_size: ByteSize(512 * 1024 * 1024),
            max_ready: 256,
            max_ready_size: ByteSize(64 * 1024 * 1024),
            retry_first: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            max_age: Duration::from_secs(5 * 86_400),
            bounce_return: BounceReturn::Headers,
            delay_notice_after: Duration::from_secs(4 * 3600),
            delay_notice_interval: Duration::from_secs(86_400),
            timeouts: ClientTimeouts::default(),
        }
    }
}

/// `[[route]]`: where one domain's mail goes instead of its MX hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// The recipient domain (exact, case-insensitive).
    pub domain: String,
    /// Relay through these hosts ("host:port" or "host"), in order.
    pub smarthost: Vec<String>,
    /// Use these MX host names (in order) instead of looking up MX records.
    pub mx: Vec<String>,
    /// STARTTLS policy for this domain (default: `delivery.tls`).
    pub tls: Option<TlsPolicy>,
}

impl DeliveryConfig {
    pub(super) fn validate(&self, pools: &[super::PoolConfig], issues: &mut Vec<Issue>) {
        let key = |f: &str| at("delivery").field(f);
        if !pools.iter().any(|p| p.name == self.default_pool) {
            issues.push(Issue::new(
                key("default_pool"),
                format!("no [[pool]] is named {:?}", self.default_pool),
            ));
        }
        for (name, header) in [
            ("pool_header", &self.pool_header),
            ("priority_header", &self.priority_header),
        ] {
            if let Some(h) = header
                && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
            {
                issues.push(Issue::new(
                    key(name),
                    format!("{h:?} is not a header field name"),
                ));
            }
        }
        for (name, v) in [
            ("connection_limit", self.connection_limit),
            (
                "max_messages_per_connection",
                self.max_messages_per_connection,
            ),
            (
                "max_recipients_per_transaction",
                self.max_recipients_per_transaction,
            ),
            ("max_in_flight", self.max_in_flight),
            ("max_ready", self.max_ready),
            ("dead_site_failures", self.dead_site_failures),
        ] {
            if v == 0 {
                issues.push(Issue::new(key(name), "must be at least 1"));
            }
        }
        for (name, v) in [
            ("max_in_flight_size", self.max_in_flight_size),
            ("max_ready_size", self.max_ready_size),
        ] {
            if v.0 < 1024 {
                issues.push(Issue::new(key(name), "must be at least 1KiB"));
            }
        }
        if self.retry_first.get().is_zero() || self.retry_first > self.retry_max {
            issues.push(Issue::new(
                key("retry_first"),
                "must be above 0s and at most retry_max",
            ));
        }
        if self.delay_notice_interval.get() < std::time::Duration::from_secs(60) {
            issues.push(Issue::new(
                key("delay_notice_interval"),
                "must be at least 1m",
            ));
        }
        if self.max_age < self.retry_first {
            issues.push(Issue::new(key("max_age"), "must be at least retry_first"));
        }
    }
}

pub(super) fn validate_routes(routes: &[RouteConfig], issues: &mut Vec<Issue>) {
    for (i, r) in routes.iter().enumerate() {
        let key = |f: &str| at("route").index(i).field(f);
        if !super::names::is_hostname(&r.domain) {
            issues.push(Issue::new(
                key("domain"),
                format!("{:?} is not a domain", r.domain),
            ));
        } else if routes[..i]
            .iter()
            .any(|o| o.domain.eq_ignore_ascii_case(&r.domain))
        {
            issues.push(Issue::new(
                key("domain"),
                format!("{:?} has two routes", r.domain),
            ));
        }
        if r.smarthost.is_empty() == r.mx.is_empty() {
            issues.push(Issue::new(
                key("smarthost"),
                "set exactly one of smarthost and mx",
            ));
        }
        for (j, h) in r.smarthost.iter().enumerate() {
            if super::names::parse_host_port(h).is_none() {
                issues.push(Issue::new(
                    key("smarthost").index(j),
                    format!("{h:?} is not host or host:port"),
                ));
            }
        }
        for (j, h) in r.mx.iter().enumerate() {
            if !super::names::is_hostname(h) {
                issues.push(Issue::new(
                    key("mx").index(j),
                    format!("{h:?} is not a host name"),
                ));
            }
        }
    }
}
