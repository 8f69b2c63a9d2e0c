//! Queuing the bounce of a message's failures (an RFC 3464 DSN built by
//! [`super::super::dsn`]), before the failures are recorded: a crash in
//! between sends the bounce twice at worst, never loses it.

use bytes::Bytes;
use queue::{Envelope, EnvelopeRecipient, NewMessage};

use super::super::{Delivery, dsn};
use super::{Message, Outcome};
use crate::log::{Kind, Record};
use crate::message::MessageMeta;

impl Delivery {
    /// Queues the bounce for these failures, if one is due. False if it
    /// was due but could not be queued.
    pub(super) async fn queue_bounce(&self, msg: &Message, failures: &[(Outcome, bool)]) -> bool {
        let env = &msg.info.envelope;
        if env.sender.is_empty() {
            return true; // never a bounce for a bounce
        }
        let rcpt = |o: &Outcome| env.recipients.get(o.index as usize);
        let wanted: Vec<dsn::Failure<'_>> = failures
            .iter()
            .filter_map(|(o, expired)| {
                let r = rcpt(o).filter(|r| dsn::wants_notice(&r.params))?;
                Some(dsn::Failure {
                    rcpt: r,
                    reply: &o.reply,
                    remote_host: o.host.as_ref().map(|(h, _)| h.as_str()),
                    expired: *expired,
                })
            })
            .collect();
        if wanted.is_empty() {
            return true;
        }
        let original = match &msg.body {
            Some(b) => b.clone(),
            None => self.read_body(msg.info.id).await.unwrap_or_default(),
        };
        let now = self.clock.system_time();
        let bytes = dsn::build(&dsn::Bounce {
            hostname: &self.settings.hostname,
            id: msg.info.id,
            sender: &env.sender,
            meta: &msg.meta,
            arrival: msg.info.arrival.to_system_time(),
            now,
            failures: wanted,
            original: &original,
            default_ret: self.settings.bounce_return,
        });
        let meta = MessageMeta {
            content_8bit: !bytes.is_ascii(),
            ..Default::default()
        };
        let arrival = self.clock.now();
        let bounce = NewMessage {
            id: None,
            envelope: Envelope {
                sender: "".into(),
                meta: meta.encode().into(),
                recipients: vec![EnvelopeRecipient::new(&*env.sender)].into(),
            },
            arrival,
            first_attempt: arrival,
            // A bounce tells a sender its mail failed: it goes before bulk.
            priority: crate::config::Priority::Normal.rank(),
            body: Bytes::from(bytes),
        };
        let size = bounce.body.len() as u64;
        match self.queue.enqueue_notice(bounce).await {
            Ok(bounce_id) => {
                let mut r = Record::new(Kind::Reception, now, bounce_id.to_string(), String::new());
                r.recipients = Some(1);
                r.size = Some(size);
                r.client = Some(format!("bounce of {}", msg.info.id));
                self.log.write(&r);
                self.wake.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(queue_id = %msg.info.id, error = %e, "cannot queue the bounce; the failed recipients will be tried again");
                false
            }
        }
    }

    /// A message's body from the spool (read on a blocking thread), or
    /// `None` if it cannot be read (logged).
    pub(crate) async fn read_body(&self, id: queue::MessageId) -> Option<Bytes> {
        let q = self.queue.clone();
        match tokio::task::spawn_blocking(move || q.body(id)).await {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read the message body");
                None
            }
            Err(_) => None,
        }
    }
}
