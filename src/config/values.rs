//! Operator-facing values that are written as strings and print back the
//! same way: durations (`"5m"`, `"1h30m"`, `"250ms"`), sizes (`"25MB"`,
//! `"64MiB"`) and rates (`"100/s"`, `"5000/h,burst=50"`).
//!
//! Each type parses with `FromStr`, prints canonically with `Display`, and
//! (de)serializes through those, so a config value read and written again
//! is unchanged. Parse errors name the value and say what is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value did not parse. The text becomes the config error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {why}")]
pub struct ValueError {
    kind: &'static str,
    value: String,
    why: String,
}

pub(super) fn err(kind: &'static str, value: &str, why: impl Into<String>) -> ValueError {
    ValueError {
        kind,
        value: value.to_owned(),
        why: why.into(),
    }
}

/// Splits `"123abc"` into (123, "abc"); `_` may separate digits.
fn number_prefix(s: &str) -> Option<(u64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let digits: String = s[..end].chars().filter(|c| *c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    Some((digits.parse().ok()?, &s[end..]))
}

/// A length of time: `"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"5d"`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Duration(pub std::time::Duration);

const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

impl Duration {
    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// The std duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expect = "expected a number and a unit (ms, s, m, h, d), such as \"30s\" or \"1h30m\"";
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err("duration", s, expect));
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let (n, tail) = number_prefix(rest).ok_or_else(|| err("duration", s, expect))?;
            let unit_end = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let unit = &tail[..unit_end];
            let (_, ms) = DURATION_UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .ok_or_else(|| err("duration", s, format!("unknown unit {unit:?}; {expect}")))?;
            total = n
                .checked_mul(*ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("duration", s, "too large"))?;
            rest = &tail[unit_end..];
        }
        Ok(Self(std::time::Duration::from_millis(total)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in DURATION_UNITS {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

/// A number of bytes: `"512KB"`, `"25MB"`, `"64MiB"`, `"1GB"`, `"100B"`.
/// `KB`, `MB`, `GB`, `TB` are powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` of 1024.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(pub u64);

const SIZE_UNITS: [(&str, u64); 9] = [
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("KiB", 1 << 10),
    ("KB", 1000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expect = "expected a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), such as \"25MB\"";
        let (n, unit) = number_prefix(s.trim()).ok_or_else(|| err("size", s, expect))?;
        let unit = unit.trim();
        let (_, mult) = SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or_else(|| err("size", s, format!("unknown unit {unit:?}; {expect}")))?;
        n.checked_mul(*mult)
            .map(Self)
            .ok_or_else(|| err("size", s, "too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0B");
        }
        // The unit with the smallest exact number (ties: the binary unit).
        let (unit, size) = SIZE_UNITS
            .iter()
            .filter(|(_, size)| self.0.is_multiple_of(*size))
            .min_by_key(|(_, size)| self.0 / size)
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{unit}", self.0 / size.max(1))
    }
}

/// A rate limit: `"100/s"`, `"1000/h"`, `"5000/h,burst=50"`. The burst is
/// how many may go at once after an idle period: by default one second's
/// worth of the rate, at least 1 (`"60/m"` sends one at a time, one a
/// second; `"50000/h"` lets 14 go at once, never 50,000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    /// How many per `per`.
    pub count: u64,
    /// The interval.
    pub per: std::time::Duration,
    /// Explicit burst, if given.
    pub burst: Option<u64>,
}

const RATE_UNITS: [(&str, u64); 4] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)];

impl Rate {
    /// The burst in effect: explicit, or one second's worth (at least 1).
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or_else(|| {
            let secs = self.per.as_secs().max(1);
            self.count.div_ceil(secs).max(1)
        })
    }

    /// The same rate with its burst written out, for people reading what
    /// is in force (`"60/m,burst=1"`).
    pub fn explicit(&self) -> Self {
        Self {
            burst: Some(self.burst()),
            ..*self
        }
    }
}

