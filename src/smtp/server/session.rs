//! The session driver: all of a session's I/O and time. It reads into a
//! buffer, lets the [`Protocol`] consume it, writes the replies once the
//! buffered input is used up (so pipelined replies go out together), and
//! does the asynchronous work the protocol asks for: queueing a message,
//! the TLS handshake, checking a password.
//!
//! Time limits: each command must arrive within `command_timeout` of the
//! previous one (reads of a partial line do not extend it, so trickling
//! does not help); message data must keep arriving, at no less than
//! `min_data_rate` after a first `command_timeout` of grace; the whole
//! session ends at `session_timeout`. All use tokio's clock, so tests run
//! them on paused time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::Instrument;

use super::conn::Conn;
use super::protocol::{AuthOutcome, Login, Protocol, SessionContext, Step};
use crate::smtp::reply::{self, Reply};

/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Where the server is in its life; sessions watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutting down: idle sessions close with 421, transactions in flight
    /// may finish.
    Draining,
    /// The grace period is over: every session closes with 421 now.
    Abort,
}

/// Runs one SMTP session over `stream` until it ends.
pub async fn run_session<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<SessionContext>,
    phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let span = tracing::info_span!("smtp", peer = %peer);
    let now = Instant::now();
    let mut d = Driver {
        conn: Conn::Plain(stream),
        proto: Protocol::new(ctx.clone(), peer.ip()),
        input: Vec::with_capacity(READ_CHUNK),
        ctx,
        started: now,
        last_progress: now,
        data: None,
        session: 0,
        peer,
        answering: false,
    };
    d.session = d.ctx.tracer.next_session();
    d.run(phase).instrument(span).await;
}

/// How a read ended.
enum Read {
    Data,
    Eof,
    Timeout(Reply),
    PhaseChanged,
    Failed,
}

