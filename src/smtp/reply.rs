//! SMTP replies: the type, every fixed reply Tern sends, and the one place
//! that maps internal errors (queue, intake, parser) to a reply.
//!
//! Every reply carries an enhanced status code (RFC 3463); Tern advertises
//! ENHANCEDSTATUSCODES. Back-pressure is always 4xx, never 5xx: a full or
//! unhealthy queue asks the client to try again, it never bounces.

use std::borrow::Cow;

use queue::{Health, QueueError};

use crate::intake::IntakeError;

/// One SMTP reply, possibly several lines (`text` lines split on `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (class, subject, detail).
    pub esc: [u8; 3],
    /// The text; `\n` separates lines of a multi-line reply.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with fixed text.
    pub const fn new(code: u16, esc: [u8; 3], text: &'static str) -> Self {
        Self {
            code,
            esc,
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with text built at run time. Control characters in the text
    /// are replaced, so nothing a client sent can break the reply's framing.
    pub fn owned(code: u16, esc: [u8; 3], text: String) -> Self {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
            .collect();
        Self {
            code,
            esc,
            text: Cow::Owned(clean),
        }
    }

    /// Appends the reply, CRLF-terminated, to `out` (no allocation: this
    /// runs several times per message).
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { b'-' } else { b' ' };
            self.write_prefix(out, sep);
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Writes `250 2.0.0 ` (code, separator, enhanced code, space).
    fn write_prefix(&self, out: &mut Vec<u8>, sep: u8) {
        let [a, b, c] = self.esc;
        let code = [
            b'0' + (self.code / 100 % 10) as u8,
            b'0' + (self.code / 10 % 10) as u8,
            b'0' + (self.code % 10) as u8,
        ];
        out.extend_from_slice(&code);
        out.push(sep);
        for (i, part) in [a, b, c].into_iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            if part >= 100 {
                out.push(b'0' + part / 100);
            }
            if part >= 10 {
                out.push(b'0' + part / 10 % 10);
            }
            out.push(b'0' + part % 10);
        }
        out.push(b' ');
    }

    /// Writes this reply with `extra` appended to its (one-line) text,
    /// without building a new reply; `extra` must be Tern's own text.
    pub fn write_with(&self, out: &mut Vec<u8>, extra: std::fmt::Arguments<'_>) {
        use std::io::Write;
        self.write_prefix(out, b' ');
        out.extend_from_slice(self.text.as_bytes());
        let _ = out.write_fmt(extra);
        out.extend_from_slice(b"\r\n");
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply as one line of text, for logs.
    pub fn to_line(&self) -> String {
        let [a, b, c] = self.esc;
        format!(
            "{} {a}.{b}.{c} {}",
            self.code,
            self.text.replace('\n', " / ")
        )
    }
}

// Positive replies.
pub const OK: Reply = Reply::new(250, [2, 0, 0], "Ok");
pub const RESET: Reply = Reply::new(250, [2, 0, 0], "Flushed");
pub const SENDER_OK: Reply = Reply::new(250, [2, 1, 0], "Sender ok");
pub const RECIPIENT_OK: Reply = Reply::new(250, [2, 1, 5], "Recipient ok");
pub const GOODBYE: Reply = Reply::new(221, [2, 0, 0], "Bye");
pub const START_DATA: Reply = Reply::new(354, [2, 0, 0], "End data with <CR><LF>.<CR><LF>");
pub const START_TLS: Reply = Reply::new(220, [2, 0, 0], "Ready to start TLS");
pub const VRFY: Reply = Reply::new(
    252,
    [2, 5, 2],
    "Cannot VRFY user, but will accept the message and attempt delivery",
);
/// The HELP reply: the commands this session can use now (STARTTLS only
/// while it is offered, AUTH only where it is).
pub fn help(starttls: bool, auth: bool) -> Reply {
    let mut text = String::from(
        "Tern SMTP: see RFC 5321. Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
    );
    if starttls {
        text.push_str(" STARTTLS");
    }
    if auth {
        text.push_str(" AUTH");
    }
    Reply::owned(214, [2, 0, 0], text)
}
/// The reply to a queued message: `250 2.0.0 Ok queued as <id>`.
pub const QUEUED: Reply = Reply::new(250, [2, 0, 0], "Ok queued as ");
pub const AUTH_OK: Reply = Reply::new(235, [2, 7, 0], "Authentication successful");

// Closing the session (421).
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, [4, 3, 2], "Service shutting down, try again later");
/// The process is out of file descriptors: this client waits its turn.
pub const TOO_MANY_DESCRIPTORS: Reply = Reply::new(
    421,
    [4, 3, 2],
    "Too many connections right now, try again later",
);
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, [4, 3, 2], "Too many connections, try again later");
pub const TOO_MANY_FROM_IP: Reply = Reply::new(
    421,
    [4, 7, 0],
    "Too many connections from your address, try again later",
);
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, [4, 7, 0], "Too many errors, closing connection");
pub const TIMEOUT: Reply = Reply::new(421, [4, 4, 2], "Timeout exceeded, closing connection");
pub const TOO_SLOW: Reply = Reply::new(
    421,
    [4, 4, 2],
    "Data arriving too slowly, closing connection",
);
pub const SESSION_TOO_LONG: Reply = Reply::new(
    421,
    [4, 4, 2],
    "Session lasted too long, closing connection",
);
pub const TOO_MANY_AUTH_FAILURES: Reply = Reply::new(
    421,
    [4, 7, 0],
    "Too many authentication failures, closing connection",
);

