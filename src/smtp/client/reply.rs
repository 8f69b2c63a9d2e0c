//! Remote replies: where one ends in the read buffer, and what it says
//! (code, enhanced status code, and its text made safe for logs and
//! bounces). Pure functions over bytes; reading them is `conn`'s.

use smtp_proto::response::parser::ResponseReceiver;

use super::{ClientError, RemoteReply};

/// The end of the first complete reply in `buf`, if there is one. Every
/// line must start with a three-digit code (the same on every line).
pub(super) fn reply_end(buf: &[u8]) -> Result<Option<usize>, ClientError> {
    let mut start = 0;
    let mut code: Option<&[u8]> = None;
    while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
        let line = &buf[start..start + nl + 1];
        start += nl + 1;
        if line.len() < 4
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !matches!(line[3], b' ' | b'-' | b'\r' | b'\n')
        {
            return Err(ClientError::Protocol(format!(
                "malformed reply line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )));
        }
        if code.is_some_and(|c| c != &line[..3]) {
            return Err(ClientError::Protocol(
                "reply lines with different codes".into(),
            ));
        }
        code = Some(&line[..3]);
        if line[3] != b'-' {
            return Ok(Some(start));
        }
    }
    Ok(None)
}

/// The first complete reply in `buf` and its length, `None` if it is not
/// complete yet: the framing and parsing the client applies to every
/// reply (public for property tests).
pub fn parse_reply(buf: &[u8]) -> Result<Option<(RemoteReply, usize)>, ClientError> {
    match reply_end(buf)? {
        Some(end) => Ok(Some((parse(&buf[..end])?, end))),
        None => Ok(None),
    }
}

/// Parses a complete reply with smtp-proto and makes its text safe.
pub(super) fn parse(raw: &[u8]) -> Result<RemoteReply, ClientError> {
    let r = ResponseReceiver::default()
        .parse(&mut raw.iter())
        .map_err(|e| ClientError::Protocol(format!("unparseable reply: {e:?}")))?;
    Ok(RemoteReply {
        code: r.code,
        esc: r.esc,
        text: safe_text(&r.message),
    })
}

/// A reply's text for logs and bounces, in one allocation: its lines
/// trimmed and joined by " / ", control and non-ASCII characters as `?`,
/// at most 1,000 characters.
fn safe_text(message: &str) -> String {
    const MAX: usize = 1000;
    let mut text = String::with_capacity(message.len().min(MAX) + 8);
    let mut left = MAX;
    for (i, line) in message.split('\n').map(str::trim).enumerate() {
        let sep = if i == 0 { "" } else { " / " };
        for c in sep.chars().chain(line.chars()) {
            if left == 0 {
                return text;
            }
            text.push(if c.is_control() || !c.is_ascii() {
                '?'
            } else {
                c
            });
            left -= 1;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_framing() {
        assert_eq!(reply_end(b"250 ok\r\n").unwrap(), Some(8));
        assert_eq!(reply_end(b"250-a\r\n250 b\r\nxyz").unwrap(), Some(14));
        assert_eq!(reply_end(b"250-a\r\n").unwrap(), None);
        assert_eq!(reply_end(b"250\r\n").unwrap(), Some(5));
        assert!(reply_end(b"2500 x\r\n").is_err());
        assert!(reply_end(b"hello\r\n").is_err());
        assert!(reply_end(b"250-a\r\n550 b\r\n").is_err(), "mixed codes");
    }

    #[test]
    fn replies_are_made_safe() {
        let r =
            parse(b"550-5.1.1 no such user\r\n550-5.1.1 X-Evil: 1\r\n550 5.1.1 \xff\x01end\r\n")
                .unwrap();
        assert_eq!((r.code, r.esc), (550, [5, 1, 1]));
        assert!(
            !r.text.contains('\n') && !r.text.contains('\r'),
            "{}",
            r.text
        );
        assert!(r.text.contains("no such user / X-Evil: 1"), "{}", r.text);
        assert!(r.text.ends_with("??end"), "{}", r.text);
        let long = format!("451-{}\r\n451 tail\r\n", "x".repeat(998));
        let cut = parse(long.as_bytes()).unwrap().text;
        assert_eq!(cut.len(), 1000, "at most 1,000 characters");
        assert!(cut.ends_with("x /"), "{cut}");
        let plain = parse(b"421 busy\r\n").unwrap();
        assert_eq!(
            (plain.code, plain.esc, plain.status()),
            (421, [0, 0, 0], [4, 0, 0])
        );
    }
}
