//! Syntax of domain names: the one place that says what a host name or a
//! mail domain may look like, and how an internationalized one is written
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
}
