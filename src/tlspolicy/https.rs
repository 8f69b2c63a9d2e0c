//! The HTTPS client of TLS policy: fetches an MTA-STS policy, posts a TLS
//! report. Names are resolved through Tern's own resolver (the one mail
//! routing uses), certificates are checked against the system's roots and
//! `[delivery] tls_ca_file`, redirects are never followed, answers are
//! bounded in size, and the whole exchange in time. One request per
//! connection: these are rare (a policy per domain per day).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::dns::resolver::Resolver;

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpsError {
    /// The server's certificate is not valid for its name.
    #[error("certificate of {host}: {why}")]
    Certificate {
        /// The host.
        host: String,
        /// What is wrong.
        why: String,
    },
    /// No answer, a broken exchange, a refusal, or an answer too large.
    #[error("{0}")]
    Failed(String),
}

/// The client: a verifying TLS config, the port to use, a time limit.
#[derive(Clone)]
pub struct Https {
    resolver: Arc<dyn Resolver>,
    tls: tokio_rustls::TlsConnector,
    port: u16,
    timeout: Duration,
}

impl Https {
    /// A client resolving through `resolver`, trusting the system's roots
    /// and `extra`, connecting to `port` (443 but in labs and tests).
    pub fn new(
        resolver: Arc<dyn Resolver>,
        extra: &[CertificateDer<'static>],
        port: u16,
        timeout: Duration,
    ) -> Self {
        Self {
            resolver,
            tls: crate::smtp::tls::verifying_client(extra),
            port,
            timeout,
        }
    }

    /// GETs `https://host/path`: the body of a `200` answer, at most
    /// `limit` bytes.
    pub async fn get(&self, host: &str, path: &str, limit: usize) -> Result<Bytes, HttpsError> {
        let req = hyper::Request::get(path);
        self.exchange(host, req, Bytes::new(), limit).await
    }

    /// POSTs `body` to `https://host/path`; any 2xx is success.
    pub async fn post(
        &self,
        host: &str,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), HttpsError> {
        let req = hyper::Request::post(path).header(hyper::header::CONTENT_TYPE, content_type);
        self.exchange(host, req, body, 4096).await.map(|_| ())
    }

    async fn exchange(
        &self,
        host: &str,
        req: hyper::http::request::Builder,
        body: Bytes,
        limit: usize,
    ) -> Result<Bytes, HttpsError> {
        let work = async {
            let addr = self.address(host).await?;
            let tcp = TcpStream::connect(addr).await.map_err(|e| {
                HttpsError::Failed(format!("cannot connect to {host} [{addr}]: {e}"))
            })?;
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| HttpsError::Failed(format!("{host}: {e}")))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| classify(host, &e))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| HttpsError::Failed(format!("{host}: {e}")))?;
            let driver = tokio::spawn(conn);
            let req = req
                .header(hyper::header::HOST, host)
                .header(hyper::header::USER_AGENT, "Tern")
                .body(Full::new(body))
                .map_err(|e| HttpsError::Failed(e.to_string()))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| HttpsError::Failed(format!("{host}: {e}")))?;
            let status = resp.status().as_u16();
            let got = Limited::new(resp.into_body(), limit).collect().await;
            driver.abort();
            if !(200..300).contains(&status) {
                return Err(HttpsError::Failed(format!("{host} answered HTTP {status}")));
            }
            got.map(|b| b.to_bytes()).map_err(|e| {
                HttpsError::Failed(format!(
                    "{host}: the answer is unreadable or over {limit} bytes: {e}"
                ))
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(HttpsError::Failed(format!(
                "{host} did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn address(&self, host: &str) -> Result<SocketAddr, HttpsError> {
        let ips =
            (self.resolver.addresses(host).await).map_err(|e| HttpsError::Failed(e.to_string()))?;
        ips.first()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .ok_or_else(|| HttpsError::Failed(format!("{host} has no address")))
    }
}

/// A handshake failure: the certificate's fault, or the exchange's.
fn classify(host: &str, e: &std::io::Error) -> HttpsError {
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(c)) => HttpsError::Certificate {
            host: host.to_owned(),
            why: c.to_string(),
        },
        _ => HttpsError::Failed(format!("TLS with {host}: {e}")),
    }
}
