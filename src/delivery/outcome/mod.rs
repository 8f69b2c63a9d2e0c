//! The one place a job's outcomes go: every path that ends a job (a send,
//! a routing failure, an expiry, an operator's bounce) hands its outcomes
//! here as values. Each recipient's new status is written durably, each
//! outcome is a delivery-log line and a metric, failures produce one
//! bounce per message (queued before they are recorded), and the message
//! goes back to the queue when its last job is settled.
//!
//! A message whose recipients span several domains has several jobs; a
//! [`trackers::Trackers`] entry counts them, keeps their failures for one
//! bounce, and, while other jobs of the message are still on their way,
//! holds a deferred job's recipients for their retry time itself (so one
//! destination's wait never delays another's retry). Never connects or
//! decides when to send.

mod bounce;
mod record;
pub(crate) mod trackers;
pub(crate) mod unwritten;

use std::sync::Arc;

use bytes::Bytes;
use queue::{MessageInfo, RecipientState, RecipientStatus, Timestamp};

use super::job::Rcpts;
use super::{Delivery, dsn, retry};
use crate::message::MessageMeta;
use crate::smtp::client::{RemoteReply, local_reply};

/// What happened to a recipient in this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    Deferred,
    Failed,
}

/// One recipient's outcome, with where it was tried.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub index: u32,
    pub verdict: Verdict,
    pub reply: RemoteReply,
    pub site: Option<Arc<str>>,
    /// The source it left from (its name, public address and proxy).
    pub source: Option<Arc<crate::egress::Source>>,
    /// The provider of the site, for the metrics.
    pub provider: Option<Arc<str>>,
    pub host: Option<(String, std::net::SocketAddr)>,
    /// The connection's TLS: `verified` (certificate checked), `tls`
    /// (encrypted, not checked) or `none`; unset when nothing connected.
    pub tls: Option<&'static str>,
    /// The TLS policy the route was held to (`Applied::label`); unset
    /// when the domain was not routed.
    pub tls_policy: Option<&'static str>,
    /// The next hop offered DSN, so NOTIFY went on with the recipient and
    /// notices of its delivery are that hop's to send.
    pub next_hop_dsn: bool,
}

impl Outcome {
    pub fn new(index: u32, verdict: Verdict, reply: RemoteReply) -> Self {
        Self {
            index,
            verdict,
            reply,
            site: None,
            source: None,
            provider: None,
            host: None,
            tls: None,
            tls_policy: None,
            next_hop_dsn: false,
        }
    }

    /// The same outcome for each of `rcpts`.
    pub fn all(rcpts: &[u32], verdict: Verdict, reply: &RemoteReply) -> Vec<Self> {
        rcpts
            .iter()
            .map(|i| Self::new(*i, verdict, reply.clone()))
            .collect()
    }
}

/// What settling a job knows of its message: its metadata as the send
/// (or the scheduler) read it when the job began.
pub(crate) struct Message {
    pub info: MessageInfo,
    pub meta: MessageMeta,
    /// The body, if the job read it (a bounce reads it otherwise).
    pub body: Option<Bytes>,
    /// The pool it was sent from.
    pub pool: Arc<str>,
}

impl Message {
    /// The metadata of a message that [`queue::Queue::begin`] returned.
    pub fn new(info: MessageInfo, pool: Arc<str>) -> Self {
        let meta = MessageMeta::decode(&info.envelope.meta);
        Self {
            info,
            meta,
            body: None,
            pool,
        }
    }
}

/// One `Arc<str>` per distinct reply of a job: the recipients of a
/// transaction or a failed connection usually share one reply, and each
/// queued recipient keeps its last reply for as long as it stays queued.
#[derive(Default)]
struct SharedReplies {
    last: Option<(RemoteReply, Arc<str>)>,
}

impl SharedReplies {
    fn get(&mut self, r: &RemoteReply) -> Arc<str> {
        match &self.last {
            Some((prev, text)) if prev == r => text.clone(),
            _ => {
                let text: Arc<str> = r.to_string().into();
                self.last = Some((r.clone(), text.clone()));
                text
            }
        }
    }
}

