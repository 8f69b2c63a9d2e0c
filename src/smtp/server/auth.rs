//! AUTH PLAIN and LOGIN (RFC 4954), offered and accepted only over TLS.
//! This file decodes the exchange; the driver checks the credentials off
//! the reactor and applies the failure limits.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::protocol::{AuthOutcome, Login, Mode, Protocol, Step};
use crate::smtp::reply;

impl Protocol {
    pub(super) fn auth(&mut self, mechanism: u64, initial: &str) -> Option<Step> {
        if !self.ctx.credentials.any() {
            return self.fail(&reply::NO_AUTH);
        }
        if !self.tls {
            return self.fail(&reply::ENCRYPTION_REQUIRED);
        }
        if self.user.is_some() {
            return self.fail(&reply::ALREADY_AUTHENTICATED);
        }
        if self.txn.is_some() {
            return self.fail(&reply::AUTH_IN_TRANSACTION);
        }
        let initial = initial.trim();
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.challenge("");
                self.mode = Mode::AuthPlain;
                None
            }
            AUTH_PLAIN => self.plain(initial),
            AUTH_LOGIN if initial.is_empty() => {
                self.challenge("VXNlcm5hbWU6"); // "Username:"
                self.mode = Mode::AuthLoginUser;
                None
            }
            AUTH_LOGIN => self.login_user(initial),
            _ => self.fail(&reply::UNKNOWN_MECHANISM),
        }
    }

    fn challenge(&mut self, text: &str) {
        self.out
            .extend_from_slice(format!("334 {text}\r\n").as_bytes());
    }

    /// A client line during AUTH.
    pub(super) fn auth_line(&mut self, line: &[u8]) -> Option<Step> {
        let mode = std::mem::replace(&mut self.mode, Mode::Command);
        if line == b"*" {
            return self.fail(&reply::AUTH_CANCELLED);
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return self.fail(&reply::BAD_BASE64);
        };
        match mode {
            Mode::AuthPlain => self.plain(text),
            Mode::AuthLoginUser => self.login_user(text),
            Mode::AuthLoginPass(user) => match decode(text) {
                Some(password) => Some(Step::Authenticate(Login { user, password })),
                None => self.fail(&reply::BAD_BASE64),
            },
            _ => None,
        }
    }

    /// PLAIN: base64 of `authzid NUL authcid NUL password`.
    fn plain(&mut self, b64: &str) -> Option<Step> {
        let Some(decoded) = decode(b64) else {
            return self.fail(&reply::BAD_BASE64);
        };
        let mut parts = decoded.split('\0');
        let (Some(authz), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.fail(&reply::AUTH_INVALID);
        };
        if !authz.is_empty() && authz != user {
            return self.fail(&reply::AUTH_INVALID); // acting as another user is not supported
        }
        Some(Step::Authenticate(Login {
            user: user.to_owned(),
            password: password.to_owned(),
        }))
    }

    fn login_user(&mut self, b64: &str) -> Option<Step> {
        match decode(b64) {
            Some(user) => {
                self.challenge("UGFzc3dvcmQ6"); // "Password:"
                self.mode = Mode::AuthLoginPass(user);
                None
            }
            None => self.fail(&reply::BAD_BASE64),
        }
    }

    /// The driver's verdict on credentials from [`Step::Authenticate`].
    pub fn authenticated(&mut self, user: &str, outcome: AuthOutcome) -> Option<Step> {
        match outcome {
            AuthOutcome::Ok => {
                tracing::info!(peer = %self.peer, user, "authenticated");
                self.user = Some(user.into());
                self.reply(&reply::AUTH_OK);
                None
            }
            AuthOutcome::Limited => {
                tracing::warn!(peer = %self.peer, "AUTH refused: too many failures from this address");
                self.reply(&reply::AUTH_RATE_LIMITED);
                Some(Step::Close)
            }
            AuthOutcome::Invalid => {
                tracing::warn!(peer = %self.peer, user, "authentication failed");
                self.auth_failures += 1;
                let step = self.fail(&reply::AUTH_INVALID);
                if step.is_none()
                    && self.auth_failures >= self.ctx.credentials.max_failures_per_session
                {
                    self.reply(&reply::TOO_MANY_AUTH_FAILURES);
                    return Some(Step::Close);
                }
                step
            }
        }
    }
}

/// Base64 to UTF-8 text; `=` is the empty response (RFC 4954).
fn decode(b64: &str) -> Option<String> {
    let b64 = b64.trim();
    if b64 == "=" {
        return Some(String::new());
    }
    String::from_utf8(STANDARD.decode(b64).ok()?).ok()
}
