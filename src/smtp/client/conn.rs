//! One outbound connection: TCP from the source address (or through its
//! egress proxy), the greeting,
//! EHLO (HELO when EHLO is refused), STARTTLS, and reading replies (framed
//! and parsed by [`super::reply`]).

use std::net::SocketAddr;
use std::time::Duration;

use smtp_proto::EhloResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use super::reply::{parse, reply_end};
use super::tls::{TlsFailure, Verifier, connector, handshake_failure, server_name};
use super::{ClientError, RemoteReply};
use crate::config::{ClientTimeouts, TlsPolicy};
use crate::egress::Source;
use crate::tlspolicy::tlsa::Tlsa;

/// Longest reply accepted (a longer one is a protocol error).
const MAX_REPLY: usize = 64 << 10;

/// What the server offers, from its EHLO reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// EHLO was accepted (else HELO: no extensions).
    pub esmtp: bool,
    pub pipelining: bool,
    /// CHUNKING (RFC 3030): BDAT may carry the message.
    pub chunking: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// SIZE was advertised (its limit, 0 if none given).
    pub size: Option<u64>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// While the TCP stream is being handed to TLS, or after that failed.
    Closed,
}

/// Content up to this size is copied behind the commands to go in one
/// write; larger content is written from where it is.
const SMALL_CONTENT: usize = 64 << 10;

/// Bytes of message data written per timed write.
const DATA_BLOCK: usize = 1 << 20;

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection closed")
}

/// What the caller needs to connect: who we are and how long to wait.
pub struct Greeting<'a> {
    /// The EHLO name (the source's).
    pub ehlo: &'a str,
    /// The destination host name (for TLS SNI and logs).
    pub host: &'a str,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// The certificate check of every STARTTLS (webpki).
    pub verifier: &'a Verifier,
    /// The host's TLSA records when DANE applies to it: TLS is required,
    /// and the certificate is checked against them instead.
    pub dane: Option<&'a Tlsa>,
    /// Timeouts.
    pub timeouts: &'a ClientTimeouts,
    /// Where its dialogue is traced for whoever watches.
    pub trace: &'a crate::trace::OutboundTrace,
}

impl Greeting<'_> {
    /// The policy in force on this host: DANE with usable records makes it
    /// `Verify` (against the records), DANE without usable records
    /// `Required`; else the route's.
    pub fn effective(&self) -> TlsPolicy {
        match self.dane {
            Some(t) if t.authenticates() => TlsPolicy::Verify,
            Some(_) => TlsPolicy::Required,
            None => self.tls,
        }
    }
}

/// An established SMTP session, ready for transactions.
pub struct Connection {
    stream: Stream,
    rbuf: Vec<u8>,
    pub(super) wbuf: Vec<u8>,
    /// What the server offers.
    pub caps: Capabilities,
    /// The host name.
    pub host: String,
    /// The address connected to.
    pub peer: SocketAddr,
    /// TLS is active.
    pub tls: bool,
    /// The server's certificate is valid for the host name (checked on
    /// every TLS session).
    pub verified: bool,
    /// The certificate matched the host's TLSA records (DANE).
    pub dane: bool,
    /// The last transaction failed because the connection was closed
    /// before the server answered MAIL: nothing can have been accepted,
    /// so it may be tried again at once on a new connection.
    pub closed_before_mail: bool,
    /// Why TLS is not authenticated (no STARTTLS, or the certificate's
    /// fault), when it is not.
    pub tls_failure: Option<(TlsFailure, String)>,
    pub(super) timeouts: ClientTimeouts,
    trace: crate::trace::OutboundTrace,
}

/// A TCP connection from the source's own address (bound here, if set).
async fn direct(
    source: &Source,
    addr: SocketAddr,
    t: &ClientTimeouts,
) -> Result<TcpStream, ClientError> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ClientError::Connect(addr, e))?;
    if let Some(ip) = source.address {
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(|e| ClientError::Bind(ip, e))?;
    }
    let tcp = match timeout(t.connect.get(), sock.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ClientError::Connect(addr, e)),
        Err(_) => return Err(ClientError::Timeout("connect")),
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

