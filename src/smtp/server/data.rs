//! DATA and BDAT: receiving the message, and what is checked before it is
//! handed to the intake.
//!
//! - Only CRLF.CRLF ends DATA. smtp-proto's receiver also ends on
//!   CRLF "." CR CR LF (and longer CR runs); such an ending leaves the data
//!   not ending in CRLF, which is caught here: the session is closed
//!   without reading on, so nothing after it can run as a command.
//! - The receiver is primed with the CRLF of the DATA command itself, so
//!   "." as the very first line ends an empty message as RFC 5321 says.
//! - Past `max_message_size`, the rest is read and discarded (not kept),
//!   then `552 5.3.4`. A refused BDAT chunk is still consumed whole.
//! - Bare CR or LF is refused (`550 5.6.0`) or normalized, per listener.

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};

use super::protocol::{Body, Mode, Protocol, Step};
use super::scan::{self, DataScan};
use crate::config::{BareLineEndings, LongLines, NulBytes};
use crate::intake::{IntakeError, Submission};
use crate::smtp::reply::{self, Reply};

impl Protocol {
    pub(super) fn data(&mut self, more: bool) -> Option<Step> {
        if let Some(r) = self.data_refusal() {
            let step = self.fail_after_mail(&r);
            if more && step.is_none() {
                // The client sent on without waiting for our reply to DATA
                // (RFC 2920): what follows is message data, never commands.
                self.reply(&reply::SYNC_ERROR);
                return Some(Step::Close);
            }
            return step;
        }
        if self.txn.as_ref().is_some_and(|t| t.body.is_some()) {
            return self.fail(&reply::BDAT_IN_PROGRESS);
        }
        if more && self.ctx.listener.strict_pipelining {
            // Message text sent before our 354 (RFC 2920 3.1).
            tracing::info!(peer = %self.peer, "message text sent before the 354; closing");
            self.reply(&reply::SYNC_ERROR);
            return Some(Step::Close);
        }
        self.begin_body();
        let mut rx = DataReceiver::new();
        rx.ingest(&mut b"\r\n".iter(), &mut Vec::new()); // the DATA line's CRLF
        self.mode = Mode::Data(rx);
        self.reply(&reply::START_DATA);
        None
    }

    pub(super) fn bdat(&mut self, size: usize, last: bool) -> Option<Step> {
        let refusal = self.data_refusal().or_else(|| {
            let received = self
                .txn
                .as_ref()
                .and_then(|t| t.body.as_ref())
                .map_or(0, |b| b.data.len() - b.start);
            (received.saturating_add(size) as u64 > self.ctx.listener.max_message_size.0)
                .then_some(reply::MESSAGE_TOO_BIG)
        });
        if let Some(r) = refusal {
            // The chunk must be consumed, or its bytes would be read as commands.
            if r.code == reply::MESSAGE_TOO_BIG.code {
                self.txn = None;
            }
            if size == 0 {
                return self.fail(&r); // nothing to consume: answer now
            }
            return self.discard(DummyDataReceiver::new_bdat(size), r);
        }
        if self.txn.as_ref().is_some_and(|t| t.body.is_none()) {
            self.begin_body();
        }
        self.mode = Mode::Bdat(BdatReceiver::new(size, last));
        if size == 0 {
            return self.on_data(&[]).1;
        }
        None
    }

    /// Why DATA or BDAT cannot start now, if it cannot.
    fn data_refusal(&self) -> Option<Reply> {
        let Some(txn) = &self.txn else {
            return Some(if self.helo.is_none() {
                reply::NEED_HELO
            } else {
                reply::NEED_MAIL
            });
        };
        if txn.recipients.is_empty() {
            return Some(if txn.rcpt_tried {
                reply::NO_VALID_RECIPIENTS
            } else {
                reply::NEED_RCPT
            });
        }
        if txn.body.is_none() && !self.ctx.memory.has_room() {
            tracing::warn!(peer = %self.peer, used = self.ctx.memory.used(), "message memory budget exhausted; refusing DATA for now");
            self.ctx.intake.refused(crate::metrics::Refusal::Memory);
            return Some(reply::MEMORY_EXHAUSTED);
        }
        None
    }

    fn begin_body(&mut self) {
        let origin = self.origin();
        let txn = self.txn.as_mut().expect("checked by data_refusal");
        let only = (txn.recipients.len() == 1).then(|| txn.recipients[0].address.as_str());
        let (id, data) = self.ctx.intake.begin(&origin, only, txn.size_hint);
        let start = data.len();
        let max_line = self.ctx.listener.max_data_line_length as usize;
        let mut charge = super::budget::Charge::new(&self.ctx.memory);
        charge.set(data.capacity() as u64);
        txn.body = Some(Body {
            id,
            charge,
            data,
            start,
            scan: DataScan::new(start, max_line),
        });
    }

    fn discard(&mut self, rx: DummyDataReceiver, r: Reply) -> Option<Step> {
        self.mode = Mode::Discard(rx, r);
        None
    }

