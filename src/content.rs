//! Changes to a message's content that the door may make before it is
//! signed and queued: re-encoding, as quoted-printable (RFC 2045 6.7),
//! the text parts that carry a line over the limit (`[[listener]]
//! long_lines = "encode"`), for applications that cannot be fixed.
//!
//! Walks the MIME structure (multiparts, recursively) and changes only the
//! parts that need it: a part whose body has an over-long line and is
//! sent as is (no Content-Transfer-Encoding, or 7bit, 8bit or binary)
//! gets its body encoded and its encoding header replaced. What cannot be
//! fixed this way is refused, never sent broken: an over-long header
//! line, an over-long line in a part that claims base64 or
//! quoted-printable already, or in an attached message (RFC 2046 5.2.1
//! forbids encoding those). Pure: no I/O.

/// Why a message's long lines cannot be re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unfixable {
    /// A header line is over the limit.
    #[error("a header line is over the limit")]
    Header,
    /// The part claims an encoding that would not have such lines.
    #[error("a part declared base64 or quoted-printable has an over-long line")]
    Encoded,
    /// An attached message (message/*) may not be encoded.
    #[error("an attached message has an over-long line")]
    Attached,
    /// Multiparts nested deeper than anyone sends.
    #[error("multiparts are nested too deeply")]
    TooDeep,
}

/// Deepest multipart nesting walked.
const MAX_DEPTH: usize = 32;

/// Longest encoded line (RFC 2045 6.7 rule 5), soft break included.
const QP_LINE: usize = 76;

/// `msg` (header and body, CRLF line ends) with every part that has a line
/// over `max` octets (CRLF excluded) re-encoded as quoted-printable;
/// `MIME-Version` is added when the message had none.
pub fn encode_long_lines(msg: &[u8], max: usize) -> Result<Vec<u8>, Unfixable> {
    let (head, body) = split_entity(msg);
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 8);
    let changed = entity(head, body, max, 0, &mut out)?;
    if changed && header(head, b"mime-version").is_none() {
        let mut with = b"MIME-Version: 1.0\r\n".to_vec();
        with.extend_from_slice(&out);
        return Ok(with);
    }
    Ok(out)
}

/// Writes one entity (its header and body) to `out`, re-encoded where
/// needed; true if anything changed.
fn entity(
    head: &[u8],
    body: &[u8],
    max: usize,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<bool, Unfixable> {
    if lines(head).any(|l| l.len() > max) {
        return Err(Unfixable::Header);
    }
    let ctype = header(head, b"content-type").unwrap_or_default();
    let media = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("multipart/")
        && let Some(boundary) = param(&ctype, "boundary")
    {
        if depth >= MAX_DEPTH {
            return Err(Unfixable::TooDeep);
        }
        out.extend_from_slice(head);
        return multipart(body, boundary.as_bytes(), max, depth, out);
    }
    if !lines(body).any(|l| l.len() > max) {
        out.extend_from_slice(head);
        out.extend_from_slice(body);
        return Ok(false);
    }
    if media.starts_with("message/") {
        return Err(Unfixable::Attached);
    }
    let cte = header(head, b"content-transfer-encoding").unwrap_or_default();
    match cte.trim().to_ascii_lowercase().as_str() {
        "" | "7bit" | "8bit" | "binary" => {}
        _ => return Err(Unfixable::Encoded),
    }
    without_header(head, b"content-transfer-encoding", out);
    // The blank line that ends the header is put back after the new field.
    if out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    quoted_printable(body, out);
    Ok(true)
}

/// Writes a multipart body: preamble, each part (walked), epilogue.
fn multipart(
    body: &[u8],
    boundary: &[u8],
    max: usize,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<bool, Unfixable> {
    let mut changed = false;
    let mut part: Option<usize> = None; // where the current part starts
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memmem::find(&body[pos..], b"\r\n").map_or(body.len(), |i| pos + i + 2);
        let line = trim_end(&body[pos..end]);
        let delimiter = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary));
        match delimiter {
            Some(rest) if rest.is_empty() || rest == b"--" => {
                if let Some(start) = part.take() {
                    // The CRLF before a delimiter belongs to the delimiter.
                    let content = &body[start..pos.saturating_sub(2).max(start)];
                    let (h, b) = split_entity(content);
                    changed |= entity(h, b, max, depth + 1, out)?;
                    out.extend_from_slice(&body[start + content.len()..pos]);
                } else if lines(&body[..pos]).any(|l| l.len() > max) {
                    return Err(Unfixable::Encoded); // a preamble cannot be encoded
                } else {
                    out.extend_from_slice(&body[..pos]);
                }
                out.extend_from_slice(&body[pos..end]);
                if rest == b"--" {
                    let epilogue = &body[end..];
                    if lines(epilogue).any(|l| l.len() > max) {
                        return Err(Unfixable::Encoded);
                    }
                    out.extend_from_slice(epilogue);
                    return Ok(changed);
                }
                part = Some(end);
            }
            _ => {}
        }
        pos = end;
    }
    // No closing delimiter: the last part runs to the end.
    match part {
        Some(start) => {
            let (h, b) = split_entity(&body[start..]);
            changed |= entity(h, b, max, depth + 1, out)?;
        }
        None => out.extend_from_slice(body),
    }
    Ok(changed)
}