impl Connection {
    /// Connects from `source` to `addr` and greets. With an opportunistic
    /// policy, a failed handshake returns `ClientError::Tls`: the caller
    /// retries this address with `TlsPolicy::Off`.
    pub async fn open(
        source: &Source,
        addr: SocketAddr,
        g: &Greeting<'_>,
    ) -> Result<Self, ClientError> {
        let t = g.timeouts;
        let tcp = match &source.proxy {
            Some(p) => {
                let deadline = tokio::time::Instant::now() + t.connect.get();
                crate::egress::proxy::connect(p, source.address, addr, deadline).await?
            }
            None => direct(source, addr, t).await?,
        };
        let mut c = Connection {
            stream: Stream::Plain(tcp),
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            caps: Capabilities::default(),
            host: g.host.to_owned(),
            peer: addr,
            tls: false,
            verified: false,
            dane: false,
            closed_before_mail: false,
            tls_failure: None,
            timeouts: *t,
            trace: g.trace.clone(),
        };
        let banner = c.read_reply(t.banner.get(), "greeting").await?;
        if banner.code != 220 {
            return Err(ClientError::Rejected {
                stage: "greeting",
                reply: banner,
            });
        }
        c.hello(g.ehlo).await?;
        let tls = g.effective();
        if tls != TlsPolicy::Off && c.caps.starttls {
            c.start_tls(g).await?;
        } else if tls != TlsPolicy::Off {
            let why = format!("{} does not offer STARTTLS", g.host);
            c.tls_failure = Some((TlsFailure::StartTlsNotSupported, why));
        }
        if tls.requires_tls() && !c.tls {
            let (failure, why) = c.tls_failure.take().unwrap_or((
                TlsFailure::StartTlsNotSupported,
                format!("{} does not offer STARTTLS", g.host),
            ));
            return Err(ClientError::Tls(
                failure,
                format!("{why} and TLS is required"),
            ));
        }
        if tls == TlsPolicy::Verify && !c.verified {
            let (failure, why) = (c.tls_failure.take())
                .unwrap_or((TlsFailure::Validation, "certificate not verified".into()));
            let _ = timeout(t.rset.get(), c.shutdown()).await;
            return Err(ClientError::Tls(failure, why));
        }
        Ok(c)
    }

