//! Delivery status notifications (RFC 3464), sent from `<>` to the
//! envelope sender, never for a message whose sender is `<>`: bounces for
//! recipients that failed or expired (one per message and failure event),
//! delay notices for recipients still being retried, and relay notices
//! for recipients handed to a next hop that does not offer DSN.
//!
//! NOTIFY is honoured per recipient (absent means FAILURE only: delay and
//! relay notices go only to those who asked), RET decides whether a
//! bounce returns the original's headers or the whole message (other
//! notices return the headers), and ENVID and ORCPT are echoed. Everything taken from a remote server or a
//! client (reply text, host names) arrives already made printable and is
//! capped, so no value can add header fields or break the report's lines.

use std::time::SystemTime;

use queue::{EnvelopeRecipient, MessageId};
use smtp_proto::{RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS};

use crate::clock::rfc5322;
use crate::message::{MessageMeta, RecipientParams, Ret};
use crate::smtp::client::RemoteReply;

/// Longest Diagnostic-Code text kept.
const MAX_DIAGNOSTIC: usize = 900;

/// What a notice reports of a recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Failed for good: bounced.
    Failed,
    /// Ran out of time (`max_age`) rather than failing permanently.
    Expired,
    /// Not delivered yet; still being retried.
    Delayed,
    /// Handed to a next hop that sends no notices of its own.
    Relayed,
}

impl Action {
    fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Expired)
    }
}

/// One recipient to report on.
pub struct Failure<'a> {
    /// The recipient.
    pub rcpt: &'a EnvelopeRecipient,
    /// The last reply or local reason.
    pub reply: &'a RemoteReply,
    /// The host that answered, if one did.
    pub remote_host: Option<&'a str>,
    /// What happened to it.
    pub action: Action,
}

/// Everything a bounce is made of.
pub struct Bounce<'a> {
    /// This MTA's name.
    pub hostname: &'a str,
    /// The failed message's queue id.
    pub id: MessageId,
    /// Its envelope sender (the bounce's recipient).
    pub sender: &'a str,
    /// Its metadata (ENVID, RET).
    pub meta: &'a MessageMeta,
    /// When it was received.
    pub arrival: SystemTime,
    /// Now.
    pub now: SystemTime,
    /// The recipients reported on.
    pub failures: Vec<Failure<'a>>,
    /// The original message (headers and body).
    pub original: &'a [u8],
    /// What to return when the sender did not say (RET).
    pub default_ret: Ret,
    /// Until when delivery goes on (delay notices).
    pub retry_until: Option<SystemTime>,
}

/// True if the recipient's NOTIFY asks for a notice of `action` (no
/// NOTIFY means FAILURE only, RFC 3461 4.1).
pub fn wants_notice(params: &[u8], action: Action) -> bool {
    let notify = u64::from(RecipientParams::decode(params).notify);
    if notify & RCPT_NOTIFY_NEVER != 0 {
        return false;
    }
    match action {
        Action::Failed | Action::Expired => notify == 0 || notify & RCPT_NOTIFY_FAILURE != 0,
        Action::Delayed => notify & RCPT_NOTIFY_DELAY != 0,
        Action::Relayed => notify & RCPT_NOTIFY_SUCCESS != 0,
    }
}

/// The notice's subject and opening words, by what it reports (a notice
/// reports one kind: failures, or delays, or relays).
fn wording(b: &Bounce<'_>) -> (&'static str, String) {
    let first = b.failures.first().map_or(Action::Failed, |f| f.action);
    match first {
        Action::Failed | Action::Expired => (
            "Undelivered Mail Returned to Sender",
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.".into(),
        ),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            format!(
                "This is a warning only; you do not need to send your message again.\r\nIt has not yet been delivered to the recipients below; delivery\r\nwill be tried again until {}.",
                b.retry_until.map_or_else(|| "it expires".to_owned(), rfc5322)
            ),
        ),
        Action::Relayed => (
            "Successful Mail Delivery Report",
            "Your message was relayed to the mail systems of the recipients below,\r\nwhich send no delivery notices: no further notice will follow.".into(),
        ),
    }
}