impl FromStr for Rate {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expect = "expected COUNT/UNIT with UNIT one of s, m, h, d, optionally followed by \",burst=N\", such as \"5000/h,burst=50\"";
        let (spec, burst) = match s.split_once(',') {
            Some((spec, opt)) => {
                let value = opt
                    .trim()
                    .strip_prefix("burst=")
                    .ok_or_else(|| err("rate", s, expect))?;
                match number_prefix(value) {
                    Some((b, "")) if b > 0 => (spec, Some(b)),
                    _ => return Err(err("rate", s, "burst must be a whole number above 0")),
                }
            }
            None => (s, None),
        };
        let (count, unit) = spec
            .trim()
            .split_once('/')
            .ok_or_else(|| err("rate", s, expect))?;
        let count = match number_prefix(count.trim()) {
            Some((c, "")) if c > 0 => c,
            _ => return Err(err("rate", s, "the count must be a whole number above 0")),
        };
        let (_, secs) = RATE_UNITS
            .iter()
            .find(|(u, _)| *u == unit.trim())
            .ok_or_else(|| {
                err(
                    "rate",
                    s,
                    format!("unknown unit {:?}; {expect}", unit.trim()),
                )
            })?;
        Ok(Self {
            count,
            per: std::time::Duration::from_secs(*secs),
            burst,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.per.as_secs();
        let unit = RATE_UNITS
            .iter()
            .find(|(_, s)| *s == secs)
            .map_or("s", |(u, _)| u);
        write!(f, "{}/{unit}", self.count)?;
        if let Some(b) = self.burst {
            write!(f, ",burst={b}")?;
        }
        Ok(())
    }
}

/// An IP network in CIDR notation (`"127.0.0.0/8"`, `"::1/128"`); a bare
/// address means that one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    /// True if `ip` is inside the network (IPv4-mapped IPv6 addresses count
    /// as their IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl FromStr for Cidr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expect = "expected an address or network such as \"192.0.2.0/24\" or \"::1\"";
        let t = s.trim();
        if let Ok(net) = t.parse::<ipnet::IpNet>() {
            return Ok(Self(net.trunc()));
        }
        t.parse::<std::net::IpAddr>()
            .map(|ip| Self(ip.into()))
            .map_err(|_| err("network", s, expect))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Undoes `%`-escapes (URL credentials, form fields); `None` if one is
/// malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

macro_rules! string_conversions {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}
string_conversions!(Duration, ByteSize, Rate, Cidr);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: FromStr + fmt::Display + PartialEq + fmt::Debug>(s: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        let v: T = s.parse().unwrap();
        assert_eq!(v.to_string().parse::<T>().unwrap(), v, "{s}");
        v
    }

    #[test]
    fn durations() {
        assert_eq!(round_trip::<Duration>("5m").0.as_secs(), 300);
        assert_eq!(round_trip::<Duration>("1h30m").to_string(), "1h30m");
        assert_eq!(round_trip::<Duration>("90s").to_string(), "1m30s");
        assert_eq!(round_trip::<Duration>("250ms").0.as_millis(), 250);
        assert_eq!(round_trip::<Duration>("5d").to_string(), "5d");
        assert_eq!(round_trip::<Duration>("0s").to_string(), "0s");
        assert_eq!(round_trip::<Duration>("1_000ms").to_string(), "1s");
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "5 m",
            "-5s",
            "5.5s",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?}");
        }
        let e = "5x".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("unknown unit \"x\""), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(round_trip::<ByteSize>("25MB").0, 25_000_000);
        assert_eq!(round_trip::<ByteSize>("64MiB").to_string(), "64MiB");
        assert_eq!(round_trip::<ByteSize>("1000KB").to_string(), "1MB");
        assert_eq!(round_trip::<ByteSize>("100B").to_string(), "100B");
        assert_eq!(round_trip::<ByteSize>("0B").to_string(), "0B");
        assert_eq!(round_trip::<ByteSize>("1024000B").0, 1_024_000);
        for bad in ["", "25", "MB", "25XB", "25mb", "1.5GB", "99999999999TB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks() {
        let n = round_trip::<Cidr>("127.0.0.0/8");
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(
            n.contains("::ffff:127.0.0.1".parse().unwrap()),
            "v4-mapped counts as v4"
        );
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(round_trip::<Cidr>("::1").to_string(), "::1/128");
        assert_eq!(round_trip::<Cidr>("10.1.2.3/8").to_string(), "10.0.0.0/8");
        for bad in ["", "10.0.0.0/33", "localhost", "1.2.3"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates() {
        let r = round_trip::<Rate>("5000/h,burst=50");
        assert_eq!((r.count, r.per.as_secs(), r.burst()), (5000, 3600, 50));
        assert_eq!(r.to_string(), "5000/h,burst=50");
        assert_eq!(round_trip::<Rate>("100/s").to_string(), "100/s");
        assert_eq!(round_trip::<Rate>("1_000/h").burst(), 1, "a second's worth");
        assert_eq!(round_trip::<Rate>("50000/h").burst(), 14);
        assert_eq!(round_trip::<Rate>("300/s").burst(), 300);
        assert_eq!(
            round_trip::<Rate>("60/m").explicit().to_string(),
            "60/m,burst=1"
        );
        for bad in [
            "",
            "100",
            "100/x",
            "0/s",
            "/s",
            "10/s,burst=0",
            "10/s,max=3",
            "10/s,burst=x",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }
}
