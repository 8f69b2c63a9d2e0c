//! A peer's admin API as a draining node calls it: one HTTP/1.1 POST per
//! connection (`Connection: close`), the fleet's token as a bearer, with
//! time limits on connecting and on the whole exchange. Owns the
//! exchange; never decides what an answer means for the drain.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest a peer may take to accept a connection.
const CONNECT: Duration = Duration::from_secs(5);
/// The longest one exchange may take (a batch is written durably there).
const EXCHANGE: Duration = Duration::from_secs(120);
/// The largest answer read.
const MAX_ANSWER: usize = 16 << 20;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// It could not be reached, or the exchange broke or took too long.
    #[error("peer {0}: {1}")]
    Unreachable(String, String),
    /// It answered with an error status.
    #[error("peer {0} answered {1}: {2}")]
    Status(String, u16, String),
    /// Its answer made no sense.
    #[error("peer {0}: bad answer: {1}")]
    Protocol(String, String),
}

/// `POST path` to the peer at `addr` (`host:port`); the answer's body on
/// a 2xx.
pub async fn post(
    addr: &str,
    path: &str,
    (content_type, body): (&str, Bytes),
    token: Option<&str>,
) -> Result<Bytes, PeerError> {
    let unreachable = |e: String| PeerError::Unreachable(addr.to_owned(), e);
    let connect = TcpStream::connect(addr);
    let mut stream = match tokio::time::timeout(CONNECT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable("connection timed out".into())),
    };
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let exchange = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(EXCHANGE, exchange).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable("no answer in time".into())),
    };
    parse(addr, &answer)
}

/// Splits an HTTP/1.1 answer into its status and body (plain or chunked).
fn parse(addr: &str, answer: &[u8]) -> Result<Bytes, PeerError> {
    let bad = |why: &str| PeerError::Protocol(addr.to_owned(), why.to_owned());
    if answer.len() > MAX_ANSWER {
        return Err(bad("the answer is too long"));
    }
    let end = memchr::memmem::find(answer, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let raw = &answer[end + 4..];
    let body = match chunked {
        true => dechunk(raw).ok_or_else(|| bad("a damaged chunked body"))?,
        false => raw.to_vec(),
    };
    match status {
        200..=299 => Ok(body.into()),
        _ => {
            let text = String::from_utf8_lossy(&body).chars().take(500).collect();
            Err(PeerError::Status(addr.to_owned(), status, text))
        }
    }
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(raw, b"\r\n")?;
        let size = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_plain_or_chunked_and_errors_keep_their_text() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(&parse("p", ok).unwrap()[..], b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(&parse("p", chunked).unwrap()[..], b"{}");
        let refused = b"HTTP/1.1 401 Unauthorized\r\n\r\nno token";
        assert!(
            matches!(parse("p", refused), Err(PeerError::Status(_, 401, t)) if t == "no token")
        );
        assert!(parse("p", b"garbage").is_err());
        assert!(
            parse(
                "p",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            )
            .is_err()
        );
    }
}
