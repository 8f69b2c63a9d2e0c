//! A source's egress proxy, written as a URL: `socks5://host:port` (with
//! optional `user:password@`, RFC 1929) or `haproxy://host:port` (the
//! PROXY protocol v2 header names the source address the proxy binds).
//!
//! The host is an IP literal (`[::1]` for IPv6): a proxy is a fixed piece
//! of the sending infrastructure, and resolving its name for every
//! connection would make each delivery depend on one more DNS answer.
//! The password never appears in `Debug` output, logs or metrics: they
//! use [`ProxyUrl::public`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::values::{ValueError, err, percent_decode};

/// How Tern talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// SOCKS5 CONNECT (RFC 1928); the proxy sends from its own address.
    Socks5,
    /// HAProxy PROXY protocol v2: the header's source address is the one
    /// the proxy binds (`usesrc clientip`), its destination the MX.
    HaProxy,
}

impl ProxyKind {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::HaProxy => "haproxy",
        }
    }
}

/// An egress proxy: `socks5://[user:password@]ip:port` or
/// `haproxy://ip:port`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProxyUrl {
    /// The protocol.
    pub kind: ProxyKind,
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// SOCKS5 username and password (RFC 1929), if the proxy asks.
    pub auth: Option<(String, String)>,
}

impl ProxyUrl {
    /// The URL without the password, for logs, metrics and the API.
    pub fn public(&self) -> String {
        match &self.auth {
            Some((user, _)) => format!("{}://{}@{}", self.kind.scheme(), escape(user), self.addr),
            None => format!("{}://{}", self.kind.scheme(), self.addr),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.public())
    }
}

impl FromStr for ProxyUrl {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| err("proxy", s, why);
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("expected socks5://host:port or haproxy://host:port"))?;
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "socks5" => ProxyKind::Socks5,
            "haproxy" => ProxyKind::HaProxy,
            _ => return Err(bad("the scheme must be socks5 or haproxy")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (auth, host) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let addr: SocketAddr = host.parse().map_err(|_| {
            bad("the proxy must be an IP address and a port (\"[::1]:1080\" for IPv6)")
        })?;
        let auth = match auth {
            None => None,
            Some(_) if kind == ProxyKind::HaProxy => {
                return Err(bad("the PROXY protocol has no credentials"));
            }
            Some(a) => {
                let (u, p) = a
                    .split_once(':')
                    .ok_or_else(|| bad("credentials are written user:password@"))?;
                let (u, p) = (
                    percent_decode(u).ok_or_else(|| bad("bad %-escape"))?,
                    percent_decode(p).ok_or_else(|| bad("bad %-escape"))?,
                );
                if u.is_empty() || u.len() > 255 || p.is_empty() || p.len() > 255 {
                    return Err(bad(
                        "the user and password must each be 1 to 255 bytes (RFC 1929)",
                    ));
                }
                Some((u, p))
            }
        };
        Ok(Self { kind, addr, auth })
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.auth {
            Some((u, p)) => write!(
                f,
                "{}://{}:{}@{}",
                self.kind.scheme(),
                escape(u),
                escape(p),
                self.addr
            ),
            None => write!(f, "{}://{}", self.kind.scheme(), self.addr),
        }
    }
}

impl TryFrom<String> for ProxyUrl {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ProxyUrl> for String {
    fn from(v: ProxyUrl) -> String {
        v.to_string()
    }
}

/// `%`-escapes the bytes a URL's credentials cannot hold as they are.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_and_print_back() {
        let p: ProxyUrl = "socks5://198.51.100.7:1080".parse().unwrap();
        assert_eq!(
            (p.kind, p.addr.port(), p.auth.is_none()),
            (ProxyKind::Socks5, 1080, true)
        );
        let p: ProxyUrl = "haproxy://[2001:db8::7]:2525".parse().unwrap();
        assert_eq!(p.kind, ProxyKind::HaProxy);
        assert_eq!(p.to_string(), "haproxy://[2001:db8::7]:2525");
        let p: ProxyUrl = "socks5://mta:p%40ss:w@127.0.0.1:1080".parse().unwrap();
        assert_eq!(p.auth, Some(("mta".into(), "p@ss:w".into())));
        assert_eq!(p.to_string().parse::<ProxyUrl>().unwrap(), p);
        assert_eq!(p.public(), "socks5://mta@127.0.0.1:1080");
        assert!(!format!("{p:?}").contains("ss"));
    }

    #[test]
    fn a_proxied_source_is_shared_unless_told_otherwise() {
        let parse = |t: &str| toml::from_str::<crate::config::SourceConfig>(t).unwrap();
        let proxied =
            "name = \"p\"\naddress = \"192.0.2.7\"\nproxy = \"socks5://127.0.0.1:1080\"\n";
        assert!(parse(proxied).is_shared());
        assert!(!parse(&format!("{proxied}shared = false\n")).is_shared());
        assert!(!parse("name = \"l\"\n").is_shared());
        assert!(parse("name = \"l\"\nshared = true\n").is_shared());
    }

    #[test]
    fn bad_proxies_say_why() {
        for (s, why) in [
            ("127.0.0.1:1080", "socks5://host:port"),
            ("http://127.0.0.1:3128", "socks5 or haproxy"),
            ("socks5://proxy.example:1080", "IP address and a port"),
            ("socks5://127.0.0.1", "IP address and a port"),
            ("haproxy://u:p@127.0.0.1:5000", "no credentials"),
            ("socks5://user@127.0.0.1:1080", "user:password@"),
            ("socks5://u:%zz@127.0.0.1:1080", "%-escape"),
        ] {
            let e = s.parse::<ProxyUrl>().unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
