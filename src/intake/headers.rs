//! Header work at intake: the Received header Tern prepends, the Date and
//! Message-ID it adds when missing, and the facts it reads from the
//! client's header section (Received count, present fields).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use queue::MessageId;

/// What the client's header section says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFacts {
    /// Received fields (the hop count).
    pub received: usize,
    /// A Message-ID field is present.
    pub message_id: bool,
    /// A Date field is present.
    pub date: bool,
}

/// Reads the header section of `data` (up to the first empty line, or the
/// end): one linear pass, bounded by the message size.
pub fn scan(data: &[u8]) -> HeaderFacts {
    let mut facts = HeaderFacts::default();
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // a continuation of the previous field
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"received") {
            facts.received += 1;
        } else if name.eq_ignore_ascii_case(b"message-id") {
            facts.message_id = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            facts.date = true;
        }
    }
    facts
}

/// What the Received header says about the session.
pub struct ReceivedInfo<'a> {
    /// The client's EHLO/HELO argument.
    pub helo: &'a str,
    /// The client's address.
    pub peer: IpAddr,
    /// This MTA's host name.
    pub hostname: &'a str,
    /// EHLO (not HELO) was used.
    pub esmtp: bool,
    /// The session is encrypted.
    pub tls: bool,
    /// The client authenticated.
    pub authenticated: bool,
}

/// The Received header (RFC 5321 4.4), folded under 998 characters per
/// line. `for_rcpt` is named only when the message has one recipient.
pub fn received(
    info: &ReceivedInfo<'_>,
    id: MessageId,
    for_rcpt: Option<&str>,
    now: SystemTime,
) -> String {
    // RFC 3848 protocol names.
    let protocol = match (info.esmtp, info.tls, info.authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let literal = match info.peer {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let mut h = format!(
        "Received: from {} ({literal})\r\n\tby {} (Tern) with {protocol} id {id}",
        clean(info.helo),
        info.hostname
    );
    if let Some(rcpt) = for_rcpt.filter(|r| r.len() <= 320 && !r.chars().any(char::is_control)) {
        h.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
    h
}

/// The client's HELO name made safe for a header: printable, no spaces,
/// comments or separators, at most 255 characters.
fn clean(helo: &str) -> String {
    let s: String = helo
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric()
                || "-._:[]".contains(c)
                || (!c.is_ascii() && !c.is_control())
            {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s
    }
}

/// A Message-ID header for a message that has none.
pub fn message_id(id: MessageId, hostname: &str, now: SystemTime) -> String {
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("Message-ID: <{id}.{ms}@{hostname}>\r\n")
}

/// A Date header for a message that has none.
pub fn date(now: SystemTime) -> String {
    format!("Date: {}\r\n", rfc5322_date(now))
}

/// An RFC 5322 date-time in UTC: `Mon, 23 Nov 2026 06:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(1_795_413_845)),
            "Mon, 23 Nov 2026 06:04:05 +0000"
        );
    }

    #[test]
    fn header_facts() {
        let f = scan(b"Received: a\r\n\tfolded\r\nRECEIVED: b\r\nmessage-id: <x@y>\r\nSubject: Date: no\r\n\r\nDate: in the body\r\n");
        assert_eq!(
            f,
            HeaderFacts {
                received: 2,
                message_id: true,
                date: false
            }
        );
        assert_eq!(scan(b""), HeaderFacts::default());
        assert!(scan(b"no colon line\r\nDate : x\r\n").date);
    }

    #[test]
    fn received_header_is_folded_and_safe() {
        let info = ReceivedInfo {
            helo: "client (evil)\r\nX: y",
            peer: "2001:db8::1".parse().unwrap(),
            hostname: "mta.example",
            esmtp: true,
            tls: true,
            authenticated: false,
        };
        let h = received(&info, MessageId::from_u64(0xAB), Some("a@b.example"), at(0));
        assert_eq!(
            h,
            "Received: from client__evil___X:_y ([IPv6:2001:db8::1])\r\n\tby mta.example (Tern) with ESMTPS id 00000000000000AB\r\n\tfor <a@b.example>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        assert!(h.lines().all(|l| l.len() < 998));
    }
}