    /// Feeds message data to the current receiver.
    pub(super) fn on_data(&mut self, input: &[u8]) -> (usize, Option<Step>) {
        let mut it = input.iter();
        let mode = std::mem::replace(&mut self.mode, Mode::Command);
        let step = match mode {
            Mode::Discard(mut rx, r) => {
                if rx.ingest(&mut it) {
                    self.fail(&r)
                } else {
                    self.mode = Mode::Discard(rx, r);
                    None
                }
            }
            Mode::Data(mut rx) => {
                let done = rx.ingest(&mut it, &mut self.body_mut().data);
                self.after_chunk(done, true, rx.into())
            }
            Mode::Bdat(mut rx) => {
                let done = rx.ingest(&mut it, &mut self.body_mut().data);
                let last = rx.is_last;
                self.after_chunk(done, last, Receiver::Bdat(rx))
            }
            other => {
                self.mode = other;
                None
            }
        };
        (input.len() - it.len(), step)
    }

    fn body_mut(&mut self) -> &mut Body {
        self.txn
            .as_mut()
            .and_then(|t| t.body.as_mut())
            .expect("data mode has a body")
    }

    /// After each chunk: enforce the size limit; when a DATA or a BDAT
    /// chunk is complete, answer or hand the message over.
    fn after_chunk(&mut self, done: bool, last: bool, rx: Receiver) -> Option<Step> {
        let max = self.ctx.listener.max_message_size.0;
        let (size, ends_crlf) = {
            let body = self.body_mut();
            body.scan.scan(&body.data);
            body.charge.set(body.data.capacity() as u64);
            (
                (body.data.len() - body.start) as u64,
                body.data.ends_with(b"\r\n"),
            )
        };
        if size > max {
            self.txn = None; // drop what was received
            return match rx {
                Receiver::Data(rx) if !done => {
                    self.discard(DummyDataReceiver::new_data(&rx), reply::MESSAGE_TOO_BIG)
                }
                _ => self.fail(&reply::MESSAGE_TOO_BIG),
            };
        }
        if !done {
            self.mode = match rx {
                Receiver::Data(rx) => Mode::Data(rx),
                Receiver::Bdat(rx) => Mode::Bdat(rx),
            };
            return None;
        }
        if matches!(rx, Receiver::Data(_)) && !(size == 0 || ends_crlf) {
            tracing::warn!(peer = %self.peer, "data ended with CRLF.CR..LF, not CRLF.CRLF; closing");
            self.txn = None;
            self.reply(&reply::BAD_TERMINATOR);
            return Some(Step::Close);
        }
        if !last {
            let r = Reply::owned(250, [2, 0, 0], format!("{size} octets received"));
            self.reply(&r);
            return None;
        }
        self.complete()
    }

    /// The whole message is in: check its content, then hand it over.
    fn complete(&mut self) -> Option<Step> {
        let mut txn = self.txn.take().expect("complete has a transaction");
        let mut body = txn.body.take().expect("complete has a body");
        if body.scan.bare && self.ctx.listener.bare_line_endings == BareLineEndings::Reject {
            return self.fail(&reply::BARE_LINE_ENDING);
        }
        let max = self.ctx.listener.max_data_line_length as usize;
        let encode = self.ctx.listener.long_lines == LongLines::Encode;
        if let Some((line, octets)) = body.scan.first_long
            && !encode
        {
            return self.fail(&reply::data_line_too_long(line, octets, max));
        }
        if body.scan.nul {
            if self.ctx.listener.nul_bytes == NulBytes::Reject {
                tracing::info!(peer = %self.peer, "message data holds NUL bytes; refused");
                return self.fail(&reply::NUL_BYTES);
            }
            scan::strip_nul(&mut body.data, body.start);
        }
        if body.scan.bare {
            scan::normalize(&mut body.data, body.start);
        }
        if body.data.len() > body.start && !body.data.ends_with(b"\r\n") {
            body.data.extend_from_slice(b"\r\n"); // BDAT content without a final CRLF
        }
        if let Some((line, octets)) = body.scan.first_long {
            match crate::content::encode_long_lines(&body.data[body.start..], max) {
                Ok(encoded) => {
                    tracing::info!(peer = %self.peer, line, octets, "an over-long line: its part re-encoded as quoted-printable");
                    body.data.truncate(body.start);
                    body.data.extend_from_slice(&encoded);
                    body.scan.eight_bit = !body.data[body.start..].is_ascii();
                }
                Err(why) => {
                    let r = reply::data_line_too_long(line, octets, max);
                    tracing::info!(peer = %self.peer, %why, "an over-long line that cannot be re-encoded");
                    return self.fail(&r);
                }
            }
        }
        Some(Step::Deliver(Submission {
            id: body.id,
            sender: txn.sender,
            recipients: txn.recipients,
            envid: txn.envid,
            ret: txn.ret,
            body_8bitmime: txn.body_8bitmime,
            smtputf8: txn.smtputf8,
            content_8bit: body.scan.eight_bit,
            data: body.data,
            data_start: body.start,
            api: None,
        }))
    }

    /// The intake's answer for a handed-over message.
    pub fn delivered(&mut self, result: &Result<queue::MessageId, IntakeError>) {
        match result {
            Ok(id) => reply::QUEUED.write_with(&mut self.out, format_args!("{id}")),
            Err(e) => {
                let r = reply::intake_refusal(e);
                tracing::warn!(peer = %self.peer, error = %e, reply = %r.to_line(), "message refused after data");
                self.reply(&r);
            }
        }
    }
}

/// The receiver a chunk came through.
enum Receiver {
    Data(DataReceiver),
    Bdat(BdatReceiver),
}

impl From<DataReceiver> for Receiver {
    fn from(rx: DataReceiver) -> Self {
        Self::Data(rx)
    }
}