/// The bounce message (CRLF line ends).
pub fn build(b: &Bounce<'_>) -> Vec<u8> {
    let boundary = format!("{}.{:08x}/{}", b.id, fastrand::u32(..), b.hostname);
    let ms = b
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut out = String::with_capacity(2048 + b.original.len().min(1 << 20));
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}.{ms}.bounce@{host}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n",
        host = b.hostname,
        to = b.sender,
        date = rfc5322(b.now),
        id = b.id,
        subject = wording(b).0,
    ));
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    out.push_str(&human_part(b));
    // RFC 6533: a UTF-8 recipient is reported in a global delivery status
    // with the `utf-8` address type.
    let status_type = match b.failures.iter().all(|f| f.rcpt.address.is_ascii()) {
        true => "message/delivery-status",
        false => "message/global-delivery-status",
    };
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: {status_type}\r\n\r\n"
    ));
    out.push_str(&status_part(b));
    let failed = b.failures.iter().any(|f| f.action.is_failure());
    let ret = match failed {
        true => b.meta.ret.unwrap_or(b.default_ret),
        false => Ret::Headers, // RET is about failures (RFC 3461 4.3)
    };
    let mut bytes = out.into_bytes();
    match ret {
        Ret::Headers => {
            bytes.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
            );
            bytes.extend_from_slice(header_section(b.original));
        }
        Ret::Full => {
            bytes.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
            );
            bytes.extend_from_slice(b.original);
        }
    }
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

fn human_part(b: &Bounce<'_>) -> String {
    let mut s = format!(
        "This is the mail system at host {}.\r\n\r\n{}\r\n\r\n",
        b.hostname,
        wording(b).1
    );
    for f in &b.failures {
        let why = if f.action == Action::Expired {
            format!("delivery time expired; last error: {}", f.reply)
        } else {
            f.reply.to_string()
        };
        s.push_str(&format!("<{}>: {}\r\n", f.rcpt.address, cap(&why)));
    }
    s
}

fn status_part(b: &Bounce<'_>) -> String {
    let mut s = format!(
        "Reporting-MTA: dns; {}\r\nX-Tern-Queue-ID: {}\r\n",
        b.hostname, b.id
    );
    if let Some(envid) = &b.meta.envid {
        s.push_str(&format!("Original-Envelope-Id: {}\r\n", cap(envid)));
    }
    s.push_str(&format!("Arrival-Date: {}\r\n", rfc5322(b.arrival)));
    for f in &b.failures {
        let params = RecipientParams::decode(&f.rcpt.params);
        // A failed action is a permanent status (RFC 3464 2.3.4): mail
        // that expired in the queue is 5.4.7, whatever its last deferral.
        let (action, [x, y, z]) = match f.action {
            Action::Expired => ("failed", [5, 4, 7]),
            Action::Failed => ("failed", f.reply.status()),
            // A delay is transient and a relay a success, whatever the
            // reply's own class says.
            Action::Delayed => ("delayed", with_class(4, f.reply.status())),
            Action::Relayed => ("relayed", with_class(2, f.reply.status())),
        };
        let address_type = match f.rcpt.address.is_ascii() {
            true => "rfc822",
            false => "utf-8",
        };
        s.push_str(&format!(
            "\r\nFinal-Recipient: {address_type}; {}\r\n",
            f.rcpt.address
        ));
        if let Some(orcpt) = &params.orcpt {
            s.push_str(&format!("Original-Recipient: rfc822; {}\r\n", cap(orcpt)));
        }
        s.push_str(&format!("Action: {action}\r\nStatus: {x}.{y}.{z}\r\n"));
        if let Some(host) = f.remote_host {
            s.push_str(&format!("Remote-MTA: dns; {}\r\n", cap(host)));
        }
        s.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {}\r\n",
            cap(&f.reply.to_string()),
            rfc5322(b.now)
        ));
        if let (Action::Delayed, Some(until)) = (f.action, b.retry_until) {
            s.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322(until)));
        }
    }
    s
}