/// The node is being drained: its queue moves to its peers.
pub const DRAINING: Reply = Reply::new(
    421,
    [4, 3, 2],
    "This server is being drained; use another, or try again later",
);

// Temporary refusals.
pub const MEMORY_EXHAUSTED: Reply = Reply::new(
    452,
    [4, 3, 1],
    "Insufficient system resources, try again later",
);
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, [4, 5, 3], "Too many recipients");
pub const AUTH_RATE_LIMITED: Reply = Reply::new(
    454,
    [4, 7, 0],
    "Too many failed authentications from your address, try again later",
);
pub const AUTH_TEMP_FAILURE: Reply = Reply::new(454, [4, 7, 0], "Temporary authentication failure");

// Permanent refusals.
pub const UNKNOWN_COMMAND: Reply = Reply::new(500, [5, 5, 2], "Command not recognized");
pub const LINE_TOO_LONG: Reply = Reply::new(500, [5, 5, 2], "Line too long");
pub const BAD_CHARACTERS: Reply = Reply::new(
    501,
    [5, 5, 2],
    "Invalid characters in command (NUL, CR or invalid UTF-8)",
);
pub const BAD_SENDER: Reply = Reply::new(501, [5, 1, 7], "Bad sender address syntax");
pub const BAD_RECIPIENT: Reply = Reply::new(501, [5, 1, 3], "Bad recipient address syntax");
pub const BAD_PARAMETER: Reply = Reply::new(501, [5, 5, 4], "Invalid parameter value");
pub const BAD_BASE64: Reply = Reply::new(501, [5, 5, 2], "Invalid base64 data");
pub const AUTH_CANCELLED: Reply = Reply::new(501, [5, 7, 0], "Authentication cancelled");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, [5, 5, 1], "Command not implemented");
pub const NO_TLS: Reply = Reply::new(502, [5, 5, 1], "STARTTLS not available");
pub const NO_AUTH: Reply = Reply::new(502, [5, 5, 1], "AUTH not available");
pub const NEED_HELO: Reply = Reply::new(503, [5, 5, 1], "Send HELO or EHLO first");
pub const NEED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Need MAIL command first");
pub const NEED_RCPT: Reply = Reply::new(503, [5, 5, 1], "Need RCPT command first");
pub const NESTED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Nested MAIL command");
pub const TLS_ACTIVE: Reply = Reply::new(503, [5, 5, 1], "TLS already active");
pub const ALREADY_AUTHENTICATED: Reply = Reply::new(503, [5, 5, 1], "Already authenticated");
pub const AUTH_IN_TRANSACTION: Reply =
    Reply::new(503, [5, 5, 1], "AUTH not allowed during a mail transaction");
pub const BAD_SEQUENCE: Reply = Reply::new(503, [5, 5, 1], "Bad sequence of commands");
pub const BDAT_IN_PROGRESS: Reply = Reply::new(503, [5, 5, 1], "DATA not allowed after BDAT");
pub const UNKNOWN_MECHANISM: Reply =
    Reply::new(504, [5, 5, 4], "Unrecognized authentication mechanism");
pub const AUTH_INVALID: Reply = Reply::new(535, [5, 7, 8], "Authentication credentials invalid");
pub const ENCRYPTION_REQUIRED: Reply = Reply::new(
    538,
    [5, 7, 11],
    "Encryption required for requested authentication mechanism",
);
pub const BARE_LINE_ENDING: Reply = Reply::new(
    550,
    [5, 6, 0],
    "Message contains a bare CR or LF; lines must end with CRLF",
);
/// A line of message data over the limit: which line, how long, and
/// what the sender can do about it.
pub fn data_line_too_long(line: usize, octets: usize, max: usize) -> Reply {
    Reply::owned(
        550,
        [5, 6, 0],
        format!(
            "Line {line} of the message is {octets} octets long, over the limit of {max} (RFC 5322 2.1.1); encode the body as quoted-printable or base64"
        ),
    )
}
pub const MESSAGE_TOO_BIG: Reply =
    Reply::new(552, [5, 3, 4], "Message size exceeds the fixed limit");