/// A recipient's new status after an outcome.
fn status(
    state: RecipientState,
    attempts: u16,
    next_attempt: Timestamp,
    reply: Arc<str>,
) -> RecipientStatus {
    RecipientStatus {
        state,
        attempts,
        next_attempt,
        last_reply: Some(reply),
    }
}

/// A job's outcomes, sorted: statuses to write, failures to bounce first
/// (each with whether it expired), and the recipients deferred.
#[derive(Default)]
pub(crate) struct Sorted {
    pub record: Vec<(u32, RecipientStatus)>,
    pub failures: Vec<(Outcome, bool)>,
    pub deferred: Rcpts,
    /// When the first deferred recipient is due again.
    pub next: Option<Timestamp>,
}

/// The expiry outcome of a recipient whose `max_age` is past: deferred,
/// which [`Delivery::sort`] turns into an expiry with the last error.
pub(crate) fn expired(info: &MessageInfo, i: u32) -> Outcome {
    let last = info
        .statuses
        .get(i as usize)
        .and_then(|s| s.last_reply.as_deref())
        .unwrap_or("not tried");
    let text = format!("delivery time expired; last error: {last}");
    Outcome::new(i, Verdict::Deferred, local_reply(451, [4, 4, 7], text))
}

impl Delivery {
    /// Ends a job of hand-out `handout` that began ([`Delivery::begin`]):
    /// records its outcomes (see the module docs) and ends the send.
    pub(crate) async fn settle(
        self: &Arc<Self>,
        handout: u32,
        msg: Message,
        outcomes: Vec<Outcome>,
    ) {
        let id = msg.info.id;
        let notices = self.progress_notices(&msg, &outcomes);
        let sorted = self.sort(&msg, outcomes);
        self.conclude(handout, &msg, sorted).await;
        for action in [dsn::Action::Delayed, dsn::Action::Relayed] {
            let of: Vec<(&Outcome, dsn::Action)> = (notices.iter())
                .filter(|(_, a)| *a == action)
                .map(|(o, a)| (o, *a))
                .collect();
            if !of.is_empty() {
                self.queue_notice(&msg, &of).await;
            }
        }
        self.end(id);
    }

    /// Sorts outcomes into statuses, failures and deferrals, logging the
    /// deliveries and deferrals.
    fn sort(&self, msg: &Message, outcomes: Vec<Outcome>) -> Sorted {
        let s = &self.settings;
        let now = self.clock.now();
        let mut out = Sorted::default();
        let mut replies = SharedReplies::default();
        for o in outcomes {
            let Some(st) = msg.info.statuses.get(o.index as usize) else {
                continue;
            };
            let attempts = st.attempts.saturating_add(1);
            let reply = replies.get(&o.reply);
            match o.verdict {
                Verdict::Delivered => {
                    self.log_outcome(msg, crate::log::Kind::Delivery, &o, attempts);
                    let st = status(RecipientState::Delivered, attempts, now, reply);
                    out.record.push((o.index, st));
                }
                Verdict::Deferred => {
                    let seed = retry::Seed {
                        id: msg.info.id,
                        index: o.index,
                    };
                    let delay = retry::delay(attempts, s.retry_first, s.retry_max, seed);
                    let next = now.saturating_add(delay);
                    if next.saturating_since(msg.info.arrival) >= s.max_age {
                        out.failures.push((o, true));
                        continue;
                    }
                    self.log_outcome(msg, crate::log::Kind::TransientFailure, &o, attempts);
                    out.deferred.push(o.index);
                    out.next = Some(out.next.map_or(next, |n| n.min(next)));
                    let st = status(RecipientState::Pending, attempts, next, reply);
                    out.record.push((o.index, st));
                }
                Verdict::Failed => out.failures.push((o, false)),
            }
        }
        out
    }

    /// Writes what a job's outcomes decided, through the message's
    /// tracker when it has several jobs.
    async fn conclude(self: &Arc<Self>, handout: u32, msg: &Message, sorted: Sorted) {
        let id = msg.info.id;
        match self.trackers.settle((id, handout), sorted) {
            trackers::Next::Finish(sorted) => self.finish(msg, sorted).await,
            trackers::Next::Record(record) => self.record(id, record).await,
            trackers::Next::RetryLater(record, rcpts, at) => {
                self.record(id, record).await;
                let at = self.clock.instant_at(at);
                self.scheduler.retry_later((id, handout), rcpts, at);
            }
        }
    }

