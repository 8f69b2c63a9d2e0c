//! MAIL FROM: starts a transaction once the client has greeted, the queue
//! can take mail (else `452 4.3.1`, never 5xx), and the sender and its
//! parameters are acceptable.

use std::borrow::Cow;

use smtp_proto::{
    MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN, MAIL_BY_TRACE,
    MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
};

use super::address::{self, AddressProblem};
use super::protocol::{Protocol, Step, Txn};
use crate::message::Ret;
use crate::smtp::reply;

/// MAIL flags of extensions Tern does not offer.
const UNOFFERED_FLAGS: u64 = MAIL_BODY_BINARYMIME
    | MAIL_REQUIRETLS
    | MAIL_CONPERM
    | MAIL_BY_NOTIFY
    | MAIL_BY_RETURN
    | MAIL_BY_TRACE;

impl Protocol {
    pub(super) fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Option<Step> {
        if self.helo.is_none() {
            return self.fail(&reply::NEED_HELO);
        }
        if self.txn.is_some() {
            return self.fail(&reply::NESTED_MAIL);
        }
        self.mail_refused = false;
        if self.ctx.intake.draining() {
            tracing::info!(peer = %self.peer, "refusing MAIL: the node is draining");
            self.ctx.intake.refused(crate::metrics::Refusal::Draining);
            self.reply(&reply::DRAINING);
            return Some(Step::Close);
        }
        if let Some(r) =
            reply::queue_refusal_at_mail(&self.ctx.intake.health(), self.ctx.intake.over_limit())
        {
            tracing::warn!(peer = %self.peer, "refusing MAIL: the queue is not taking mail");
            self.ctx.intake.refused(match self.ctx.intake.health() {
                queue::Health::Healthy => crate::metrics::Refusal::Backlog,
                _ => crate::metrics::Refusal::Spool,
            });
            self.reply(&r);
            self.mail_refused = true;
            return None;
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !from.address.is_empty() {
            match address::check(&from.address, smtputf8) {
                Ok(()) => {}
                Err(AddressProblem::Syntax) => return self.fail(&reply::BAD_SENDER),
                Err(AddressProblem::NeedsSmtpUtf8) => return self.fail(&reply::SMTPUTF8_REQUIRED),
            }
        }
        if from.size as u64 > self.ctx.listener.max_message_size.0 {
            return self.fail(&reply::MESSAGE_TOO_BIG);
        }
        let unoffered = from.flags & UNOFFERED_FLAGS != 0
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some();
        if unoffered {
            return self.fail(&reply::UNSUPPORTED_PARAMETER);
        }
        let envid = from.env_id.map(Cow::into_owned);
        if envid
            .as_deref()
            .is_some_and(|e| e.len() > 100 || e.chars().any(|c| !c.is_ascii_graphic()))
        {
            return self.fail(&reply::BAD_PARAMETER);
        }
        let ret = match (
            from.flags & MAIL_RET_FULL != 0,
            from.flags & MAIL_RET_HDRS != 0,
        ) {
            (true, true) => return self.fail(&reply::BAD_PARAMETER),
            (true, false) => Some(Ret::Full),
            (false, true) => Some(Ret::Headers),
            (false, false) => None,
        };
        self.txn = Some(Txn {
            sender: from.address.into_owned(),
            body_8bitmime: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8,
            envid,
            ret,
            size_hint: from.size,
            recipients: Vec::new(),
            rcpt_tried: false,
            body: None,
        });
        self.reply(&reply::SENDER_OK);
        None
    }
}