pub const SMTPUTF8_REQUIRED: Reply = Reply::new(
    553,
    [5, 6, 7],
    "Non-ASCII address requires the SMTPUTF8 parameter",
);
pub const RELAY_DENIED: Reply = Reply::new(554, [5, 7, 1], "Relay access denied");
pub const NO_VALID_RECIPIENTS: Reply = Reply::new(554, [5, 5, 1], "No valid recipients");
pub const NUL_BYTES: Reply = Reply::new(
    550,
    [5, 6, 0],
    "Message data contains NUL bytes (RFC 5321 4.1.1.4)",
);
pub const SYNC_ERROR: Reply = Reply::new(
    554,
    [5, 5, 0],
    "SMTP protocol synchronization error: data sent before the reply",
);
pub const BAD_TERMINATOR: Reply = Reply::new(
    554,
    [5, 5, 0],
    "Malformed end of data (only CRLF.CRLF ends data); closing connection",
);
pub const UNSUPPORTED_PARAMETER: Reply = Reply::new(555, [5, 5, 4], "Unsupported parameter");

/// The greeting (or, when the queue refuses new mail or the node drains,
/// the refusal).
pub fn greeting(hostname: &str, health: &Health, draining: bool) -> Reply {
    match health {
        _ if draining => DRAINING,
        Health::Healthy => Reply::owned(220, [2, 0, 0], format!("{hostname} ESMTP Tern")),
        _ => Reply::new(
            421,
            [4, 3, 2],
            "Mail system temporarily unable to accept mail, try again later",
        ),
    }
}

/// The refusal at MAIL when the queue cannot take more mail, if it cannot.
pub fn queue_refusal_at_mail(health: &Health, over_limit: bool) -> Option<Reply> {
    match health {
        Health::Healthy if !over_limit => None,
        _ => Some(Reply::new(
            452,
            [4, 3, 1],
            "Insufficient system storage, try again later",
        )),
    }
}

/// The reply after the data for a message the intake refused.
pub fn intake_refusal(e: &IntakeError) -> Reply {
    match e {
        IntakeError::Queue(QueueError::Invalid(_)) => MESSAGE_TOO_BIG,
        IntakeError::Queue(q) if q.is_temporary() => {
            Reply::new(451, [4, 3, 0], "Queue write error, try again later")
        }
        IntakeError::Queue(_) => Reply::new(451, [4, 3, 0], "Queue error, try again later"),
        IntakeError::Loop { .. } => Reply::new(554, [5, 4, 6], "Too many hops: mail loop detected"),
        IntakeError::SenderMismatch { domain, tenant } => Reply::owned(
            550,
            [5, 7, 1],
            format!("Sender domain {domain} is not one of tenant {tenant}'s domains"),
        ),
        IntakeError::QueueFull => Reply::new(
            452,
            [4, 3, 1],
            "Insufficient system storage, try again later",
        ),
        IntakeError::Signing(_) => Reply::new(
            451,
            [4, 3, 0],
            "Local error in DKIM signing, try again later",
        ),
    }
}

/// The reply to a command line smtp-proto could not parse.
pub fn parse_error(e: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => UNKNOWN_COMMAND,
        E::InvalidSenderAddress => BAD_SENDER,
        E::InvalidRecipientAddress => BAD_RECIPIENT,
        E::SyntaxError { syntax } => Reply::owned(501, [5, 5, 4], format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => Reply::owned(
            501,
            [5, 5, 4],
            format!("Invalid value for parameter {param}"),
        ),
        E::UnsupportedParameter { .. } => UNSUPPORTED_PARAMETER,
        E::ResponseTooLong => LINE_TOO_LONG,
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => {
            Reply::new(500, [5, 5, 2], "Syntax error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Reply) -> String {
        let mut v = Vec::new();
        r.write(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn single_and_multi_line() {
        assert_eq!(text(&OK), "250 2.0.0 Ok\r\n");
        let r = Reply::owned(250, [2, 0, 0], "a\nb\nc".into());
        assert_eq!(text(&r), "250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n");
    }

    #[test]
    fn client_text_cannot_break_framing() {
        let r = Reply::owned(501, [5, 5, 4], "bad \r\n250 fake".into());
        assert_eq!(text(&r), "501-5.5.4 bad ?\r\n501 5.5.4 250 fake\r\n");
    }

    #[test]
    fn back_pressure_is_never_permanent() {
        let full = Health::Full("disk".into());
        assert_eq!(greeting("h", &full, false).code, 421);
        assert_eq!(queue_refusal_at_mail(&full, false).unwrap().code, 452);
        assert_eq!(
            queue_refusal_at_mail(&Health::Healthy, true).unwrap().code,
            452
        );
        assert!(queue_refusal_at_mail(&Health::Healthy, false).is_none());
        let e = IntakeError::Queue(QueueError::Unhealthy("sync failed".into()));
        assert_eq!(intake_refusal(&e).code, 451);
        assert_eq!(intake_refusal(&IntakeError::QueueFull).code, 452);
    }
}