    /// EHLO, or HELO if EHLO is refused with 5xx.
    async fn hello(&mut self, name: &str) -> Result<(), ClientError> {
        let limit = self.timeouts.ehlo.get();
        self.send(format!("EHLO {name}\r\n").as_bytes(), limit)
            .await?;
        let raw = self.read_raw(limit, "EHLO").await?;
        let reply = parse(&raw)?;
        if reply.is_positive() {
            self.caps = capabilities(&raw);
            return Ok(());
        }
        if reply.code < 500 {
            return Err(ClientError::Rejected {
                stage: "EHLO",
                reply,
            });
        }
        let r = self
            .command(format!("HELO {name}\r\n").as_bytes(), limit, "HELO")
            .await?;
        if !r.is_positive() {
            return Err(ClientError::Rejected {
                stage: "HELO",
                reply: r,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn start_tls(&mut self, g: &Greeting<'_>) -> Result<(), ClientError> {
        let limit = self.timeouts.starttls.get();
        let r = self.command(b"STARTTLS\r\n", limit, "STARTTLS").await?;
        if r.code != 220 {
            // Refused: opportunistic carries on in plaintext on this connection.
            let why = format!("{} refused STARTTLS: {r}", g.host);
            self.tls_failure = Some((TlsFailure::StartTlsNotSupported, why));
            return if g.effective().requires_tls() {
                Err(ClientError::Rejected {
                    stage: "STARTTLS",
                    reply: r,
                })
            } else {
                Ok(())
            };
        }
        if !self.rbuf.is_empty() {
            // Bytes after the 220 before the handshake (CVE-2021-38371).
            return Err(ClientError::Tls(
                TlsFailure::Validation,
                "data sent after the STARTTLS reply, before the handshake".into(),
            ));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ClientError::Tls(
                TlsFailure::Validation,
                "TLS already active".into(),
            ));
        };
        let name =
            server_name(g.host).map_err(|e| ClientError::Tls(TlsFailure::HostMismatch, e))?;
        let tls = match timeout(limit, connector().connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ClientError::Tls(handshake_failure(&e), e.to_string())),
            Err(_) => {
                return Err(ClientError::Tls(
                    TlsFailure::Validation,
                    "the TLS handshake timed out".into(),
                ));
            }
        };
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let checked = match g.dane {
            Some(t) if t.authenticates() => {
                let r = t
                    .check(chain, g.host)
                    .map_err(|e| (TlsFailure::Validation, e));
                self.dane = r.is_ok();
                r
            }
            Some(_) => Err((TlsFailure::Validation, "no usable TLSA record".into())),
            None => g.verifier.check(chain, g.host),
        };
        match checked {
            Ok(()) => self.verified = true,
            Err(failure) => self.tls_failure = Some(failure),
        }
        self.stream = Stream::Tls(Box::new(tls));
        self.tls = true;
        if g.effective() == TlsPolicy::Verify && !self.verified {
            return Ok(()); // refused by `open`, before any command
        }
        self.hello(g.ehlo).await
    }

    /// RSET (after a transaction that did not complete).
    pub async fn rset(&mut self) -> Result<(), ClientError> {
        let r = self
            .command(b"RSET\r\n", self.timeouts.rset.get(), "RSET")
            .await?;
        if r.is_positive() {
            Ok(())
        } else {
            Err(ClientError::Rejected {
                stage: "RSET",
                reply: r,
            })
        }
    }

    /// QUIT; a server that closes without replying is fine (RFC 5321 O15).
    pub async fn quit(mut self) {
        let limit = self.timeouts.rset.get();
        let _ = self.command(b"QUIT\r\n", limit, "QUIT").await;
        let _ = timeout(limit, self.shutdown()).await;
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Closed => Ok(()),
        }
    }

    /// True if nothing unread is buffered: a reply nobody asked for means
    /// the session is out of step and must not be reused.
    pub fn in_sync(&self) -> bool {
        self.rbuf.is_empty()
    }

    /// Sends a command and reads its reply.
    pub(super) async fn command(
        &mut self,
        cmd: &[u8],
        limit: Duration,
        what: &'static str,
    ) -> Result<RemoteReply, ClientError> {
        self.send(cmd, limit).await?;
        self.read_reply(limit, what).await
    }

    /// Writes command bytes (traced), within `limit`.
    pub(super) async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), ClientError> {
        self.trace.lines(self.peer, &self.host, ">", bytes);
        self.write(bytes, limit).await
    }

    /// Notes what happened on the connection in its trace.
    pub(super) fn note(&self, what: &str) {
        self.trace
            .lines(self.peer, &self.host, "*", what.as_bytes());
    }

