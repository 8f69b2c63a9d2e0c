//! The client side of an egress proxy: a TCP stream to a destination
//! through a SOCKS5 proxy (RFC 1928 CONNECT, RFC 1929 username and
//! password) or an HAProxy listener (PROXY protocol v2 header), ready for
//! SMTP. Owns the handshakes and what their failures mean; never decides
//! what happens to the mail (the caller does).
//!
//! A failure is either the proxy's (it cannot be reached, is slow to
//! answer its own handshake, or refuses: the source is unusable, its mail
//! goes to the pool's other sources) or the destination's, as the proxy
//! reports it (host unreachable, connection refused, or no answer to the
//! CONNECT in time: the next MX host is tried, as for a direct
//! connection). Every wait ends by one deadline, the connect timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::{ProxyKind, ProxyUrl};

/// Why a proxy gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy itself cannot be reached.
    #[error("proxy {proxy} cannot be reached: {error}")]
    Unreachable {
        /// The proxy, without its password.
        proxy: String,
        /// What the connect said.
        error: io::Error,
    },
    /// The proxy did not finish its own handshake in time.
    #[error("proxy {proxy} did not answer in time")]
    Slow {
        /// The proxy, without its password.
        proxy: String,
    },
    /// The proxy refused (credentials, rules) or spoke nonsense.
    #[error("proxy {proxy} refused: {why}")]
    Refused {
        /// The proxy, without its password.
        proxy: String,
        /// Its answer.
        why: String,
    },
    /// The proxy could not reach the destination (its reply says why, or
    /// its CONNECT got no answer in time).
    #[error("proxy {proxy} could not reach {dest}: {why}")]
    Destination {
        /// The proxy, without its password.
        proxy: String,
        /// The MX address.
        dest: SocketAddr,
        /// Why.
        why: String,
    },
}

impl ProxyError {
    /// True when the proxy is at fault (the source should rest), false
    /// when the destination is (try its next host).
    pub fn is_proxy_fault(&self) -> bool {
        !matches!(self, ProxyError::Destination { .. })
    }

    /// A short name for the metrics: unreachable, slow, refused or
    /// destination.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Unreachable { .. } => "unreachable",
            ProxyError::Slow { .. } => "slow",
            ProxyError::Refused { .. } => "refused",
            ProxyError::Destination { .. } => "destination",
        }
    }
}

/// Opens a TCP stream to `dest` through `proxy`, leaving from `source`
/// (the public address: in the PROXY header for HAProxy; for SOCKS5 the
/// proxy's own configuration picks it), by `deadline`.
pub async fn connect(
    proxy: &ProxyUrl,
    source: Option<IpAddr>,
    dest: SocketAddr,
    deadline: Instant,
) -> Result<TcpStream, ProxyError> {
    let slow = || ProxyError::Slow {
        proxy: proxy.public(),
    };
    let mut tcp = match timeout_at(deadline, TcpStream::connect(proxy.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            return Err(ProxyError::Unreachable {
                proxy: proxy.public(),
                error,
            });
        }
        Err(_) => return Err(slow()),
    };
    let _ = tcp.set_nodelay(true);
    match proxy.kind {
        ProxyKind::HaProxy => {
            let header = proxy_v2_header(source, dest).ok_or_else(|| ProxyError::Refused {
                proxy: proxy.public(),
                why: format!("no {} source address for {dest}", family(dest)),
            })?;
            match timeout_at(deadline, tcp.write_all(&header)).await {
                Ok(Ok(())) => Ok(tcp),
                Ok(Err(e)) => Err(refused(proxy, format!("closed on the header: {e}"))),
                Err(_) => Err(slow()),
            }
        }
        ProxyKind::Socks5 => {
            match timeout_at(deadline, socks5_hello(&mut tcp, proxy)).await {
                Ok(r) => r?,
                Err(_) => return Err(slow()),
            }
            match timeout_at(deadline, socks5_connect(&mut tcp, proxy, dest)).await {
                Ok(r) => r.map(|()| tcp),
                Err(_) => Err(ProxyError::Destination {
                    proxy: proxy.public(),
                    dest,
                    why: "no answer to CONNECT in time".into(),
                }),
            }
        }
    }
}

fn family(a: SocketAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn refused(proxy: &ProxyUrl, why: String) -> ProxyError {
    ProxyError::Refused {
        proxy: proxy.public(),
        why,
    }
}

/// The PROXY protocol v2 header for a TCP connection from `source` (port
/// 0: the proxy picks one) to `dest`; `None` if the families differ.
pub fn proxy_v2_header(source: Option<IpAddr>, dest: SocketAddr) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut h = Vec::with_capacity(16 + 36);
    h.extend_from_slice(SIGNATURE);
    h.push(0x21); // version 2, PROXY
    match (source?, dest.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11); // TCP over IPv4
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            h.push(0x21); // TCP over IPv6
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        _ => return None,
    }
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&dest.port().to_be_bytes());
    Some(h)
}

