//! An MTA-STS policy (RFC 8461 3.2): the text a policy domain serves at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, parsed and
//! checked, and the MX host patterns it allows (3.4). The `_mta-sts` TXT
//! record is parsed by mail-auth; the fetch and the cache live beside.

use serde::{Deserialize, Serialize};

/// The longest policy accepted (RFC 8461 suggests 64 KiB).
pub const MAX_POLICY: usize = 64 << 10;

/// The longest `max_age` a policy may ask for (RFC 8461 3.2: a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts with a valid certificate.
    Enforce,
    /// Report failures (TLS-RPT), deliver anyway.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    /// As the policy and the logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        }
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode`.
    pub mode: Mode,
    /// `mx` patterns, lower-case: a host name, or `*.` and a domain (one
    /// leftmost label).
    pub mx: Vec<String>,
    /// `max_age`, in seconds, as the policy says it.
    pub max_age: u64,
}

impl Policy {
    /// Parses a policy's text: `key: value` lines (CRLF or LF); `version`
    /// must be `STSv1` and come first; `mode` and `max_age` are required,
    /// `mx` too unless the mode is `none`; unknown keys are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().ok_or("the policy is empty")?;
        match split(first) {
            Some(("version", "STSv1")) => {}
            _ => {
                return Err(format!(
                    "the policy must start with `version: STSv1`, not `{first}`"
                ));
            }
        }
        let (mut mode, mut max_age, mut mx) = (None, None, Vec::new());
        for line in lines {
            let (key, value) =
                split(line).ok_or_else(|| format!("not a `key: value` line: `{line}`"))?;
            match key {
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode `{other}`")),
                    })
                }
                "max_age" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("max_age `{value}` is not a number of seconds"));
                    }
                    let n: u64 = value.parse().unwrap_or(u64::MAX);
                    max_age = Some(n.min(MAX_AGE_LIMIT));
                }
                "mx" => {
                    let pattern = value.trim_end_matches('.').to_ascii_lowercase();
                    if !valid_pattern(&pattern) {
                        return Err(format!("mx `{value}` is not a host name or `*.` pattern"));
                    }
                    mx.push(pattern);
                }
                _ => {} // extensions (RFC 8461 3.2)
            }
        }
        let mode = mode.ok_or("the policy has no mode")?;
        let max_age = max_age.ok_or("the policy has no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("the policy names no mx".into());
        }
        Ok(Self { mode, mx, max_age })
    }

    /// Whether MX host `host` matches one of the policy's patterns
    /// (RFC 8461 4.1: `*.example.com` matches one label, not two).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *p == host,
        })
    }
}

fn split(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    Some((k.trim(), v.trim()))
}

fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    name.contains('.') && crate::config::names::is_hostname(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_parsed_and_its_patterns_match_one_label() {
        let p = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.Example.NET\r\nmax_age: 86400\r\nx-ext: 1\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert!(p.allows("MX1.example.com."));
        assert!(p.allows("a.example.net"));
        assert!(!p.allows("a.b.example.net"), "one label only");
        assert!(!p.allows("example.net"));
        assert!(!p.allows("mx2.example.com"));
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty"),
            ("mode: enforce\nmx: a.b\nmax_age: 1", "version"),
            (
                "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1",
                "version",
            ),
            ("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1", "mode"),
            ("version: STSv1\nmode: enforce\nmax_age: 1", "mx"),
            ("version: STSv1\nmode: enforce\nmx: a.b", "max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1",
                "max_age",
            ),
            ("version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1", "mx"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 99999999999").unwrap();
        assert_eq!((none.mode, none.max_age), (Mode::None, MAX_AGE_LIMIT));
    }
}