/// Splits an entity after the blank line that ends its header (the header
/// keeps it). An entity that starts with the blank line has an empty
/// header; one without a blank line is all header.
fn split_entity(e: &[u8]) -> (&[u8], &[u8]) {
    if e.starts_with(b"\r\n") {
        return e.split_at(2);
    }
    match memchr::memmem::find(e, b"\r\n\r\n") {
        Some(i) => e.split_at(i + 4),
        None => (e, &[]),
    }
}

/// The lines of `b` without their CRLF.
fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|c| *c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn trim_end(l: &[u8]) -> &[u8] {
    let mut l = l;
    while let Some((last, rest)) = l.split_last() {
        if matches!(last, b'\r' | b'\n' | b' ' | b'\t') {
            l = rest;
        } else {
            break;
        }
    }
    l
}

/// The unfolded value of the first `name` field of a header.
fn header(head: &[u8], name: &[u8]) -> Option<String> {
    let mut value: Option<String> = None;
    for line in lines(head) {
        match &mut value {
            Some(v) if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') => {
                v.push_str(&String::from_utf8_lossy(line));
            }
            Some(_) => break,
            None => {
                let Some(colon) = memchr::memchr(b':', line) else {
                    continue;
                };
                if line[..colon].trim_ascii().eq_ignore_ascii_case(name) {
                    value = Some(String::from_utf8_lossy(&line[colon + 1..]).into_owned());
                }
            }
        }
    }
    value
}

/// A parameter of a structured field (`boundary` of a Content-Type), with
/// its quotes removed.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    })
}