    /// Writes bytes (message content: never traced), within `limit`.
    pub(super) async fn write(&mut self, bytes: &[u8], limit: Duration) -> Result<(), ClientError> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(bytes).await,
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Closed => Err(closed()),
            }
        };
        match timeout(limit, write).await {
            Ok(res) => res.map_err(ClientError::Io),
            Err(_) => Err(ClientError::Timeout("sending")),
        }
    }

    /// Sends what was gathered in `wbuf`.
    pub(super) async fn flush_wbuf(&mut self, limit: Duration) -> Result<(), ClientError> {
        let buf = std::mem::take(&mut self.wbuf);
        let res = self.send(&buf, limit).await;
        self.wbuf = buf;
        self.wbuf.clear();
        res
    }

    /// Sends what was gathered in `wbuf` (traced) followed by `content`
    /// (message data: never traced, and a CRLF after it if `crlf`): in the
    /// same write when the content is small, so a pipelined transaction
    /// costs one write.
    pub(super) async fn flush_wbuf_with(
        &mut self,
        content: &[u8],
        crlf: bool,
        limit: Duration,
    ) -> Result<(), ClientError> {
        self.trace.lines(self.peer, &self.host, ">", &self.wbuf);
        let mut buf = std::mem::take(&mut self.wbuf);
        let res = match content.len() <= SMALL_CONTENT {
            true => {
                buf.extend_from_slice(content);
                if crlf {
                    buf.extend_from_slice(b"\r\n");
                }
                self.write(&buf, limit).await
            }
            false => self.write_apart(&buf, content, crlf, limit).await,
        };
        buf.clear();
        self.wbuf = buf;
        res
    }

    /// Writes message data in blocks of at most [`DATA_BLOCK`], each
    /// within `limit` (a slow receiver is judged per block, not on the
    /// whole message).
    pub(super) async fn write_blocks(
        &mut self,
        bytes: &[u8],
        limit: Duration,
    ) -> Result<(), ClientError> {
        for block in bytes.chunks(DATA_BLOCK) {
            self.write(block, limit).await?;
        }
        Ok(())
    }

    /// Commands, then a large content in blocks, each write within
    /// `limit`.
    async fn write_apart(
        &mut self,
        commands: &[u8],
        content: &[u8],
        crlf: bool,
        limit: Duration,
    ) -> Result<(), ClientError> {
        self.write(commands, limit).await?;
        self.write_blocks(content, limit).await?;
        match crlf {
            true => self.write(b"\r\n", limit).await,
            false => Ok(()),
        }
    }

    /// Reads one reply, within `limit`.
    pub(super) async fn read_reply(
        &mut self,
        limit: Duration,
        what: &'static str,
    ) -> Result<RemoteReply, ClientError> {
        let end = self.fill_reply(limit, what).await?;
        let raw = &self.rbuf[..end];
        self.trace.lines(self.peer, &self.host, "<", raw);
        let reply = parse(raw);
        self.rbuf.drain(..end);
        reply
    }

    /// Reads the bytes of one whole reply (all its lines).
    async fn read_raw(
        &mut self,
        limit: Duration,
        what: &'static str,
    ) -> Result<Vec<u8>, ClientError> {
        let end = self.fill_reply(limit, what).await?;
        Ok(self.rbuf.drain(..end).collect())
    }

    /// Reads until the read buffer starts with one whole reply (all its
    /// lines); returns its length.
    async fn fill_reply(
        &mut self,
        limit: Duration,
        what: &'static str,
    ) -> Result<usize, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = reply_end(&self.rbuf)? {
                return Ok(end);
            }
            if self.rbuf.len() > MAX_REPLY {
                return Err(ClientError::Protocol("reply too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let read = async {
                match &mut self.stream {
                    Stream::Plain(s) => s.read(&mut chunk).await,
                    Stream::Tls(s) => s.read(&mut chunk).await,
                    Stream::Closed => Err(closed()),
                }
            };
            let n = match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(0)) => return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(ClientError::Io(e)),
                Err(_) => return Err(ClientError::Timeout(what)),
            };
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn capabilities(raw: &[u8]) -> Capabilities {
    use smtp_proto::{
        EXT_8BIT_MIME, EXT_CHUNKING, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
        EXT_START_TLS,
    };
    match EhloResponse::parse(&mut raw.iter()) {
        Ok(e) => Capabilities {
            esmtp: true,
            pipelining: e.capabilities & EXT_PIPELINING != 0,
            chunking: e.capabilities & EXT_CHUNKING != 0,
            eight_bit_mime: e.capabilities & EXT_8BIT_MIME != 0,
            smtputf8: e.capabilities & EXT_SMTP_UTF8 != 0,
            dsn: e.capabilities & EXT_DSN != 0,
            starttls: e.capabilities & EXT_START_TLS != 0,
            size: (e.capabilities & EXT_SIZE != 0).then_some(e.size as u64),
        },
        Err(_) => Capabilities {
            esmtp: true,
            ..Default::default()
        },
    }
}
