//! The session state machine, without I/O: bytes in, replies out, and a
//! [`Step`] whenever the driver must do something asynchronous (queue a
//! message, start TLS, check a password, close).
//!
//! Commands are framed into lines here (never longer than the listener's
//! `max_line_length`: an over-long line is discarded whole, so its tail can
//! never run as a command) and parsed by smtp-proto. Message data goes
//! through smtp-proto's DATA and BDAT receivers. The verbs live in their
//! own files (`ehlo.rs`, `mail.rs`, `rcpt.rs`, `data.rs`, `auth.rs`).

use crate::metrics::Refusal;
use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::Request;
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use tokio_rustls::TlsAcceptor;

use super::credentials::Credentials;
use super::scan::DataScan;
use crate::config::ListenerConfig;
use crate::intake::{Intake, Origin, Submission, SubmittedRecipient};
use crate::message::Ret;
use crate::smtp::reply::{self, Reply};

/// What every session of one listener shares.
pub struct SessionContext {
    /// This MTA's name (banner, EHLO).
    pub hostname: String,
    /// The listener's settings.
    pub listener: ListenerConfig,
    /// Where complete messages go.
    pub intake: Intake,
    /// AUTH users and failure limits.
    pub credentials: Arc<Credentials>,
    /// STARTTLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Message data held by receiving sessions (shared by all listeners).
    pub memory: Arc<super::MemoryBudget>,
    /// Where sessions are traced for whoever watches (`tern trace`).
    pub tracer: Arc<crate::trace::Tracer>,
}

/// What the driver must do next.
pub enum Step {
    /// Read more input.
    NeedInput,
    /// Queue this message, then call [`Protocol::delivered`].
    Deliver(Submission),
    /// Flush, drop any buffered input, run the TLS handshake, then call
    /// [`Protocol::tls_started`].
    StartTls,
    /// Check these credentials, then call [`Protocol::authenticated`].
    Authenticate(Login),
    /// Flush and close the connection.
    Close,
}

/// Credentials from AUTH. Never logged: `Debug` shows the user only.
pub struct Login {
    /// The user name.
    pub user: String,
    /// The password (never logged).
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login {{ user: {:?}, password: <redacted> }}", self.user)
    }
}

/// How the result of a credentials check came out.
pub enum AuthOutcome {
    /// The credentials are right.
    Ok,
    /// They are wrong.
    Invalid,
    /// Too many failures from this address recently.
    Limited,
}

/// What the input is, right now.
pub(super) enum Mode {
    Command,
    /// Discarding the rest of an over-long line.
    SkipLine,
    Data(DataReceiver),
    Bdat(BdatReceiver),
    /// Consuming data that will not be kept, then answering this reply.
    Discard(DummyDataReceiver, Reply),
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass(String),
}

/// The client's greeting.
pub(super) struct Helo {
    pub name: String,
    pub esmtp: bool,
}

/// A mail transaction in progress.
pub(super) struct Txn {
    pub sender: String,
    pub body_8bitmime: bool,
    pub smtputf8: bool,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    pub size_hint: usize,
    pub recipients: Vec<SubmittedRecipient>,
    /// Some RCPT was tried (so an empty list means all were refused).
    pub rcpt_tried: bool,
    /// The message being received, from DATA or the first BDAT on.
    pub body: Option<Body>,
}

/// A message's bytes as they arrive.
pub(super) struct Body {
    pub id: queue::MessageId,
    /// This buffer's share of the memory budget.
    pub charge: super::budget::Charge,
    /// Tern's Received header, then the client's data.
    pub data: Vec<u8>,
    pub start: usize,
    pub scan: DataScan,
}

/// One session's protocol state.
pub struct Protocol {
    pub(super) ctx: Arc<SessionContext>,
    pub(super) peer: IpAddr,
    pub(super) relay_by_ip: bool,
    pub(super) helo: Option<Helo>,
    pub(super) tls: bool,
    pub(super) user: Option<Arc<str>>,
    pub(super) txn: Option<Txn>,
    pub(super) mode: Mode,
    /// Replies not yet written to the client.
    pub out: Vec<u8>,
    errors: u32,
    pub(super) auth_failures: u32,
    /// The last MAIL was refused because the queue is not taking mail:
    /// the RCPT and DATA a pipelining client sent behind it are answered
    /// 503 without counting as the client's errors.
    pub(super) mail_refused: bool,
}

