//! A plain-text part derived from HTML, for mail sent with HTML only: the
//! visible text, a line break per block, links as "text (url)", list
//! items as "- ", entities decoded; `<head>`, `<style>`, `<script>` and
//! comments (MJML's conditional comments among them) left out.

/// The text of `html`.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 3);
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    let mut href: Option<String> = None;
    let mut link_text_start = 0;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if skip_until.is_none() {
                push_text(&mut out, rest);
            }
            break;
        };
        if skip_until.is_none() {
            push_text(&mut out, &rest[..lt]);
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[1..end.saturating_sub(1).max(1)];
        rest = &rest[end..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(until) = skip_until {
            if closing && name == until {
                skip_until = None;
            }
            continue;
        }
        match (name.as_str(), closing) {
            ("head", false) => skip_until = Some("head"),
            ("style", false) => skip_until = Some("style"),
            ("script", false) => skip_until = Some("script"),
            ("title", false) => skip_until = Some("title"),
            ("br", _) => out.push('\n'),
            ("li", false) => {
                newline(&mut out);
                out.push_str("- ");
            }
            ("a", false) => {
                href = attr(tag, "href");
                link_text_start = out.len();
            }
            ("a", true) => {
                if let Some(h) = href.take() {
                    let shown = out[link_text_start..].trim().to_owned();
                    if !h.is_empty() && shown != h && !h.starts_with('#') {
                        out.push_str(&format!(" ({h})"));
                    }
                }
            }
            (
                "p" | "div" | "tr" | "table" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul"
                | "ol" | "section" | "blockquote" | "hr",
                _,
            ) => newline(&mut out),
            _ => {}
        }
    }
    tidy(&out)
}

/// Appends text with entities decoded and runs of white space as one
/// space.
fn push_text(out: &mut String, s: &str) {
    let decoded = decode_entities(s);
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.ends_with([' ', '\n']) && !out.is_empty() {
                out.push(' ');
            }
        } else if c == '\u{a0}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

fn newline(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// Lines trimmed, at most one empty line in a row, no leading or trailing
/// empty lines.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines().map(str::trim) {
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// The value of attribute `name` in a tag's text.
fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let v = &tag[at..];
    let value = match v.chars().next()? {
        q @ ('"' | '\'') => v[1..].split(q).next()?,
        _ => v.split(|c: char| c.is_whitespace() || c == '>').next()?,
    };
    Some(decode_entities(value))
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|e| entity(&rest[1..e]).map(|c| (c, e)));
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "euro" => '€',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_what_a_reader_sees() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head><body>\
            <!--[if mso]><table><![endif]--><h1>Order  #42</h1><p>Hello&nbsp;Ann &amp; co,</p>\
            <p>Track it <a href=\"https://shop.example/t/42\">here</a>.<br>Thanks</p>\
            <ul><li>one</li><li>two &#8364;</li></ul></body></html>";
        assert_eq!(
            html_to_text(html),
            "Order #42\nHello Ann & co,\nTrack it here (https://shop.example/t/42).\nThanks\n- one\n- two €"
        );
    }
}