/// Method selection, and RFC 1929 authentication when the proxy picks it.
async fn socks5_hello(tcp: &mut TcpStream, proxy: &ProxyUrl) -> Result<(), ProxyError> {
    let io = |e: io::Error| refused(proxy, format!("closed during the handshake: {e}"));
    let hello: &[u8] = if proxy.auth.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    tcp.write_all(hello).await.map_err(io)?;
    let mut r = [0u8; 2];
    tcp.read_exact(&mut r).await.map_err(io)?;
    match (r, &proxy.auth) {
        ([5, 0], _) => Ok(()),
        ([5, 2], Some((user, pass))) => {
            let mut m = Vec::with_capacity(3 + user.len() + pass.len());
            m.push(1);
            m.push(user.len() as u8);
            m.extend_from_slice(user.as_bytes());
            m.push(pass.len() as u8);
            m.extend_from_slice(pass.as_bytes());
            tcp.write_all(&m).await.map_err(io)?;
            tcp.read_exact(&mut r).await.map_err(io)?;
            if r[1] == 0 {
                Ok(())
            } else {
                Err(refused(
                    proxy,
                    "the username or password was refused".into(),
                ))
            }
        }
        ([5, 0xFF], None) => Err(refused(
            proxy,
            "it asks for credentials (give user:password@ in the URL)".into(),
        )),
        ([5, 0xFF], Some(_)) => Err(refused(proxy, "no authentication method accepted".into())),
        ([5, m], _) => Err(refused(proxy, format!("it chose method {m}, not offered"))),
        ([v, _], _) => Err(refused(proxy, format!("not SOCKS5 (version {v})"))),
    }
}

/// CONNECT to `dest` and its reply.
async fn socks5_connect(
    tcp: &mut TcpStream,
    proxy: &ProxyUrl,
    dest: SocketAddr,
) -> Result<(), ProxyError> {
    let io = |e: io::Error| refused(proxy, format!("closed during CONNECT: {e}"));
    let mut m = Vec::with_capacity(22);
    m.extend_from_slice(&[5, 1, 0]);
    match dest.ip() {
        IpAddr::V4(a) => {
            m.push(1);
            m.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            m.push(4);
            m.extend_from_slice(&a.octets());
        }
    }
    m.extend_from_slice(&dest.port().to_be_bytes());
    tcp.write_all(&m).await.map_err(io)?;
    let mut head = [0u8; 4];
    tcp.read_exact(&mut head).await.map_err(io)?;
    if head[0] != 5 {
        return Err(refused(proxy, format!("not SOCKS5 (version {})", head[0])));
    }
    if head[1] != 0 {
        return Err(reply_error(proxy, dest, head[1]));
    }
    // The bound address: read and dropped, so SMTP starts at the banner.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            tcp.read_exact(&mut n).await.map_err(io)?;
            usize::from(n[0]) + 2
        }
        t => {
            return Err(refused(
                proxy,
                format!("unknown address type {t} in its reply"),
            ));
        }
    };
    let mut skip = [0u8; 257];
    tcp.read_exact(&mut skip[..rest]).await.map_err(io)?;
    Ok(())
}

/// A CONNECT reply's error code (RFC 1928 section 6): 3 to 6 are about
/// the destination, the others about the proxy.
fn reply_error(proxy: &ProxyUrl, dest: SocketAddr, code: u8) -> ProxyError {
    let destination = |why: &str| ProxyError::Destination {
        proxy: proxy.public(),
        dest,
        why: why.into(),
    };
    match code {
        3 => destination("network unreachable"),
        4 => destination("host unreachable"),
        5 => destination("connection refused"),
        6 => destination("TTL expired"),
        1 => refused(proxy, "general SOCKS server failure".into()),
        2 => refused(proxy, "connection not allowed by its rules".into()),
        7 => refused(proxy, "CONNECT not supported".into()),
        8 => refused(proxy, "address type not supported".into()),
        c => refused(proxy, format!("reply code {c}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_v2_header_is_the_specs_bytes() {
        let h = proxy_v2_header(
            Some([192, 0, 2, 7].into()),
            SocketAddr::from(([198, 51, 100, 1], 25)),
        )
        .unwrap();
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1, 0, 0, 0, 25,
        ]);
        assert_eq!(h, want);
        let v6 = proxy_v2_header(
            Some("2001:db8::7".parse().unwrap()),
            "[2001:db8::1]:25".parse().unwrap(),
        )
        .unwrap();
        assert_eq!((v6[13], v6.len()), (0x21, 16 + 36));
        assert!(
            proxy_v2_header(Some([192, 0, 2, 7].into()), "[::1]:25".parse().unwrap()).is_none()
        );
        assert!(proxy_v2_header(None, "127.0.0.1:25".parse().unwrap()).is_none());
    }

    #[test]
    fn reply_codes_blame_the_right_side() {
        let p: ProxyUrl = "socks5://127.0.0.1:1080".parse().unwrap();
        let d: SocketAddr = "127.0.0.1:25".parse().unwrap();
        for c in 3..=6 {
            assert!(!reply_error(&p, d, c).is_proxy_fault(), "{c}");
        }
        for c in [1, 2, 7, 8, 9] {
            assert!(reply_error(&p, d, c).is_proxy_fault(), "{c}");
        }
    }
}