/// A status code of class `class`: the reply's when it has that class,
/// else `class.0.0`.
fn with_class(class: u8, [x, y, z]: [u8; 3]) -> [u8; 3] {
    if x == class { [x, y, z] } else { [class, 0, 0] }
}

/// Keeps a value to one printable line of bounded length.
fn cap(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DIAGNOSTIC)
        .collect()
}

/// The header section of a message (up to and including the blank line's
/// first CRLF), or all of it if it has no body.
fn header_section(msg: &[u8]) -> &[u8] {
    match memchr::memmem::find(msg, b"\r\n\r\n") {
        Some(i) => &msg[..i + 2],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> RemoteReply {
        RemoteReply {
            code: 550,
            esc: [5, 1, 1],
            text: text.into(),
        }
    }

    /// A bounce from mx.test to app@shop.example of one failure.
    fn bounce<'a>(
        id: u64,
        meta: &'a MessageMeta,
        failure: Failure<'a>,
        original: &'a [u8],
    ) -> Bounce<'a> {
        Bounce {
            hostname: "mx.test",
            id: MessageId::from_u64(id),
            sender: "app@shop.example",
            meta,
            arrival: SystemTime::UNIX_EPOCH,
            now: SystemTime::UNIX_EPOCH,
            failures: vec![failure],
            original,
            default_ret: Ret::Headers,
            retry_until: None,
        }
    }

    #[test]
    fn a_utf8_recipient_gets_the_utf8_address_type_in_a_global_status() {
        let rcpt = EnvelopeRecipient::new("jöran@exämple.test");
        let meta = MessageMeta::default();
        let r = reply("no such user");
        let failure = Failure {
            rcpt: &rcpt,
            reply: &r,
            remote_host: None,
            action: Action::Failed,
        };
        let b = bounce(7, &meta, failure, b"Subject: x\r\n\r\nbody\r\n");
        let text = String::from_utf8(build(&b)).unwrap();
        assert!(text.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(text.contains("Final-Recipient: utf-8; jöran@exämple.test\r\n"));
    }

    #[test]
    fn notify_rules() {
        let p = |notify: u64| {
            RecipientParams {
                notify: notify as u8,
                orcpt: None,
            }
            .encode()
        };
        let failed = |n| wants_notice(&p(n), Action::Failed);
        assert!(failed(0), "absent NOTIFY means FAILURE");
        assert!(failed(RCPT_NOTIFY_FAILURE));
        assert!(!failed(RCPT_NOTIFY_NEVER));
        assert!(!failed(RCPT_NOTIFY_DELAY));
        let delayed = |n| wants_notice(&p(n), Action::Delayed);
        assert!(!delayed(0), "a delay notice only when asked");
        assert!(delayed(RCPT_NOTIFY_DELAY | RCPT_NOTIFY_FAILURE));
        assert!(!delayed(RCPT_NOTIFY_FAILURE));
        let relayed = |n| wants_notice(&p(n), Action::Relayed);
        assert!(!relayed(0) && relayed(RCPT_NOTIFY_SUCCESS) && !relayed(RCPT_NOTIFY_DELAY));
    }

    #[test]
    fn report_fields_and_returned_headers() {
        let rcpt = EnvelopeRecipient {
            address: "gone@dest.example".into(),
            params: RecipientParams {
                notify: 0,
                orcpt: Some("Gone@Dest.example".into()),
            }
            .encode()
            .into(),
        };
        let meta = MessageMeta {
            envid: Some("ENV42".into()),
            ..Default::default()
        };
        let r = reply("no such user");
        let failure = Failure {
            rcpt: &rcpt,
            reply: &r,
            remote_host: Some("mx1.dest.example"),
            action: Action::Failed,
        };
        let b = bounce(
            0xAB,
            &meta,
            failure,
            b"Subject: hello\r\nFrom: app@shop.example\r\n\r\nsecret body\r\n",
        );
        let text = String::from_utf8(build(&b)).unwrap();
        for line in [
            "To: <app@shop.example>",
            "Auto-Submitted: auto-replied",
            "Reporting-MTA: dns; mx.test",
            "Original-Envelope-Id: ENV42",
            "Final-Recipient: rfc822; gone@dest.example",
            "Original-Recipient: rfc822; Gone@Dest.example",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx1.dest.example",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            "Content-Type: text/rfc822-headers",
            "Subject: hello",
        ] {
            assert!(
                text.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("secret body"),
            "RET=HDRS returns headers only"
        );
        assert!(text.lines().all(|l| l.len() < 998));
        assert!(
            !text.replace("\r\n", "").contains('\n') && !text.replace("\r\n", "").contains('\r'),
            "CRLF only"
        );
    }

    #[test]
    fn expiry_and_full_return() {
        let rcpt = EnvelopeRecipient::new("slow@dest.example");
        let meta = MessageMeta {
            ret: Some(Ret::Full),
            ..Default::default()
        };
        let r = RemoteReply {
            code: 451,
            esc: [4, 7, 1],
            text: "try later".into(),
        };
        let failure = Failure {
            rcpt: &rcpt,
            reply: &r,
            remote_host: None,
            action: Action::Expired,
        };
        let b = bounce(1, &meta, failure, b"Subject: x\r\n\r\nthe body\r\n");
        let text = String::from_utf8(build(&b)).unwrap();
        assert!(
            text.contains("Status: 5.4.7\r\n")
                && text.contains("Diagnostic-Code: smtp; 451 4.7.1 try later\r\n")
        );
        assert!(
            text.contains("Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nthe body\r\n")
        );
        assert!(!text.contains("Remote-MTA"));
    }

    #[test]
    fn delay_and_relay_notices_say_so_and_return_headers_only() {
        let rcpt = EnvelopeRecipient::new("slow@dest.example");
        let meta = MessageMeta {
            ret: Some(Ret::Full),
            ..Default::default()
        };
        let deferral = RemoteReply {
            code: 451,
            esc: [4, 7, 1],
            text: "greylisted".into(),
        };
        let delayed = Failure {
            rcpt: &rcpt,
            reply: &deferral,
            remote_host: Some("mx1.dest.example"),
            action: Action::Delayed,
        };
        let mut b = bounce(3, &meta, delayed, b"Subject: x\r\n\r\nthe body\r\n");
        b.retry_until = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(432_000));
        let text = String::from_utf8(build(&b)).unwrap();
        for line in [
            "Subject: Delayed Mail (still being retried)",
            "Action: delayed",
            "Status: 4.7.1",
            "Will-Retry-Until: Tue, 06 Jan 1970 00:00:00 +0000",
            "Content-Type: text/rfc822-headers",
        ] {
            assert!(
                text.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("the body"),
            "headers only, whatever RET says"
        );
        assert!(text.contains("you do not need to send your message again"));

        let ok = RemoteReply {
            code: 250,
            esc: [0, 0, 0],
            text: "queued as 42".into(),
        };
        let relayed = Failure {
            rcpt: &rcpt,
            reply: &ok,
            remote_host: Some("mx1.dest.example"),
            action: Action::Relayed,
        };
        let text = String::from_utf8(build(&bounce(
            4,
            &meta,
            relayed,
            b"Subject: x\r\n\r\nb\r\n",
        )))
        .unwrap();
        for line in [
            "Subject: Successful Mail Delivery Report",
            "Action: relayed",
            "Status: 2.0.0",
            "Remote-MTA: dns; mx1.dest.example",
        ] {
            assert!(
                text.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