impl Protocol {
    /// A session with a client at `peer`.
    pub fn new(ctx: Arc<SessionContext>, peer: IpAddr) -> Self {
        let relay_by_ip = ctx.listener.relay_from.iter().any(|n| n.contains(peer));
        Self {
            ctx,
            peer,
            relay_by_ip,
            helo: None,
            tls: false,
            user: None,
            txn: None,
            mode: Mode::Command,
            out: Vec::with_capacity(512),
            errors: 0,
            mail_refused: false,
            auth_failures: 0,
        }
    }

    /// Writes the greeting; `Close` if the queue cannot take mail now.
    pub fn greeting(&mut self) -> Step {
        let intake = &self.ctx.intake;
        let r = reply::greeting(&self.ctx.hostname, &intake.health(), intake.draining());
        if !r.is_positive() {
            intake.refused(match intake.draining() {
                true => Refusal::Draining,
                false => Refusal::Spool,
            });
        }
        self.reply(&r);
        if r.is_positive() {
            Step::NeedInput
        } else {
            Step::Close
        }
    }

    /// Consumes input; returns how much was used (an unfinished command
    /// line is left for the next call, with more bytes after it) and what
    /// the driver must do.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Step) {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let (used, step) = match self.mode {
                Mode::Data(_) | Mode::Bdat(_) | Mode::Discard(..) => self.on_data(rest),
                Mode::SkipLine => self.skip_line(rest),
                _ => self.next_line(rest),
            };
            pos += used;
            if let Some(step) = step {
                return (pos, step);
            }
            if used == 0 {
                break;
            }
        }
        (pos, Step::NeedInput)
    }

    /// True while a transaction or multi-step command is under way (a
    /// shutdown lets it finish).
    pub fn busy(&self) -> bool {
        self.txn.is_some() || !matches!(self.mode, Mode::Command)
    }

    /// True while message data is being received (the data-rate limit
    /// applies).
    pub fn receiving_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_) | Mode::Bdat(_) | Mode::Discard(..))
    }

    /// Facts about this session for the intake and logs.
    pub fn origin(&self) -> Origin {
        let helo = self.helo.as_ref();
        Origin {
            peer: self.peer,
            helo: helo.map_or_else(String::new, |h| h.name.clone()),
            esmtp: helo.is_some_and(|h| h.esmtp),
            tls: self.tls,
            user: self.user.clone(),
            http: false,
        }
    }

    pub(super) fn reply(&mut self, r: &Reply) {
        r.write(&mut self.out);
    }

    /// Like [`Protocol::fail`], except for "need MAIL" right after a MAIL
    /// Tern refused for load, which the client could not have known.
    pub(super) fn fail_after_mail(&mut self, r: &Reply) -> Option<Step> {
        if self.mail_refused && self.txn.is_none() && self.helo.is_some() {
            self.reply(r);
            return None;
        }
        self.fail(r)
    }

    /// Replies with an error and counts it; `Close` once there were too many.
    pub(super) fn fail(&mut self, r: &Reply) -> Option<Step> {
        self.reply(r);
        self.errors += 1;
        if self.errors >= self.ctx.listener.max_errors {
            tracing::info!(peer = %self.peer, errors = self.errors, "too many errors; closing the session");
            self.reply(&reply::TOO_MANY_ERRORS);
            return Some(Step::Close);
        }
        None
    }

    /// Frames the next command (or AUTH) line.
    fn next_line(&mut self, rest: &[u8]) -> (usize, Option<Step>) {
        let max = self.ctx.listener.max_line_length as usize;
        match memchr::memchr(b'\n', rest) {
            Some(i) if i < max => {
                let more = rest.len() > i + 1;
                (i + 1, self.on_line(&rest[..=i], more))
            }
            Some(i) => (i + 1, self.line_too_long()),
            None if rest.len() >= max => {
                self.mode = Mode::SkipLine;
                (rest.len(), self.line_too_long())
            }
            None => (0, None),
        }
    }

    fn line_too_long(&mut self) -> Option<Step> {
        if !matches!(self.mode, Mode::SkipLine) {
            self.mode = Mode::Command; // an over-long AUTH response cancels AUTH
        }
        self.fail(&reply::LINE_TOO_LONG)
    }

    fn skip_line(&mut self, rest: &[u8]) -> (usize, Option<Step>) {
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.mode = Mode::Command;
                (i + 1, None)
            }
            None => (rest.len(), None),
        }
    }

    fn on_line(&mut self, line: &[u8], more: bool) -> Option<Step> {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if matches!(
            self.mode,
            Mode::AuthPlain | Mode::AuthLoginUser | Mode::AuthLoginPass(_)
        ) {
            return self.auth_line(content);
        }
        if std::str::from_utf8(content).is_err() || content.iter().any(|b| *b == 0 || *b == b'\r') {
            return self.fail(&reply::BAD_CHARACTERS);
        }
        match Request::parse(&mut line.iter()) {
            Ok(req) => self.dispatch(req, more),
            Err(e) => {
                // A malformed RCPT is still a recipient tried and refused:
                // DATA then says "no valid recipients", not "need RCPT".
                if let Some(txn) = &mut self.txn
                    && line.len() >= 4
                    && line[..4].eq_ignore_ascii_case(b"RCPT")
                {
                    txn.rcpt_tried = true;
                }
                self.fail(&reply::parse_error(&e))
            }
        }
    }

    fn dispatch(&mut self, req: Request<std::borrow::Cow<'_, str>>, more: bool) -> Option<Step> {
        if more && self.ctx.listener.strict_pipelining && self.must_wait(&req) {
            tracing::info!(peer = %self.peer, "commands sent ahead of a reply the client had to wait for; closing");
            self.reply(&reply::SYNC_ERROR);
            return Some(Step::Close);
        }
        if !matches!(
            req,
            Request::Rcpt { .. } | Request::Data | Request::Bdat { .. }
        ) {
            self.mail_refused = false; // only the commands sent behind it
        }
        match req {
            Request::Ehlo { host } => self.ehlo(&host, true),
            Request::Helo { host } => self.ehlo(&host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(more),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, &initial_response),
            Request::StartTls => self.starttls(),
            Request::Rset => {
                self.txn = None;
                self.reply(&reply::RESET);
                None
            }
            Request::Noop { .. } => {
                self.reply(&reply::OK);
                None
            }
            Request::Vrfy { .. } => {
                self.reply(&reply::VRFY);
                None
            }
            Request::Help { .. } => {
                let starttls = !self.tls && self.ctx.tls.is_some();
                let auth = self.tls && self.ctx.credentials.any();
                self.reply(&reply::help(starttls, auth));
                None
            }
            Request::Quit => {
                self.reply(&reply::GOODBYE);
                Some(Step::Close)
            }
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.fail(&reply::NOT_IMPLEMENTED),
        }
    }

    /// Whether the client had to wait for the reply to `req` before
    /// sending more (RFC 2920 3.1): EHLO and HELO always, every command
    /// without PIPELINING (before EHLO, or after HELO). DATA is checked
    /// where it is accepted; QUIT ends the session anyway.
    fn must_wait(&self, req: &Request<std::borrow::Cow<'_, str>>) -> bool {
        match req {
            Request::Ehlo { .. } | Request::Helo { .. } => true,
            Request::Quit => false,
            _ => !self.helo.as_ref().is_some_and(|h| h.esmtp),
        }
    }

    fn starttls(&mut self) -> Option<Step> {
        if self.tls {
            return self.fail(&reply::TLS_ACTIVE);
        }
        if self.ctx.tls.is_none() {
            return self.fail(&reply::NO_TLS);
        }
        if self.txn.is_some() {
            return self.fail(&reply::BAD_SEQUENCE);
        }
        self.reply(&reply::START_TLS);
        Some(Step::StartTls)
    }

    /// The handshake succeeded: forget everything said in plaintext
    /// (RFC 3207 4.2); the client must EHLO again.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.txn = None;
        self.user = None;
        self.mode = Mode::Command;
    }
}
