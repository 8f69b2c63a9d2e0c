//! Queuing a message's notices (RFC 3464 DSNs built by
//! [`super::super::dsn`]): the bounce of its failures, queued before the
//! failures are recorded (a crash in between sends the bounce twice at
//! worst, never loses it), and the delay and relay notices its senders
//! asked for (NOTIFY=DELAY, NOTIFY=SUCCESS), queued as the attempt that
//! calls for them is settled.

use bytes::Bytes;
use queue::{Envelope, EnvelopeRecipient, NewMessage, RecipientState};

use super::super::dsn::{self, Action};
use super::super::{Delivery, retry};
use super::{Message, Outcome, Verdict};
use crate::log::{Kind, Record};
use crate::message::MessageMeta;

impl Delivery {
    /// Queues the bounce for these failures (each with whether it
    /// expired), if one is due. False if it was due but could not be
    /// queued.
    pub(super) async fn queue_bounce(&self, msg: &Message, failures: &[(Outcome, bool)]) -> bool {
        let entries: Vec<(&Outcome, Action)> = failures
            .iter()
            .map(|(o, expired)| match expired {
                true => (o, Action::Expired),
                false => (o, Action::Failed),
            })
            .collect();
        self.queue_notice(msg, &entries).await
    }

    /// The delay and relay notices an attempt's outcomes call for: a
    /// deferral that passes a notice time of `[delivery]
    /// delay_notice_after` / `delay_notice_interval`, and a delivery to a
    /// next hop without DSN. Only for recipients whose NOTIFY asks.
    pub(super) fn progress_notices(
        &self,
        msg: &Message,
        outcomes: &[Outcome],
    ) -> Vec<(Outcome, Action)> {
        let mut out = Vec::new();
        for o in outcomes {
            let (Some(st), Some(rcpt)) = (
                msg.info.statuses.get(o.index as usize),
                msg.info.envelope.recipients.get(o.index as usize),
            ) else {
                continue;
            };
            let action = match o.verdict {
                Verdict::Delivered if !o.next_hop_dsn => Action::Relayed,
                Verdict::Deferred if st.state == RecipientState::Pending => Action::Delayed,
                _ => continue,
            };
            // NOTIFY first: most recipients ask for neither notice.
            if !dsn::wants_notice(&rcpt.params, action) {
                continue;
            }
            if action == Action::Delayed && !self.delay_notice_due(msg, o.index, st) {
                continue;
            }
            out.push((o.clone(), action));
        }
        out
    }

    /// Whether the deferral of recipient `index` (status `st` before this
    /// attempt) passes a delay-notice time, and it does not expire now
    /// (then it is bounced instead, as `sort` decides with the same delay).
    fn delay_notice_due(&self, msg: &Message, index: u32, st: &queue::RecipientStatus) -> bool {
        let s = &self.settings;
        let Some(schedule) = s.delay_notices else {
            return false;
        };
        let now = self.clock.now();
        let seed = retry::Seed {
            id: msg.info.id,
            index,
        };
        let retry = (s.retry_first, s.retry_max);
        let delay = retry::delay(st.attempts.saturating_add(1), retry.0, retry.1, seed);
        let expires = now.saturating_add(delay).saturating_since(msg.info.arrival) >= s.max_age;
        let before = (st.attempts, st.next_attempt);
        !expires && schedule.due(msg.info.arrival, now, before, retry, seed)
    }

    /// Queues a notice of `entries` (all failures, or all delays, or all
    /// relays) to the message's sender, if one is due. False if it was due
    /// but could not be queued.
    pub(super) async fn queue_notice(&self, msg: &Message, entries: &[(&Outcome, Action)]) -> bool {
        let env = &msg.info.envelope;
        if env.sender.is_empty() {
            return true; // never a notice for a notice
        }
        let rcpt = |o: &Outcome| env.recipients.get(o.index as usize);
        let wanted: Vec<dsn::Failure<'_>> = entries
            .iter()
            .filter_map(|(o, action)| {
                let r = rcpt(o).filter(|r| dsn::wants_notice(&r.params, *action))?;
                Some(dsn::Failure {
                    rcpt: r,
                    reply: &o.reply,
                    remote_host: o.host.as_ref().map(|(h, _)| h.as_str()),
                    action: *action,
                })
            })
            .collect();
        if wanted.is_empty() {
            return true;
        }
        let original = match &msg.body {
            Some(b) => b.clone(),
            None => self.bodies.read(msg.info.id).await.unwrap_or_default(),
        };
        let now = self.clock.system_time();
        let until = msg.info.arrival.saturating_add(self.settings.max_age);
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
            retry_until: Some(until.to_system_time()),
        });
        let failed = (entries.iter()).any(|(_, a)| matches!(a, Action::Failed | Action::Expired));
        let what = if failed { "bounce" } else { "notice" };
        self.enqueue_notice(msg, bytes, (now, what)).await
    }

    async fn enqueue_notice(
        &self,
        msg: &Message,
        bytes: Vec<u8>,
        (now, what): (std::time::SystemTime, &str),
    ) -> bool {
        let meta = MessageMeta {
            content_8bit: !bytes.is_ascii(),
            ..Default::default()
        };
        let arrival = self.clock.now();
        let notice = NewMessage {
            id: None,
            envelope: Envelope {
                sender: "".into(),
                meta: meta.encode().into(),
                recipients: vec![EnvelopeRecipient::new(&*msg.info.envelope.sender)].into(),
            },
            arrival,
            first_attempt: arrival,
            // A notice tells a sender about its mail: it goes before bulk.
            priority: crate::config::Priority::Normal.rank(),
            body: Bytes::from(bytes),
        };
        let size = notice.body.len() as u64;
        match self.queue.enqueue_notice(notice).await {
            Ok(notice_id) => {
                let mut r = Record::new(Kind::Reception, now, notice_id.to_string(), String::new());
                r.recipients = Some(1);
                r.size = Some(size);
                r.client = Some(format!("{what} of {}", msg.info.id).into());
                self.log.write(&r);
                self.wake.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(queue_id = %msg.info.id, error = %e, "cannot queue the delivery notice");
                false
            }
        }
    }
}
