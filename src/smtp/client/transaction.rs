//! One mail transaction on an open connection, with a result for every
//! recipient.
//!
//! With PIPELINING, MAIL, every RCPT and DATA go in one write. The
//! message is dot-stuffed and ends with exactly one CRLF.CRLF. With
//! PIPELINING and CHUNKING (RFC 3030), MAIL, every RCPT and `BDAT n LAST`
//! with the message itself go in one write: one round trip per message
//! instead of two, and no dot-stuffing. A message
//! the server did not agree to carry (8-bit without 8BITMIME, a UTF-8
//! envelope without SMTPUTF8) is refused with 5.6.x instead of being sent.
//! If the connection fails after the final dot, the recipients are
//! deferred and the reply says the message may be delivered twice.

use std::time::Duration;

use smtp_proto::{RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS};

use super::{ClientError, Connection, RemoteReply};
use crate::message::Ret;

/// A recipient to send to.
#[derive(Debug, Clone)]
pub struct RcptRequest<'a> {
    /// `local@domain`.
    pub address: &'a str,
    /// DSN NOTIFY bits, as received.
    pub notify: u8,
    /// DSN ORCPT address, as received.
    pub orcpt: Option<&'a str>,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct TxnRequest<'a> {
    /// Reverse path ("" for `<>`).
    pub sender: &'a str,
    /// The recipients.
    pub recipients: &'a [RcptRequest<'a>],
    /// The content, CRLF line ends.
    pub body: &'a [u8],
    /// The content has bytes above 127.
    pub eight_bit: bool,
    /// The envelope needs SMTPUTF8.
    pub smtputf8: bool,
    /// DSN RET, as received.
    pub ret: Option<Ret>,
    /// DSN ENVID, as received.
    pub envid: Option<&'a str>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The server took responsibility (its reply to the final dot).
    Delivered(RemoteReply),
    /// A temporary failure: retry later.
    Deferred(RemoteReply),
    /// A permanent failure: bounce.
    Failed(RemoteReply),
    /// `452 4.5.3` too many recipients: send it again in a new transaction now.
    Again(RemoteReply),
}

impl RcptResult {
    fn from_failure(r: &RemoteReply) -> Self {
        if r.code >= 500 {
            Self::Failed(r.clone())
        } else {
            Self::Deferred(r.clone())
        }
    }
}

/// A reply Tern makes up for a local problem (logged, and used in bounces).
pub fn local_reply(code: u16, esc: [u8; 3], text: String) -> RemoteReply {
    RemoteReply { code, esc, text }
}