    /// Writes some statuses of a message whose other jobs go on; what
    /// cannot be written is kept for the end of the message.
    async fn record(&self, id: queue::MessageId, record: Vec<(u32, RecipientStatus)>) {
        if record.is_empty() {
            return;
        }
        if let Err(e) = self.queue.record(id, record.clone()).await {
            tracing::error!(queue_id = %id, error = %e, "cannot record delivery outcomes; they are kept for the end of the message");
            self.trackers.keep(id, record);
        }
    }

    /// The message's last job ended: bounce, record the failures, and
    /// give the message back to the queue.
    async fn finish(&self, msg: &Message, sorted: Sorted) {
        let Sorted {
            mut record,
            failures,
            ..
        } = sorted;
        let id = msg.info.id;
        if !failures.is_empty() {
            let bounced = self.queue_bounce(msg, &failures).await;
            let now = self.clock.now();
            let mut replies = SharedReplies::default();
            for (o, expired) in failures {
                let attempts = msg.info.statuses[o.index as usize]
                    .attempts
                    .saturating_add(1);
                let reply = replies.get(&o.reply);
                if bounced {
                    let kind = match expired {
                        true => crate::log::Kind::Expiration,
                        false => crate::log::Kind::Bounce,
                    };
                    self.log_outcome(msg, kind, &o, attempts);
                    let st = status(RecipientState::Failed, attempts, now, reply);
                    record.push((o.index, st));
                } else {
                    // The bounce could not be queued: keep the recipient
                    // and try again later.
                    let next = now.saturating_add(self.settings.retry_first);
                    let st = status(RecipientState::Pending, attempts, next, reply);
                    record.push((o.index, st));
                }
            }
        }
        if record.is_empty() {
            self.queue.release(id);
            return;
        }
        match self.queue.update(id, record.clone()).await {
            Ok(_) | Err(queue::QueueError::NotFound(_)) => {}
            Err(e) => self.hold_unrecorded(msg, record, &e),
        }
    }

    /// The spool would not take a message's outcomes: the message stays
    /// held (never handed out again while Tern runs), the write is tried
    /// again later, and the delivery log says that a restart before then
    /// may deliver it twice.
    fn hold_unrecorded(
        &self,
        msg: &Message,
        record: Vec<(u32, RecipientStatus)>,
        e: &queue::QueueError,
    ) {
        let id = msg.info.id;
        tracing::error!(queue_id = %id, error = %e, "cannot record delivery outcomes; the message is held until they are written (if Tern stops first, it may be delivered twice)");
        let delivered = record
            .iter()
            .any(|(_, s)| s.state == RecipientState::Delivered);
        let mut r = crate::log::Record::new(
            crate::log::Kind::Unrecorded,
            self.clock.system_time(),
            id.to_string(),
            msg.info.envelope.sender.to_string(),
        );
        r.message_id = msg.meta.message_id.as_deref().map(Into::into);
        r.reply = Some(match delivered {
            true => format!(
                "outcomes not written yet ({e}); held until they are; may be delivered twice if Tern stops first"
            )
            .into(),
            false => format!("outcomes not written yet ({e}); held until they are").into(),
        });
        self.log.write(&r);
        self.unwritten.hold(id, record);
    }

    /// Fails every pending recipient of a message an operator claimed,
    /// with `reply`: recorded, logged and bounced as any failure is.
    pub(crate) async fn fail_claimed(&self, info: MessageInfo, reply: RemoteReply) {
        let meta = MessageMeta::decode(&info.envelope.meta);
        let pool: Arc<str> = meta
            .pool
            .as_deref()
            .map_or_else(|| self.default_pool(), Arc::from);
        let msg = Message::new(info, pool);
        // Held recipients too: an operator's bounce ends them.
        let rcpts: Vec<u32> = msg.info.remaining().map(|(i, _)| i as u32).collect();
        let outcomes = Outcome::all(&rcpts, Verdict::Failed, &reply);
        let sorted = self.sort(&msg, outcomes);
        self.finish(&msg, sorted).await;
    }
}