/// Writes `head` without the `name` fields (and their folded lines).
fn without_header(head: &[u8], name: &[u8], out: &mut Vec<u8>) {
    let mut skipping = false;
    let mut pos = 0;
    while pos < head.len() {
        let end = memchr::memchr(b'\n', &head[pos..]).map_or(head.len(), |i| pos + i + 1);
        let line = &head[pos..end];
        let folded = line.first().is_some_and(|c| *c == b' ' || *c == b'\t');
        if !folded {
            skipping = memchr::memchr(b':', line)
                .is_some_and(|c| line[..c].trim_ascii().eq_ignore_ascii_case(name));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        pos = end;
    }
}

/// Quoted-printable of `body`, line by line (CRLF kept as line breaks),
/// with soft breaks under 76 characters.
fn quoted_printable(body: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = body;
    while !rest.is_empty() {
        let (line, brk, next) = match memchr::memmem::find(rest, b"\r\n") {
            Some(i) => (&rest[..i], true, &rest[i + 2..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal = matches!(b, 33..=60 | 62..=126) || (matches!(b, b' ' | b'\t') && !last);
            let need = if literal { 1 } else { 3 };
            // Room for this and a soft break ("=") on the line.
            if width + need > QP_LINE - 1 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            width += need;
        }
        if brk {
            out.extend_from_slice(b"\r\n");
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes quoted-printable (for the round trips).
    fn decode(qp: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < qp.len() {
            match qp[i] {
                b'=' if qp[i + 1..].starts_with(b"\r\n") => i += 3,
                b'=' => {
                    let hex = std::str::from_utf8(&qp[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    fn long(n: usize) -> String {
        "word= ".repeat(n / 6 + 1)[..n].to_owned()
    }

    #[test]
    fn a_plain_message_with_a_long_line_is_encoded_and_decodes_back() {
        let body = format!("short line\r\n{}\r\nend \r\n", long(2000));
        let msg = format!("Subject: s\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}");
        let out = encode_long_lines(msg.as_bytes(), 998).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("MIME-Version: 1.0\r\nSubject: s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{text}");
        assert!(!text.contains("8bit"));
        assert!(text.lines().all(|l| l.len() <= 76), "{text}");
        let (_, encoded) = split_entity(&out);
        assert_eq!(decode(encoded), body.as_bytes());
        assert!(text.contains("end=20\r\n"), "trailing space encoded");
    }

    #[test]
    fn only_the_part_with_the_long_line_changes() {
        let msg = format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nfine\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>{}</p>\r\n--b1--\r\nepilogue\r\n",
            long(1500)
        );
        let out = String::from_utf8(encode_long_lines(msg.as_bytes(), 998).unwrap()).unwrap();
        assert!(
            out.contains("--b1\r\nContent-Type: text/plain\r\n\r\nfine\r\n--b1\r\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>"
            ),
            "{out}"
        );
        assert!(out.ends_with("</p>\r\n--b1--\r\nepilogue\r\n"), "{out}");
        assert_eq!(out.matches("MIME-Version").count(), 1);
        assert!(out.lines().all(|l| l.len() <= 998));
    }

    #[test]
    fn what_cannot_be_encoded_is_refused() {
        let header = format!("Subject: {}\r\n\r\nbody\r\n", long(1200));
        assert_eq!(
            encode_long_lines(header.as_bytes(), 998),
            Err(Unfixable::Header)
        );
        let b64 = format!(
            "Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            long(1200)
        );
        assert_eq!(
            encode_long_lines(b64.as_bytes(), 998),
            Err(Unfixable::Encoded)
        );
        let attached = format!(
            "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\n{}\r\n--x--\r\n",
            long(1200)
        );
        assert_eq!(
            encode_long_lines(attached.as_bytes(), 998),
            Err(Unfixable::Attached)
        );
        let mut deep = String::new();
        for i in 0..40 {
            deep.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
            ));
        }
        assert_eq!(
            encode_long_lines(deep.as_bytes(), 998),
            Err(Unfixable::TooDeep)
        );
    }

    #[test]
    fn a_message_without_long_lines_is_unchanged() {
        let msg = b"Subject: s\r\n\r\nhello\r\n";
        assert_eq!(encode_long_lines(msg, 998).unwrap(), msg);
    }

    #[test]
    fn any_bytes_are_encoded_or_refused_without_a_panic() {
        let pieces: [&[u8]; 9] = [
            b"\r\n",
            b"--b\r\n",
            b"--b--\r\n",
            b"Content-Type: multipart/mixed; boundary=b\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Type: message/rfc822\r\n",
            b" folded\r\n",
            b"\xff\x00=",
            b"x",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let mut msg = Vec::new();
            for _ in 0..rng.usize(1..40) {
                let p = pieces[rng.usize(..pieces.len())];
                for _ in 0..rng.usize(1..4) {
                    msg.extend_from_slice(p);
                }
                if rng.u8(..10) == 0 {
                    msg.extend(std::iter::repeat_n(b'z', rng.usize(0..300)));
                }
            }
            // Over 76 (the longest quoted-printable line) is long.
            if let Ok(out) = encode_long_lines(&msg, 80) {
                let long = lines(&out).any(|l| l.len() > 80);
                assert!(!long || out == msg, "{:?}", String::from_utf8_lossy(&msg));
            }
        }
    }
}
