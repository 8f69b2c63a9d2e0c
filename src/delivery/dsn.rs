//! Bounces: RFC 3464 delivery status notifications for recipients that
//! failed or expired, one per message and failure event, sent from `<>`
//! to the envelope sender. Never for a message whose sender is `<>`.
//!
//! NOTIFY is honoured per recipient (absent means FAILURE), RET decides
//! whether the original's headers or the whole message are returned, and
//! ENVID and ORCPT are echoed. Everything taken from a remote server or a
//! client (reply text, host names) arrives already made printable and is
//! capped, so no value can add header fields or break the report's lines.

use std::time::SystemTime;

use queue::{EnvelopeRecipient, MessageId};
use smtp_proto::{RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER};

use crate::clock::rfc5322;
use crate::message::{MessageMeta, RecipientParams, Ret};
use crate::smtp::client::RemoteReply;

/// Longest Diagnostic-Code text kept.
const MAX_DIAGNOSTIC: usize = 900;

/// One recipient to report on.
pub struct Failure<'a> {
    /// The recipient.
    pub rcpt: &'a EnvelopeRecipient,
    /// The last reply or local reason.
    pub reply: &'a RemoteReply,
    /// The host that answered, if one did.
    pub remote_host: Option<&'a str>,
    /// It ran out of time (`max_age`) rather than failing permanently.
    pub expired: bool,
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
}

/// True if the recipient's NOTIFY asks for a failure notice (no NOTIFY
/// means FAILURE, RFC 3461 4.1).
pub fn wants_notice(params: &[u8]) -> bool {
    let notify = u64::from(RecipientParams::decode(params).notify);
    notify == 0 || (notify & RCPT_NOTIFY_FAILURE != 0 && notify & RCPT_NOTIFY_NEVER == 0)
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
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\nTo: <{to}>\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: {date}\r\nMessage-ID: <{id}.{ms}.bounce@{host}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n",
        host = b.hostname,
        to = b.sender,
        date = rfc5322(b.now),
        id = b.id,
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
    let ret = b.meta.ret.unwrap_or(b.default_ret);
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
        "This is the mail system at host {}.\r\n\r\nI'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n",
        b.hostname
    );
    for f in &b.failures {
        let why = if f.expired {
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
        let [x, y, z] = if f.expired {
            [5, 4, 7]
        } else {
            f.reply.status()
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
        s.push_str(&format!("Action: failed\r\nStatus: {x}.{y}.{z}\r\n"));
        if let Some(host) = f.remote_host {
            s.push_str(&format!("Remote-MTA: dns; {}\r\n", cap(host)));
        }
        s.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {}\r\n",
            cap(&f.reply.to_string()),
            rfc5322(b.now)
        ));
    }
    s
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
            expired: false,
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
        assert!(wants_notice(&p(0)), "absent NOTIFY means FAILURE");
        assert!(wants_notice(&p(RCPT_NOTIFY_FAILURE)));
        assert!(!wants_notice(&p(RCPT_NOTIFY_NEVER)));
        assert!(!wants_notice(&p(smtp_proto::RCPT_NOTIFY_DELAY)));
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
            expired: false,
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
            expired: true,
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
}