impl Connection {
    /// Runs one transaction. Returns a result per recipient (in order) and
    /// whether the connection can carry another transaction.
    pub async fn transaction(&mut self, req: &TxnRequest<'_>) -> (Vec<RcptResult>, bool) {
        if let Some(r) = self.unsupported(req) {
            return (
                req.recipients
                    .iter()
                    .map(|_| RcptResult::Failed(r.clone()))
                    .collect(),
                true,
            );
        }
        let mut results: Vec<Option<RcptResult>> = vec![None; req.recipients.len()];
        let mut dot_sent = false;
        let mut mail_answered = false;
        self.closed_before_mail = false;
        match self
            .run(req, &mut results, &mut dot_sent, &mut mail_answered)
            .await
        {
            Ok(reusable) => (
                results
                    .into_iter()
                    .map(|r| r.expect("every recipient answered"))
                    .collect(),
                reusable && self.in_sync(),
            ),
            Err(e) => {
                // The receiver closed the connection before it could have
                // accepted anything (an idle pooled connection it dropped).
                self.closed_before_mail = !mail_answered && matches!(e, ClientError::Io(_));
                let reply = if dot_sent {
                    local_reply(
                        451,
                        [4, 4, 2],
                        format!(
                            "connection to {} lost after the message was sent ({e}); it may be delivered twice",
                            self.host
                        ),
                    )
                } else {
                    local_reply(
                        451,
                        [4, 4, 2],
                        format!("connection to {} failed: {e}", self.host),
                    )
                };
                let filled = results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| RcptResult::Deferred(reply.clone())))
                    .collect();
                (filled, false)
            }
        }
    }

    /// Why this server cannot be given this message, if it cannot.
    fn unsupported(&self, req: &TxnRequest<'_>) -> Option<RemoteReply> {
        if req.eight_bit && !self.caps.eight_bit_mime {
            return Some(local_reply(
                554,
                [5, 6, 3],
                format!(
                    "{} does not support 8BITMIME and the message has 8-bit content",
                    self.host
                ),
            ));
        }
        if req.smtputf8 && !self.caps.smtputf8 {
            return Some(local_reply(
                553,
                [5, 6, 7],
                format!(
                    "{} does not support SMTPUTF8 and the envelope needs it",
                    self.host
                ),
            ));
        }
        if let Some(max) = self
            .caps
            .size
            .filter(|m| *m > 0 && req.body.len() as u64 > *m)
        {
            return Some(local_reply(
                552,
                [5, 3, 4],
                format!(
                    "message of {} bytes exceeds the {max}-byte limit of {}",
                    req.body.len(),
                    self.host
                ),
            ));
        }
        None
    }

    async fn run(
        &mut self,
        req: &TxnRequest<'_>,
        results: &mut [Option<RcptResult>],
        dot_sent: &mut bool,
        mail_answered: &mut bool,
    ) -> Result<bool, ClientError> {
        let t = self.timeouts;
        let mail = self.mail_command(req);
        let rcpts: Vec<String> = req
            .recipients
            .iter()
            .map(|r| self.rcpt_command(r))
            .collect();
        let pipelined = self.caps.pipelining;
        if pipelined && self.caps.chunking {
            return (self.run_chunked(req, &mail, &rcpts, results, dot_sent, mail_answered)).await;
        }
        if pipelined {
            self.wbuf.extend_from_slice(mail.as_bytes());
            for r in &rcpts {
                self.wbuf.extend_from_slice(r.as_bytes());
            }
            self.wbuf.extend_from_slice(b"DATA\r\n");
            self.flush_wbuf(t.mail.get()).await?;
        } else {
            self.send(mail.as_bytes(), t.mail.get()).await?;
        }
        let mail_reply = self.read_reply(t.mail.get(), "MAIL reply").await?;
        *mail_answered = true;
        if !mail_reply.is_positive() {
            all_failed(results, &mail_reply);
            if pipelined {
                self.drain_pipelined(rcpts.len(), &t).await?;
            }
            return self.reset().await;
        }
        let accepted = self.rcpt_stage(&rcpts, pipelined, results).await?;
        if !pipelined {
            if accepted.is_empty() {
                return self.reset().await;
            }
            self.send(b"DATA\r\n", t.data.get()).await?;
        }
        self.data_stage(req.body, &accepted, results, dot_sent)
            .await
    }

    /// The whole transaction in one write: MAIL, every RCPT, `BDAT n LAST`
    /// and the message (ending with a CRLF), then every reply. The message
    /// counts as sent once written: a receiver that accepted a recipient
    /// and then lost the connection may deliver it, so the reply then says
    /// it may be delivered twice. A failed MAIL or BDAT ends with RSET.
    async fn run_chunked(
        &mut self,
        req: &TxnRequest<'_>,
        mail: &str,
        rcpts: &[String],
        results: &mut [Option<RcptResult>],
        dot_sent: &mut bool,
        mail_answered: &mut bool,
    ) -> Result<bool, ClientError> {
        let t = self.timeouts;
        let crlf = !req.body.is_empty() && !req.body.ends_with(b"\r\n");
        let len = req.body.len() + if crlf { 2 } else { 0 };
        self.wbuf.extend_from_slice(mail.as_bytes());
        for r in rcpts {
            self.wbuf.extend_from_slice(r.as_bytes());
        }
        self.wbuf
            .extend_from_slice(format!("BDAT {len} LAST\r\n").as_bytes());
        self.flush_wbuf_with(req.body, crlf, t.data_block.get())
            .await?;
        *dot_sent = true;
        self.note(&format!("(message data: {len} bytes)"));
        let mail_reply = self.read_reply(t.mail.get(), "MAIL reply").await?;
        *mail_answered = true;
        if !mail_reply.is_positive() {
            all_failed(results, &mail_reply);
            for _ in rcpts {
                self.read_reply(t.rcpt.get(), "RCPT reply").await?;
            }
            self.read_reply(t.data_done.get(), "BDAT reply").await?;
            return self.reset().await;
        }
        let accepted = self.rcpt_stage(rcpts, true, results).await?;
        let done = self
            .read_reply(t.data_done.get(), "reply to BDAT LAST")
            .await?;
        answer_accepted(results, &accepted, &done);
        match done.is_positive() {
            true => Ok(true),
            false => self.reset().await,
        }
    }

    /// Sends the RCPT commands (unless already pipelined) and reads their
    /// replies; returns the indices of the accepted recipients.
    async fn rcpt_stage(
        &mut self,
        rcpts: &[String],
        pipelined: bool,
        results: &mut [Option<RcptResult>],
    ) -> Result<Vec<usize>, ClientError> {
        let limit = self.timeouts.rcpt.get();
        let mut accepted = Vec::with_capacity(rcpts.len());
        for (i, cmd) in rcpts.iter().enumerate() {
            if !pipelined {
                self.send(cmd.as_bytes(), limit).await?;
            }
            let r = self.read_reply(limit, "RCPT reply").await?;
            results[i] = Some(match () {
                _ if r.is_positive() => {
                    accepted.push(i);
                    continue;
                }
                _ if r.code == 452
                    && (r.esc == [4, 5, 3]
                        || r.text.to_ascii_lowercase().contains("too many recipients")) =>
                {
                    RcptResult::Again(r)
                }
                // RFC 5321 4.5.3.1.10: 552 at RCPT is a legacy "too many
                // recipients", to be treated as temporary.
                _ if r.code == 552 => RcptResult::Deferred(r),
                _ => RcptResult::from_failure(&r),
            });
        }
        Ok(accepted)
    }

    /// From the reply to DATA (already sent) to the reply to the final dot.
    async fn data_stage(
        &mut self,
        body: &[u8],
        accepted: &[usize],
        results: &mut [Option<RcptResult>],
        dot_sent: &mut bool,
    ) -> Result<bool, ClientError> {
        let t = self.timeouts;
        let data_reply = self.read_reply(t.data.get(), "DATA reply").await?;
        if data_reply.code != 354 {
            for &i in accepted {
                results[i] = Some(RcptResult::from_failure(&data_reply));
            }
            return self.reset().await;
        }
        if accepted.is_empty() {
            // 354 although every RCPT failed (RFC 2920 3.1): send only the
            // dot, so that nothing can be delivered.
            self.send(b".\r\n", t.data_done.get()).await?;
            let _ = self
                .read_reply(t.data_done.get(), "reply to an empty DATA")
                .await?;
            return Ok(true);
        }
        self.send_data(body, t.data_block.get()).await?;
        *dot_sent = true;
        let done = self
            .read_reply(t.data_done.get(), "reply to the end of data")
            .await?;
        answer_accepted(results, accepted, &done);
        Ok(true)
    }

    /// Reads (and ignores) the RCPT and DATA replies of a group whose MAIL
    /// failed; a 354 among them gets a lone dot.
    async fn drain_pipelined(
        &mut self,
        rcpts: usize,
        t: &crate::config::ClientTimeouts,
    ) -> Result<(), ClientError> {
        for _ in 0..rcpts {
            self.read_reply(t.rcpt.get(), "RCPT reply").await?;
        }
        if self.read_reply(t.data.get(), "DATA reply").await?.code == 354 {
            self.send(b".\r\n", t.data_done.get()).await?;
            self.read_reply(t.data_done.get(), "reply to an empty DATA")
                .await?;
        }
        Ok(())
    }

    /// RSET after an incomplete transaction; the connection is reusable if it works.
    async fn reset(&mut self) -> Result<bool, ClientError> {
        Ok(self.rset().await.is_ok())
    }

    fn mail_command(&self, req: &TxnRequest<'_>) -> String {
        let mut cmd = format!("MAIL FROM:<{}>", req.sender);
        if self.caps.size.is_some() {
            cmd.push_str(&format!(" SIZE={}", req.body.len()));
        }
        if req.eight_bit {
            cmd.push_str(" BODY=8BITMIME");
        }
        if req.smtputf8 {
            cmd.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            match req.ret {
                Some(Ret::Full) => cmd.push_str(" RET=FULL"),
                Some(Ret::Headers) => cmd.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(e) = req.envid {
                cmd.push_str(&format!(" ENVID={}", xtext(e)));
            }
        }
        cmd.push_str("\r\n");
        cmd
    }

    fn rcpt_command(&self, r: &RcptRequest<'_>) -> String {
        let mut cmd = format!("RCPT TO:<{}>", r.address);
        if self.caps.dsn {
            if r.notify != 0 {
                cmd.push_str(&format!(" NOTIFY={}", notify(r.notify)));
            }
            if let Some(o) = r.orcpt {
                cmd.push_str(&format!(" ORCPT=rfc822;{}", xtext(o)));
            }
        }
        cmd.push_str("\r\n");
        cmd
    }

    /// Sends the message dot-stuffed, then the terminator.
    async fn send_data(&mut self, body: &[u8], block: Duration) -> Result<(), ClientError> {
        stuff(body, &mut self.wbuf);
        let buf = std::mem::take(&mut self.wbuf);
        self.note(&format!("(message data: {} bytes, then \".\")", body.len()));
        let res = self.write_blocks(&buf, block).await;
        self.wbuf = buf;
        self.wbuf.clear();
        res
    }
}