struct Driver<S> {
    conn: Conn<S>,
    proto: Protocol,
    input: Vec<u8>,
    ctx: Arc<SessionContext>,
    started: Instant,
    /// When the last command or data was consumed.
    last_progress: Instant,
    /// While receiving message data: when it began, and bytes so far.
    data: Option<(Instant, u64)>,
    /// Its number in traces.
    session: u64,
    peer: SocketAddr,
    /// The last reply was a 334 challenge: the next line is a credential.
    answering: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Driver<S> {
    async fn run(&mut self, mut phase: watch::Receiver<Phase>) {
        tracing::debug!("session opened");
        let greeting = self.proto.greeting();
        if self.flush().await.is_err() || matches!(greeting, Step::Close) {
            return;
        }
        loop {
            let close = self.process().await;
            if self.flush().await.is_err() || close {
                break;
            }
            let p = *phase.borrow_and_update();
            if p == Phase::Abort || (p == Phase::Draining && !self.proto.busy()) {
                self.close_with(&reply::SHUTTING_DOWN).await;
                break;
            }
            match self.read(&mut phase).await {
                Read::Data | Read::PhaseChanged => {}
                Read::Eof | Read::Failed => break,
                Read::Timeout(r) => {
                    tracing::info!(reply = %r.to_line(), "closing session on a time limit");
                    self.close_with(&r).await;
                    break;
                }
            }
        }
        let _ = timeout(Duration::from_secs(5), self.conn.shutdown()).await;
        tracing::debug!("session closed");
    }

    /// Lets the protocol consume the buffered input and does what it asks;
    /// true when the session must close.
    async fn process(&mut self) -> bool {
        loop {
            let commands = !self.proto.receiving_data();
            let (used, step) = self.proto.feed(&self.input);
            if commands && self.ctx.tracer.active() {
                self.trace_commands(used);
            }
            self.input.drain(..used);
            self.account(used);
            match step {
                Step::NeedInput => return false,
                Step::Close => return true,
                Step::Deliver(sub) => {
                    let (rcpts, size) = (sub.recipients.len(), sub.data.len() - sub.data_start);
                    let origin = self.proto.origin();
                    let result = self.ctx.intake.accept(sub, &origin).await;
                    if let Ok(id) = &result {
                        tracing::info!(queue_id = %id, rcpts, size, "message accepted");
                    }
                    self.proto.delivered(&result);
                }
                Step::StartTls => {
                    if !self.start_tls().await {
                        return true;
                    }
                }
                Step::Authenticate(login) => {
                    let user = login.user.clone();
                    let outcome = self.check(login).await;
                    if let Some(Step::Close) = self.proto.authenticated(&user, outcome) {
                        return true;
                    }
                }
            }
        }
    }

    /// Traces the command lines among the first `used` bytes of input, up
    /// to a DATA or BDAT (what follows is message content).
    fn trace_commands(&mut self, used: usize) {
        for line in crate::trace::split_lines(&self.input[..used]) {
            let shown = crate::trace::masked(line, std::mem::take(&mut self.answering));
            let upper = shown.to_ascii_uppercase();
            let last = upper.starts_with("DATA") || upper.starts_with("BDAT");
            let (session, peer) = (self.session, self.peer);
            (self.ctx.tracer).emit(|| crate::trace::inbound(session, peer, "<", shown));
            if last {
                break;
            }
        }
    }

    /// Keeps the progress and data-rate bookkeeping.
    fn account(&mut self, used: usize) {
        let now = Instant::now();
        if used > 0 {
            self.last_progress = now;
        }
        match (self.proto.receiving_data(), &mut self.data) {
            (true, Some((_, bytes))) => *bytes += used as u64,
            (true, None) => self.data = Some((now, 0)),
            (false, _) => self.data = None,
        }
    }

    async fn start_tls(&mut self) -> bool {
        if self.flush().await.is_err() {
            return false;
        }
        // Anything sent after STARTTLS in plaintext is discarded, never run
        // (CVE-2011-0411).
        if !self.input.is_empty() {
            tracing::warn!(
                bytes = self.input.len(),
                "discarding plaintext sent after STARTTLS"
            );
            self.input.clear();
        }
        let Some(acceptor) = self.ctx.tls.clone() else {
            return false;
        };
        let limit = self.ctx.listener.command_timeout.get();
        match timeout(limit, self.conn.upgrade(&acceptor)).await {
            Ok(Ok(())) => {
                self.proto.tls_started();
                self.last_progress = Instant::now();
                true
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                false
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                false
            }
        }
    }

    /// Checks credentials: the per-address failure limit first, then the
    /// password (argon2, off the reactor).
    async fn check(&self, login: Login) -> AuthOutcome {
        let (creds, ip) = (self.ctx.credentials.clone(), self.proto.origin().peer);
        if !creds.may_try(ip, Instant::now()) {
            return AuthOutcome::Limited;
        }
        let checker = creds.clone();
        let ok = tokio::task::spawn_blocking(move || checker.verify(&login.user, &login.password))
            .await
            .unwrap_or(false);
        if ok {
            AuthOutcome::Ok
        } else {
            creds.failed(ip, Instant::now());
            AuthOutcome::Invalid
        }
    }

    /// Reads more input, within the time limits, or notices a phase change.
    async fn read(&mut self, phase: &mut watch::Receiver<Phase>) -> Read {
        let (deadline, why) = self.deadline();
        self.input.reserve(READ_CHUNK);
        tokio::select! {
            r = timeout_at(deadline, self.conn.read_buf(&mut self.input)) => match r {
                Err(_) => Read::Timeout(why),
                Ok(Ok(0)) => Read::Eof,
                Ok(Ok(_)) => Read::Data,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    Read::Failed
                }
            },
            changed = phase.changed() => match changed {
                Ok(()) => Read::PhaseChanged,
                Err(_) => Read::Failed,
            },
        }
    }

    /// The earliest time limit, and the reply for it.
    fn deadline(&self) -> (Instant, Reply) {
        let l = &self.ctx.listener;
        let mut best = (self.last_progress + l.command_timeout.get(), reply::TIMEOUT);
        if let Some((since, bytes)) = self.data
            && l.min_data_rate.0 > 0
        {
            let allowed = Duration::from_secs_f64(bytes as f64 / l.min_data_rate.0 as f64);
            let at = since + l.command_timeout.get() + allowed;
            if at < best.0 {
                best = (at, reply::TOO_SLOW);
            }
        }
        let end = self.started + l.session_timeout.get();
        if end < best.0 {
            best = (end, reply::SESSION_TOO_LONG);
        }
        best
    }

    /// Writes pending replies (bounded by `command_timeout`).
    async fn flush(&mut self) -> Result<(), ()> {
        if self.proto.out.is_empty() {
            return Ok(());
        }
        let limit = self.ctx.listener.command_timeout.get();
        let out = std::mem::take(&mut self.proto.out);
        self.answering = out.starts_with(b"334");
        if self.ctx.tracer.active() {
            for line in crate::trace::split_lines(&out) {
                let (session, peer) = (self.session, self.peer);
                (self.ctx.tracer).emit(|| crate::trace::inbound(session, peer, ">", line));
            }
        }
        let res = timeout(limit, async {
            self.conn.write_all(&out).await?;
            self.conn.flush().await
        })
        .await;
        self.proto.out = out;
        self.proto.out.clear();
        match res {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn close_with(&mut self, r: &Reply) {
        self.proto.out.clear();
        r.write(&mut self.proto.out);
        let _ = self.flush().await;
    }
}
