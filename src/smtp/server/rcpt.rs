//! RCPT TO: relay permission first (the client's address is in
//! `relay_from`, or it authenticated; otherwise `554 5.7.1`, whatever the
//! address looks like), then the address, the recipient limit (`452 4.5.3`
//! per extra recipient) and the DSN parameters.

use std::borrow::Cow;

use smtp_proto::{
    RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo,
};

use super::address::{self, AddressProblem};
use super::protocol::{Protocol, Step};
use crate::intake::SubmittedRecipient;
use crate::message::RecipientParams;
use crate::smtp::reply;

const NOTIFY: u64 =
    RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;

impl Protocol {
    pub(super) fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>) -> Option<Step> {
        let Some(txn) = &mut self.txn else {
            let r = if self.helo.is_none() {
                &reply::NEED_HELO
            } else {
                &reply::NEED_MAIL
            };
            return self.fail_after_mail(r);
        };
        if txn.body.is_some() {
            return self.fail(&reply::BAD_SEQUENCE);
        }
        txn.rcpt_tried = true;
        let (smtputf8, count) = (txn.smtputf8, txn.recipients.len());
        if !(self.relay_by_ip || self.user.is_some()) {
            tracing::info!(peer = %self.peer, rcpt = ?to.address, "relay denied");
            return self.fail(&reply::RELAY_DENIED);
        }
        match address::check(&to.address, smtputf8) {
            Ok(()) => {}
            Err(AddressProblem::Syntax) => return self.fail(&reply::BAD_RECIPIENT),
            Err(AddressProblem::NeedsSmtpUtf8) => return self.fail(&reply::SMTPUTF8_REQUIRED),
        }
        if count >= self.ctx.listener.max_recipients as usize {
            self.reply(&reply::TOO_MANY_RECIPIENTS);
            return None;
        }
        if to.flags & (RCPT_CONNEG | RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 || to.rrvs != 0 {
            return self.fail(&reply::UNSUPPORTED_PARAMETER);
        }
        let notify = to.flags & NOTIFY;
        let orcpt = to.orcpt.map(Cow::into_owned);
        let bad_notify = notify & RCPT_NOTIFY_NEVER != 0 && notify != RCPT_NOTIFY_NEVER;
        let bad_orcpt = orcpt
            .as_deref()
            .is_some_and(|o| o.len() > 500 || o.chars().any(char::is_control));
        if bad_notify || bad_orcpt {
            return self.fail(&reply::BAD_PARAMETER);
        }
        let rcpt = SubmittedRecipient {
            address: to.address.into_owned(),
            params: RecipientParams {
                notify: notify as u8,
                orcpt,
            },
        };
        let txn = self.txn.as_mut().expect("checked above");
        if !txn
            .recipients
            .iter()
            .any(|r| same_mailbox(&r.address, &rcpt.address))
        {
            txn.recipients.push(rcpt);
        }
        self.reply(&reply::RECIPIENT_OK);
        None
    }
}

/// Same mailbox: the local part is compared exactly (it may be case
/// sensitive), the domain without regard to case.
fn same_mailbox(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => a == b,
    }
}
