//! The `tern` verbs' side of the admin API: a small blocking HTTP/1.1
//! client, one request per connection, for the daemon's own API (JSON
//! bodies of known length). It never retries; "daemon down" is an answer
//! the verbs act on (some fall back to reading the spool).

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::AdminConfig;

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing answers at the admin address (the daemon is not running,
    /// or its API is off).
    #[error("no admin API answers at {0}: is tern running?")]
    Down(std::net::SocketAddr),
    /// The API answered with an error status.
    #[error("the admin API answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Its error text.
        message: String,
    },
    /// The exchange broke or made no sense.
    #[error("admin API: {0}")]
    Protocol(String),
}

/// `GET path`, decoded.
pub fn get<T: DeserializeOwned>(admin: &AdminConfig, path: &str) -> Result<T, CallError> {
    call(admin, "GET", path, None)
}

/// `method path` with a JSON body, decoded.
pub fn send<T: DeserializeOwned, B: Serialize>(
    admin: &AdminConfig,
    method: &str,
    path: &str,
    body: &B,
) -> Result<T, CallError> {
    let body = serde_json::to_vec(body).map_err(|e| CallError::Protocol(e.to_string()))?;
    call(admin, method, path, Some(body))
}

/// `GET path` as text (for `/metrics`).
pub fn get_text(admin: &AdminConfig, path: &str) -> Result<String, CallError> {
    let raw = exchange(admin, "GET", path, None)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn call<T: DeserializeOwned>(
    admin: &AdminConfig,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<T, CallError> {
    let payload = exchange(admin, method, path, body)?;
    serde_json::from_slice(&payload).map_err(|e| CallError::Protocol(e.to_string()))
}

/// One request; the body of a 2xx answer.
fn exchange(
    admin: &AdminConfig,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, CallError> {
    let proto = |e: std::io::Error| CallError::Protocol(e.to_string());
    let s = request(admin, method, path, body)?;
    let mut raw = Vec::new();
    match s.take(64 << 20).read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a whole
        // answer (`Connection: close`) has still answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(proto(e)),
    }
    let split = memchr::memmem::find(&raw, b"\r\n\r\n")
        .ok_or_else(|| CallError::Protocol("no end of headers".into()))?;
    let status = status_of(&raw[..split])?;
    let payload = &raw[split + 4..];
    if !(200..300).contains(&status) {
        let message = error_text(payload);
        return Err(CallError::Status { status, message });
    }
    Ok(payload.to_vec())
}

/// Connects and sends one request; the stream to read the answer from.
fn request(
    admin: &AdminConfig,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<super::client_tls::Stream, CallError> {
    if !admin.enabled {
        return Err(CallError::Down(admin.address));
    }
    let proto = |e: std::io::Error| CallError::Protocol(e.to_string());
    let tcp = TcpStream::connect_timeout(&admin.address, Duration::from_secs(3))
        .map_err(|_| CallError::Down(admin.address))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(proto)?;
    let mut s = super::client_tls::wrap(admin, tcp).map_err(CallError::Protocol)?;
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        admin.address,
        body.len()
    );
    if let Some(t) = &admin.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(&[head.as_bytes(), &body].concat())
        .map_err(proto)?;
    Ok(s)
}

/// The status code of an answer's head.
fn status_of(head: &[u8]) -> Result<u16, CallError> {
    let status_line = String::from_utf8_lossy(head);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| CallError::Protocol(format!("bad status line {status_line:?}")))
}

/// `GET path` of a streamed answer (chunked JSON lines): calls `each` with
/// every non-empty line as it arrives, until the stream ends or `each`
/// returns false.
pub fn stream_lines(
    admin: &AdminConfig,
    path: &str,
    mut each: impl FnMut(&str) -> bool,
) -> Result<(), CallError> {
    let proto = |e: std::io::Error| CallError::Protocol(e.to_string());
    let mut r = std::io::BufReader::new(request(admin, "GET", path, None)?);
    let mut head = Vec::new();
    let (mut line, mut chunked) = (String::new(), false);
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(proto)? == 0 {
            return Err(CallError::Protocol("no end of headers".into()));
        }
        if line == "\r\n" {
            break;
        }
        chunked |= line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
        head.extend_from_slice(line.as_bytes());
    }
    let status = status_of(&head)?;
    if !(200..300).contains(&status) || !chunked {
        let mut rest = Vec::new();
        let _ = r.take(1 << 20).read_to_end(&mut rest);
        let message = error_text(&rest);
        return Err(CallError::Status { status, message });
    }
    let mut pending = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).map_err(proto)?;
        let size = usize::from_str_radix(line.trim(), 16)
            .map_err(|_| CallError::Protocol(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            return Ok(());
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).map_err(proto)?;
        pending.extend_from_slice(&chunk[..size]);
        while let Some(nl) = memchr::memchr(b'\n', &pending) {
            let text = String::from_utf8_lossy(&pending[..nl]).trim().to_owned();
            pending.drain(..=nl);
            if !text.is_empty() && !each(&text) {
                return Ok(());
            }
        }
    }
}

/// An error answer's text: each field error (with its line and column)
/// when the API named fields, else its message, else the raw body.
fn error_text(payload: &[u8]) -> String {
    use crate::inject::api::InvalidRequest;
    if let Ok(r) = serde_json::from_slice::<InvalidRequest>(payload)
        && !r.errors.is_empty()
    {
        let each: Vec<String> = r
            .errors
            .iter()
            .map(|e| {
                let at = match (e.line, e.column) {
                    (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                    (Some(l), None) => format!(" (line {l})"),
                    _ => String::new(),
                };
                format!("{}{at}: {}", e.field, e.reason)
            })
            .collect();
        return format!("{}\n  {}", r.error, each.join("\n  "));
    }
    serde_json::from_slice::<super::types::ApiError>(payload).map_or_else(
        |_| String::from_utf8_lossy(payload).into_owned(),
        |e| e.error,
    )
}
