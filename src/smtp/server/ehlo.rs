//! EHLO and HELO: the greeting, which resets any transaction, and the list
//! of extensions (STARTTLS before TLS; AUTH only after it).

use super::protocol::{Helo, Protocol, Step};
use crate::smtp::reply::Reply;

impl Protocol {
    pub(super) fn ehlo(&mut self, host: &str, esmtp: bool) -> Option<Step> {
        let host = host.trim();
        if host.is_empty() {
            let syntax = if esmtp {
                "Syntax: EHLO hostname"
            } else {
                "Syntax: HELO hostname"
            };
            return self.fail(&Reply::new(501, [5, 5, 4], syntax));
        }
        self.txn = None;
        self.helo = Some(Helo {
            name: host.to_owned(),
            esmtp,
        });
        if !esmtp {
            let r = Reply::owned(250, [2, 0, 0], self.ctx.hostname.clone());
            self.reply(&r);
            return None;
        }
        let mut lines = vec![
            format!("{} Hello {host} [{}]", self.ctx.hostname, self.peer),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.ctx.listener.max_message_size.0),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
            "DSN".to_owned(),
        ];
        if !self.tls && self.ctx.tls.is_some() {
            lines.push("STARTTLS".to_owned());
        }
        if self.tls && self.ctx.credentials.any() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        lines.push("HELP".to_owned());
        self.reply_ehlo(&lines);
        None
    }

    /// EHLO replies carry no enhanced status code (RFC 2034: the keywords
    /// must start each line).
    fn reply_ehlo(&mut self, lines: &[String]) {
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let clean: String = line
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            self.out
                .extend_from_slice(format!("250{sep}{clean}\r\n").as_bytes());
        }
    }
}
