//! A webhook's HTTP side: POSTs a batch of events (a JSON array) to its
//! URL over a kept-alive HTTP/1.1 connection (TLS with the system's
//! roots for `https`), signed with HMAC-SHA256 when it has a secret:
//! `X-Tern-Signature: t=<unix seconds>,v1=<hex HMAC of "<t>.<body>">`.
//! Reports success (any 2xx) or why not; never retries (the exporter
//! does).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{HttpTarget, WebhookConfig};

/// Why a POST did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// No connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The exchange broke or timed out.
    #[error("{0}")]
    Exchange(String),
    /// The receiver answered, not 2xx.
    #[error("the receiver answered {0}")]
    Status(u16),
}

/// One webhook's client.
pub struct Webhook {
    target: HttpTarget,
    url: String,
    secret: Option<String>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// The signature header's value for `body` at `t` (unix seconds).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

impl Webhook {
    /// The client of a validated webhook config.
    pub fn new(c: &WebhookConfig) -> Result<Self, String> {
        let target = HttpTarget::parse(&c.url)?;
        let tls = target.tls.then(|| crate::smtp::tls::verifying_client(&[]));
        Ok(Self {
            target,
            url: c.url.clone(),
            secret: c.secret.clone(),
            timeout: c.timeout.get(),
            conn: None,
            tls,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PostError> {
        let t = &self.target;
        let fail = |e: String| PostError::Connect(format!("{}:{}", t.host, t.port), e);
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| fail(e.to_string()))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                handshake(TokioIo::new(stream)).await.map_err(fail)
            }
            None => handshake(TokioIo::new(tcp)).await.map_err(fail),
        }
    }

    /// POSTs one batch (`events`, JSON objects) as a JSON array.
    pub async fn post(&mut self, events: &[&[u8]]) -> Result<(), PostError> {
        let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.push(b']');
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(body)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(PostError::Exchange(format!("no answer within {timeout:?}")))
            }
        }
    }

    async fn exchange(&mut self, body: Vec<u8>) -> Result<(), PostError> {
        let mut conn = match self.conn.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => self.connect().await?,
        };
        let host = match self.target.port {
            80 | 443 => self.target.host.clone(),
            p => format!("{}:{p}", self.target.host),
        };
        let mut req = hyper::Request::post(self.target.path.as_str())
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "Tern");
        if let Some(secret) = &self.secret {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req = req.header("x-tern-signature", signature(secret, t, &body));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::Exchange(e.to_string()))?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| PostError::Exchange(format!("{}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        // Read the answer to its end so the connection can carry the next.
        let ok = resp.into_body().collect().await.is_ok();
        if ok {
            self.conn = Some(conn);
        }
        match status {
            200..=299 => Ok(()),
            s => Err(PostError::Status(s)),
        }
    }
}

/// HTTP/1.1 over `io`; the connection is driven by a task of its own.
async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_an_hmac_of_the_timestamp_and_body() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'secret',
        //   b'1700000000.[]', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("secret", 1_700_000_000, b"[]"),
            "t=1700000000,v1=74f76d8933679a54d6be8c7560a5233b124658241ca5a3b0f09af80d3ea60d78"
        );
    }

    #[test]
    fn urls_are_taken_apart() {
        let t = HttpTarget::parse("https://hooks.example.com/tern?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/tern?x=1")
        );
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8080, "/"));
        assert!(HttpTarget::parse("ftp://x").is_err());
        assert!(HttpTarget::parse("http://user:pw@x/").is_err());
    }
}
