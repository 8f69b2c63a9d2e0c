//! Syntax of domain names, a value type of the config: the one place that
//! says what a host name or a mail domain may look like, and how an internationalized one is written
//! in ASCII (UTS 46, A-labels) for DNS, signing and every comparison.

/// `domain` lowercased, its internationalized labels as A-labels (UTS 46
/// processing: `Bücher.Example` is `xn--bcher-kva.example`). ASCII names
/// only lose their case; a name IDNA refuses is returned lowercased (its
/// lookups then fail as any unknown name does).
pub fn to_ascii(domain: &str) -> String {
    if domain.is_ascii() {
        return domain.to_ascii_lowercase();
    }
    idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase())
}

/// [`to_ascii`] of a domain pattern (`*.` kept).
pub fn pattern_to_ascii(pattern: &str) -> String {
    match pattern.strip_prefix("*.") {
        Some(rest) => format!("*.{}", to_ascii(rest)),
        None => to_ascii(pattern),
    }
}

/// True for a host name: dot-separated labels of ASCII letters, digits and
/// hyphens (not at either end of a label), each 1 to 63 bytes, 253 in all;
/// a trailing dot (the root) is allowed.
pub fn is_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    labels_ok(name, false)
}

/// True for a mail domain as written in an address: like a host name but
/// without a trailing dot, and with UTF-8 labels allowed (internationalized
/// domains, which need SMTPUTF8 on the envelope).
pub fn is_mail_domain(name: &str) -> bool {
    labels_ok(name, true)
}

fn labels_ok(name: &str, utf8: bool) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || (utf8 && !c.is_ascii()))
        })
}

/// Splits `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
pub fn parse_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((addr.to_owned(), port));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s.to_owned(), None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (s, None),
    };
    let ok = host.parse::<std::net::Ipv4Addr>().is_ok() || is_hostname(host);
    ok.then(|| (host.to_owned(), port))
}

/// The known name closest to `name` by edit distance, when close enough
/// to be a typo of it (at most a third of its length, and at least one
/// edit allowed): for "did you mean" hints.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let most = (name.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance between two strings, by characters: insertions,
/// deletions, substitutions and transpositions of neighbours ("gmial")
/// count one each (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalized_domains_become_a_labels() {
        assert_eq!(to_ascii("Bücher.Example"), "xn--bcher-kva.example");
        assert_eq!(to_ascii("SHOP.example"), "shop.example");
        assert_eq!(to_ascii("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(
            pattern_to_ascii("*.bücher.example"),
            "*.xn--bcher-kva.example"
        );
    }

    #[test]
    fn host_names_and_mail_domains() {
        for good in ["a", "mx1.example.net", "mx1.example.net.", "a-b.c0"] {
            assert!(is_hostname(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "-a.example",
            "a-.example",
            "a..b",
            "bad host",
            "bücher.example",
            &"a".repeat(64),
        ] {
            assert!(!is_hostname(bad), "{bad}");
        }
        assert!(is_mail_domain("bücher.example"));
        assert!(
            !is_mail_domain("example.com."),
            "no trailing dot in an address"
        );
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("mx.example:2525"),
            Some(("mx.example".into(), Some(2525)))
        );
        assert_eq!(
            parse_host_port("mx.example"),
            Some(("mx.example".into(), None))
        );
        assert_eq!(
            parse_host_port("192.0.2.1:25"),
            Some(("192.0.2.1".into(), Some(25)))
        );
        assert_eq!(
            parse_host_port("[2001:db8::1]:25"),
            Some(("2001:db8::1".into(), Some(25)))
        );
        assert_eq!(
            parse_host_port("2001:db8::1"),
            Some(("2001:db8::1".into(), None))
        );
        assert_eq!(parse_host_port("mx.example:port"), None);
        assert_eq!(parse_host_port("bad host:25"), None);
    }

    #[test]
    fn typos_find_their_name() {
        let known = ["gmail", "yahoo", "microsoft"];
        assert_eq!(closest("gmial", known), Some("gmail"));
        assert_eq!(closest("microsfot", known), Some("microsoft"));
        assert_eq!(closest("orange", known), None);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
