//! The author's domain: the domain of the first address in a From field
//! (RFC 5322 section 3.6.2), the domain DMARC aligns with and so the
//! default signing domain. A small scanner that knows comments, quoted
//! strings, angle brackets and groups; it never allocates more than the
//! domain it returns.

use crate::config::names;

/// The domain of the first mailbox of a From value, lowercased with its
/// internationalized labels as A-labels (what keys are found and signed
/// under), or `None` when there is none (an empty group, a domain
/// literal, garbage).
pub fn domain(value: &[u8]) -> Option<String> {
    let mailbox = first_mailbox(value);
    let addr = angle_content(mailbox).unwrap_or(mailbox);
    let at = last_at(addr)?;
    let domain = strip_cfws(&addr[at + 1..]);
    let domain = std::str::from_utf8(domain).ok()?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    names::is_mail_domain(domain).then(|| names::to_ascii(domain))
}

/// A byte scanner state: inside a quoted string, the depth of comments.
#[derive(Default)]
struct Lexer {
    quoted: bool,
    comment: usize,
    escaped: bool,
}

impl Lexer {
    /// Feeds one byte; true when it is at the top level (not quoted, not
    /// in a comment, not escaped), that is, when it is syntax.
    fn top(&mut self, b: u8) -> bool {
        if self.escaped {
            self.escaped = false;
            return false;
        }
        match b {
            b'\\' if self.quoted || self.comment > 0 => {
                self.escaped = true;
                false
            }
            b'"' if self.comment == 0 => {
                self.quoted = !self.quoted;
                false
            }
            b'(' if !self.quoted => {
                self.comment += 1;
                false
            }
            b')' if !self.quoted && self.comment > 0 => {
                self.comment -= 1;
                false
            }
            _ => !self.quoted && self.comment == 0,
        }
    }
}

/// The text of the first mailbox: up to the first top-level comma (or the
/// `;` closing a group), after a group's `display-name:`.
fn first_mailbox(value: &[u8]) -> &[u8] {
    let mut lex = Lexer::default();
    let mut start = 0;
    let mut angle = false;
    for (i, &b) in value.iter().enumerate() {
        if !lex.top(b) {
            continue;
        }
        match b {
            b'<' => angle = true,
            b'>' => angle = false,
            b':' if !angle => start = i + 1, // a group: its members follow
            b',' | b';' if !angle => {
                if strip_cfws(&value[start..i]).is_empty() {
                    start = i + 1; // an empty list element
                    continue;
                }
                return &value[start..i];
            }
            _ => {}
        }
    }
    &value[start..]
}

/// What is between the first top-level `<` and the next `>`.
fn angle_content(mailbox: &[u8]) -> Option<&[u8]> {
    let mut lex = Lexer::default();
    let mut open = None;
    for (i, &b) in mailbox.iter().enumerate() {
        if !lex.top(b) {
            continue;
        }
        match (b, open) {
            (b'<', None) => open = Some(i + 1),
            (b'>', Some(s)) => return Some(&mailbox[s..i]),
            _ => {}
        }
    }
    None
}

/// The position of the last `@` outside quotes and comments.
fn last_at(addr: &[u8]) -> Option<usize> {
    let mut lex = Lexer::default();
    let mut at = None;
    for (i, &b) in addr.iter().enumerate() {
        if lex.top(b) && b == b'@' {
            at = Some(i);
        }
    }
    at
}

/// The bytes with comments and surrounding whitespace removed (a domain
/// has no quoted strings, so only comments and folding matter).
fn strip_cfws(s: &[u8]) -> &[u8] {
    let mut lex = Lexer::default();
    let (mut first, mut last) = (None, 0);
    for (i, &b) in s.iter().enumerate() {
        let was_comment = lex.comment > 0;
        if lex.top(b) && !was_comment && !b.is_ascii_whitespace() && b != b')' {
            first.get_or_insert(i);
            last = i + 1;
        }
    }
    first.map_or(&s[..0], |f| &s[f..last])
}

#[cfg(test)]
mod tests {
    use super::domain;

    #[test]
    fn author_domains() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a@Shop.Example", Some("shop.example")),
            (" \"Shop, Inc\" <news@shop.example>", Some("shop.example")),
            (" Shop <news@shop.example> (the shop)", Some("shop.example")),
            (" \"a@evil.example\" <b@good.example>", Some("good.example")),
            (" (c@comment.example) d@real.example", Some("real.example")),
            (" \"quoted@local\"@quoted.example", Some("quoted.example")),
            (" a@first.example, b@second.example", Some("first.example")),
            (
                " Team: a@group.example, b@x.example;",
                Some("group.example"),
            ),
            (" undisclosed-recipients:;", None),
            (" Name\r\n <folded@fold.example>", Some("fold.example")),
            (" a@[192.0.2.1]", None),
            (" user@Bücher.example", Some("xn--bcher-kva.example")),
            (" a@shop.example.", Some("shop.example")),
            (" no address here", None),
            (" <@>", None),
            ("", None),
            (" a@b (unclosed comment", Some("b")),
        ];
        for (value, want) in cases {
            assert_eq!(domain(value.as_bytes()).as_deref(), *want, "{value:?}");
        }
        assert_eq!(domain(b" a@\xff\xfe.example"), None);
    }
}
