//! Header work at intake: the Received header Tern prepends, the Date and
//! Message-ID it adds when missing, and the facts it reads from the
//! client's header section (Received count, present fields).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use queue::MessageId;

/// What the client's header section says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    /// Received fields (the hop count).
    pub received: usize,
    /// A Message-ID field is present.
    pub message_id: bool,
    /// A Date field is present.
    pub date: bool,
    /// The first Message-ID value (trimmed, made printable, bounded).
    pub message_id_value: Option<String>,
    /// Where the first From field's value lies (after the colon, through
    /// its folded continuation lines), as offsets into the scanned data.
    pub from: Option<std::ops::Range<usize>>,
}

/// Reads the header section of `data` (up to the first empty line, or the
/// end): one linear pass, bounded by the message size.
pub fn scan(data: &[u8]) -> HeaderFacts {
    let mut facts = HeaderFacts::default();
    let mut pos = 0;
    let mut in_from = false;
    for raw in data.split(|b| *b == b'\n') {
        let line_start = pos;
        pos += raw.len() + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let (true, Some(from)) = (in_from, facts.from.as_mut()) {
                from.end = line_start + line.len(); // a continuation of From
            }
            continue; // a continuation of the previous field
        }
        in_from = false;
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"from") && facts.from.is_none() {
            in_from = true;
            facts.from = Some(line_start + colon + 1..line_start + line.len());
        } else if name.eq_ignore_ascii_case(b"received") {
            facts.received += 1;
        } else if name.eq_ignore_ascii_case(b"message-id") {
            facts.message_id = true;
            if facts.message_id_value.is_none() {
                facts.message_id_value = Some(printable(&line[colon + 1..]));
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            facts.date = true;
        }
    }
    facts
}

/// A header value made safe for logs: trimmed, printable ASCII, at most
/// 250 characters.
fn printable(v: &[u8]) -> String {
    String::from_utf8_lossy(v.trim_ascii())
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(250)
        .collect()
}

/// Removes every `name` field (with its folded continuation lines) from
/// the header section of `data[start..]`; returns the first value. The
/// buffer is rewritten only when the field is present.
pub fn remove_field(data: &mut Vec<u8>, start: usize, name: &str) -> Option<String> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut value = None;
    let mut pos = start;
    let mut in_field = false;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| pos + i + 1);
        let line = &data[pos..end];
        let bare = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if bare.is_empty() {
            break;
        }
        if bare[0] != b' ' && bare[0] != b'\t' {
            let colon = bare.iter().position(|b| *b == b':');
            in_field = colon.is_some_and(|c| {
                bare[..c]
                    .trim_ascii_end()
                    .eq_ignore_ascii_case(name.as_bytes())
            });
            if let (true, None, Some(c)) = (in_field, &value, colon) {
                value = Some(printable(&bare[c + 1..]));
            }
        }
        if in_field {
            spans.push((pos, end));
        }
        pos = end;
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut last = 0;
    for (s, e) in spans {
        out.extend_from_slice(&data[last..s]);
        last = e;
    }
    out.extend_from_slice(&data[last..]);
    *data = out;
    value
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
    /// It came over the HTTP API.
    pub http: bool,
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
        _ if info.http => "HTTP",
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

/// The Message-ID Tern gives a message that has none.
pub fn message_id_value(id: MessageId, hostname: &str, now: SystemTime) -> String {
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("<{id}.{ms}@{hostname}>")
}

/// A Message-ID header for a message that has none.
pub fn message_id(id: MessageId, hostname: &str, now: SystemTime) -> String {
    format!("Message-ID: {}\r\n", message_id_value(id, hostname, now))
}

/// A Date header for a message that has none.
pub fn date(now: SystemTime) -> String {
    format!("Date: {}\r\n", rfc5322_date(now))
}

/// An RFC 5322 date-time in UTC: `Mon, 23 Nov 2026 06:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    crate::clock::rfc5322(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn header_facts() {
        let f = scan(b"Received: a\r\n\tfolded\r\nRECEIVED: b\r\nmessage-id: <x@y>\r\nSubject: Date: no\r\n\r\nDate: in the body\r\n");
        assert_eq!(
            f,
            HeaderFacts {
                received: 2,
                message_id: true,
                date: false,
                message_id_value: Some("<x@y>".into()),
                from: None,
            }
        );
        assert_eq!(scan(b""), HeaderFacts::default());
        assert!(scan(b"no colon line\r\nDate : x\r\n").date);
    }

    #[test]
    fn the_first_from_field_is_located_with_its_continuations() {
        let d = b"Subject: s\r\nFrom: \"A\"\r\n <a@x.example>\r\nTo: t\r\nFrom: b@y\r\n\r\n";
        let r = scan(d).from.unwrap();
        assert_eq!(&d[r], b" \"A\"\r\n <a@x.example>");
        let d = b"From:a@b\r\n\r\nFrom: body\r\n";
        assert_eq!(&d[scan(d).from.unwrap()], b"a@b");
        assert_eq!(scan(b"To: x\r\n\r\nFrom: body\r\n").from, None);
    }

    #[test]
    fn a_field_is_removed_with_its_continuations() {
        let mut d = b"HDRSubject: a\r\nX-Tern-Pool: bulk\r\n\tmore\r\nTo: b\r\nx-tern-pool : again\r\n\r\nX-Tern-Pool: body\r\n".to_vec();
        assert_eq!(
            remove_field(&mut d, 3, "X-Tern-Pool").as_deref(),
            Some("bulk")
        );
        assert_eq!(
            d, b"HDRSubject: a\r\nTo: b\r\n\r\nX-Tern-Pool: body\r\n",
            "the body is untouched"
        );
        let mut d = b"Subject: a\r\n\r\n".to_vec();
        assert_eq!(remove_field(&mut d, 0, "X-Tern-Pool"), None);
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
            http: false,
        };
        let h = received(&info, MessageId::from_u64(0xAB), Some("a@b.example"), at(0));
        assert_eq!(
            h,
            "Received: from client__evil___X:_y ([IPv6:2001:db8::1])\r\n\tby mta.example (Tern) with ESMTPS id 00000000000000AB\r\n\tfor <a@b.example>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        assert!(h.lines().all(|l| l.len() < 998));
    }
}
