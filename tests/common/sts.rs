//! An MTA-STS policy host for one test: HTTPS on a loopback address,
//! answering every GET with the policy (or the status) it is told to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A running policy host.
pub struct PolicyHost {
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl PolicyHost {
    /// Serves `policy` (status 200) on `addr` over TLS with `acceptor`.
    pub async fn start(addr: SocketAddr, acceptor: TlsAcceptor, policy: &str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let answer = Arc::new(Mutex::new((200, policy.to_owned())));
        let hits = Arc::new(AtomicU32::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, a, h) = (acceptor.clone(), a.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::Relaxed);
                    let (status, body) = a.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s
                        .write_all(&[head.as_bytes(), body.as_bytes()].concat())
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Self { answer, hits, task }
    }

    /// Answers `status` with `body` from now on.
    pub fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    /// Requests served.
    pub fn hits(&self) -> u32 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}