/// Every recipient gets the failure `reply` (MAIL was refused).
fn all_failed(results: &mut [Option<RcptResult>], reply: &RemoteReply) {
    results
        .iter_mut()
        .for_each(|r| *r = Some(RcptResult::from_failure(reply)));
}

/// The accepted recipients get the reply to the message data: delivered
/// if positive, else its failure.
fn answer_accepted(results: &mut [Option<RcptResult>], accepted: &[usize], done: &RemoteReply) {
    for &i in accepted {
        results[i] = Some(match done.is_positive() {
            true => RcptResult::Delivered(done.clone()),
            false => RcptResult::from_failure(done),
        });
    }
}

/// Appends `body` dot-stuffed (RFC 5321 4.5.2) and the terminator: every
/// line starting with "." gets one more; the data ends with exactly one
/// CRLF before the final ".".
pub fn stuff(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    if body.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut start = 0;
    for i in memchr::memmem::find_iter(body, b"\r\n.") {
        out.extend_from_slice(&body[start..i + 2]);
        out.push(b'.');
        start = i + 2;
    }
    out.extend_from_slice(&body[start..]);
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// RFC 3461 xtext: printable ASCII except `+` and `=` as is, the rest `+HH`.
fn xtext(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if (33..=126).contains(&b) && b != b'+' && b != b'=' {
                (b as char).to_string()
            } else {
                format!("+{b:02X}")
            }
        })
        .collect()
}

fn notify(bits: u8) -> String {
    let bits = u64::from(bits);
    if bits & RCPT_NOTIFY_NEVER != 0 {
        return "NEVER".into();
    }
    let names = [
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ];
    names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        stuff(body, &mut out);
        out
    }

    #[test]
    fn dot_stuffing_is_byte_exact() {
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(
            stuffed(b".a\r\n..\r\n.\r\nb.\r\n"),
            b"..a\r\n...\r\n..\r\nb.\r\n.\r\n"
        );
        assert_eq!(stuffed(b"no final newline"), b"no final newline\r\n.\r\n");
        assert_eq!(
            stuffed(b"x\r\n.\r\nMAIL FROM:<spoof>\r\n"),
            b"x\r\n..\r\nMAIL FROM:<spoof>\r\n.\r\n",
            "a lone dot line in the data never ends it"
        );
    }

    #[test]
    fn dsn_parameters() {
        assert_eq!(xtext("a+b=c d\u{e9}"), "a+2Bb+3Dc+20d+C3+A9");
        assert_eq!(
            notify((RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY) as u8),
            "FAILURE,DELAY"
        );
        assert_eq!(notify(RCPT_NOTIFY_NEVER as u8), "NEVER");
    }
}
