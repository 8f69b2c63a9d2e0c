//! One delivery attempt of one message: its due recipients, grouped by
//! domain into jobs; the outcomes of each job recorded as it ends; and,
//! when the last job ends, the bounce (queued first) and the release of
//! the message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use queue::{
    Envelope, EnvelopeRecipient, MessageInfo, NewMessage, QueueError, RecipientState,
    RecipientStatus, Timestamp,
};

use super::path::Job;
use super::{Delivery, dsn, retry};
use crate::dns::route::RouteError;
use crate::egress::Picked;
use crate::egress::Pool;
use crate::message::MessageMeta;
use crate::log::{Kind, Record};
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
    pub source: Option<Arc<str>>,
    /// The provider of the site, for the metrics.
    pub provider: Option<Arc<str>>,
    pub host: Option<(String, SocketAddr)>,
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
        }
    }
}

/// A message being delivered.
pub(crate) struct Attempt {
    pub svc: Arc<Delivery>,
    pub info: MessageInfo,
    pub meta: MessageMeta,
    pub body: Bytes,
    pub pool: Arc<Pool>,
    /// Relay through these hosts instead of the MX hosts (a rebind).
    via: Vec<String>,
    remaining: AtomicUsize,
    /// Failed and expired recipients, recorded only after the bounce is queued.
    failures: Mutex<Vec<(Outcome, bool)>>,
    /// Outcomes not yet written (delivered and deferred ones).
    unrecorded: Mutex<Vec<(u32, RecipientStatus)>>,
}

/// Starts the attempt of a message the scheduler handed out.
pub(crate) async fn run(svc: Arc<Delivery>, info: MessageInfo) {
    begin(svc, info, None).await
}

/// Fails every pending recipient of a claimed message with `reply` (an
/// operator's bounce): recorded, logged and bounced to the sender as any
/// failure is.
pub(crate) async fn fail_all(svc: Arc<Delivery>, info: MessageInfo, reply: RemoteReply) {
    begin(svc, info, Some(reply)).await
}

/// An attempt of the due recipients, or, with `fail`, the failure of all
/// the pending ones.
async fn begin(svc: Arc<Delivery>, info: MessageInfo, fail: Option<RemoteReply>) {
    let now = svc.clock.now();
    let due: Vec<u32> = info
        .statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.state == RecipientState::Pending && (fail.is_some() || s.next_attempt <= now)
        })
        .map(|(i, _)| i as u32)
        .collect();
    let (q, id) = (svc.queue.clone(), info.id);
    let body = match tokio::task::spawn_blocking(move || q.body(id)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(QueueError::NotFound(_))) | Err(_) => {
            svc.queue.release(id);
            svc.attempt_finished();
            return;
        }
        Ok(Err(e)) => Err(e),
    };
    let meta = MessageMeta::decode(&info.envelope.meta);
    let egress = svc.egress.get();
    let default_pool = egress.pool(None);
    let rebind = svc
        .settings
        .rebinds
        .rule_for(&info, &meta, &default_pool.name);
    let (to_pool, via) = rebind.map_or((None, Vec::new()), |r| (r.to_pool, r.via));
    let pool = egress.pool(to_pool.as_deref().or(meta.pool.as_deref()));
    let unreadable = fail.or_else(|| {
        body.as_ref().err().map(|e| {
        tracing::error!(queue_id = %id, error = %e, "message unreadable in the spool; bouncing it");
        local_reply(
            554,
            [5, 3, 0],
            format!("message unreadable in the spool: {e}"),
        )
    })
    });
    let expired = now.saturating_since(info.arrival) >= svc.settings.max_age;
    let groups = group_by_domain(&info, &due);
    let attempt = Arc::new(Attempt {
        svc: svc.clone(),
        info,
        meta,
        body: body.unwrap_or_default(),
        pool,
        via,
        remaining: AtomicUsize::new(groups.len().max(1)),
        failures: Mutex::new(Vec::new()),
        unrecorded: Mutex::new(Vec::new()),
    });
    if due.is_empty() || expired || unreadable.is_some() {
        let outcomes = due
            .iter()
            .map(|i| match &unreadable {
                Some(reply) => Outcome::new(*i, Verdict::Failed, reply.clone()),
                None => expired_outcome(&attempt.info, *i),
            })
            .collect();
        attempt.job_done(outcomes).await;
        return;
    }
    for (domain, rcpts) in groups {
        tokio::spawn(route_and_submit(attempt.clone(), domain, rcpts));
    }
}

/// An expired recipient's outcome: deferred, which job_done turns into an
/// expiry (with the last error) since max_age is past.
fn expired_outcome(info: &MessageInfo, i: u32) -> Outcome {
    let last = info.statuses[i as usize]
        .last_reply
        .as_deref()
        .unwrap_or("not tried");
    let text = format!("delivery time expired; last error: {last}");
    Outcome::new(i, Verdict::Deferred, local_reply(451, [4, 4, 7], text))
}

/// Due recipients by lower-cased domain (one job each).
fn group_by_domain(info: &MessageInfo, due: &[u32]) -> BTreeMap<String, Vec<u32>> {
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in due {
        let domain = info.envelope.recipients[*i as usize]
            .domain()
            .to_ascii_lowercase();
        groups.entry(domain).or_default().push(*i);
    }
    groups
}

async fn route_and_submit(attempt: Arc<Attempt>, domain: String, rcpts: Vec<u32>) {
    let svc = attempt.svc.clone();
    // A lookup has sent nothing: at shutdown it is simply dropped, and the
    // recipients stay due for after the restart.
    let routed = tokio::select! {
        r = async {
            let router = svc.router.get();
            match attempt.via.is_empty() {
                true => router.route(&domain).await,
                false => router.via(&attempt.via).await,
            }
        } => r,
        () = svc.stopped() => {
            attempt.job_abandoned().await;
            return;
        }
    };
    match routed {
        Ok(route) => {
            svc.remember_site(&domain, &route.site);
            svc.submit(Job {
                attempt,
                rcpts,
                route,
                domain,
            })
        }
        Err(e) => {
            let (verdict, reply) = match e {
                RouteError::Permanent { code, esc, text } => {
                    (Verdict::Failed, local_reply(code, esc, text))
                }
                RouteError::Transient { esc, text } => {
                    (Verdict::Deferred, local_reply(451, esc, text))
                }
            };
            let outcomes = rcpts
                .into_iter()
                .map(|i| Outcome::new(i, verdict, reply.clone()))
                .collect();
            attempt.job_done(outcomes).await;
        }
    }
}

impl Delivery {
    /// Sends a job to its egress path, from a usable source of its pool
    /// that has room in its warm-up schedule.
    pub(crate) fn submit(self: &Arc<Self>, job: Job) {
        // The pool as the config in force has it now: a reload since the
        // attempt began may have changed its sources.
        let pool = self.egress.get().pool(Some(&job.attempt.pool.name));
        let now = tokio::time::Instant::now();
        let picked = match pool.warming() {
            false => pool.pick(now).map_or(Picked::NoneUsable, Picked::Source),
            true => {
                let day = crate::clock::day_number(self.clock.system_time());
                let provider = self.settings.shaper.provider_name(&job.route.site);
                pool.pick_for(now, day, provider.as_ref())
            }
        };
        match picked {
            Picked::Source(source) => {
                let path = self.path(source, &job.route.site, &job.domain);
                path.push(self, job);
            }
            other => {
                let reply = match other {
                    Picked::WarmupFull => local_reply(
                        451,
                        [4, 7, 0],
                        format!(
                            "every source of pool {} has sent its warm-up share for today",
                            pool.name
                        ),
                    ),
                    _ => local_reply(
                        451,
                        [4, 4, 0],
                        format!("no usable source in pool {}", pool.name),
                    ),
                };
                let outcomes = job
                    .rcpts
                    .iter()
                    .map(|i| Outcome::new(*i, Verdict::Deferred, reply.clone()))
                    .collect();
                tokio::spawn(async move { job.attempt.job_done(outcomes).await });
            }
        }
    }
}

impl Attempt {
    /// A job ended with these outcomes.
    pub async fn job_done(&self, outcomes: Vec<Outcome>) {
        let svc = &self.svc;
        let now = svc.clock.now();
        let mut record = Vec::new();
        let mut replies = SharedReplies::default();
        for o in outcomes {
            let attempts = self.info.statuses[o.index as usize]
                .attempts
                .saturating_add(1);
            let reply = replies.get(&o.reply);
            match o.verdict {
                Verdict::Delivered => {
                    self.log(Kind::Delivery, &o, attempts);
                    record.push((
                        o.index,
                        status(RecipientState::Delivered, attempts, now, reply),
                    ));
                }
                Verdict::Deferred => {
                    let next = now.saturating_add(retry::delay(
                        attempts,
                        svc.settings.retry_first,
                        svc.settings.retry_max,
                    ));
                    if next.saturating_since(self.info.arrival) >= svc.settings.max_age {
                        self.failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((o, true));
                        continue;
                    }
                    self.log(Kind::TransientFailure, &o, attempts);
                    record.push((
                        o.index,
                        status(RecipientState::Pending, attempts, next, reply),
                    ));
                }
                Verdict::Failed => self
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((o, false)),
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(record);
            self.finish().await;
        } else if !record.is_empty()
            && let Err(e) = svc.queue.record(self.info.id, record.clone()).await
        {
            tracing::error!(queue_id = %self.info.id, error = %e, "cannot record delivery outcomes; they are kept for the end of the attempt");
            self.unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(record);
        }
    }

    /// A job that will not run (shutdown): its recipients stay as they were.
    pub async fn job_abandoned(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish().await;
        }
    }

    /// The last job ended: bounce, record the failures, release.
    async fn finish(&self) {
        let svc = &self.svc;
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()));
        let mut record =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()));
        if !failures.is_empty() {
            let bounced = self.bounce(&failures).await;
            let now = svc.clock.now();
            let mut replies = SharedReplies::default();
            for (o, expired) in failures {
                let attempts = self.info.statuses[o.index as usize]
                    .attempts
                    .saturating_add(1);
                let reply = replies.get(&o.reply);
                if bounced {
                    self.log(
                        if expired {
                            Kind::Expiration
                        } else {
                            Kind::Bounce
                        },
                        &o,
                        attempts,
                    );
                    record.push((
                        o.index,
                        status(RecipientState::Failed, attempts, now, reply),
                    ));
                } else {
                    // The bounce could not be queued: keep the recipient and try again later.
                    let next = now.saturating_add(svc.settings.retry_first);
                    record.push((
                        o.index,
                        status(RecipientState::Pending, attempts, next, reply),
                    ));
                }
            }
        }
        let id = self.info.id;
        if record.is_empty() {
            svc.queue.release(id);
        } else if let Err(e) = svc.queue.update(id, record).await {
            tracing::error!(queue_id = %id, error = %e, "cannot record delivery outcomes; the recipients will be tried again");
            svc.queue.release(id);
        }
        svc.attempt_finished();
    }

    /// Queues the bounce for these failures, if one is due. False if it
    /// was due but could not be queued.
    async fn bounce(&self, failures: &[(Outcome, bool)]) -> bool {
        let env = &self.info.envelope;
        if env.sender.is_empty() {
            return true; // never a bounce for a bounce
        }
        let wanted: Vec<dsn::Failure<'_>> = failures
            .iter()
            .filter(|(o, _)| dsn::wants_notice(&env.recipients[o.index as usize].params))
            .map(|(o, expired)| dsn::Failure {
                rcpt: &env.recipients[o.index as usize],
                reply: &o.reply,
                remote_host: o.host.as_ref().map(|(h, _)| h.as_str()),
                expired: *expired,
            })
            .collect();
        if wanted.is_empty() {
            return true;
        }
        let svc = &self.svc;
        let now = svc.clock.system_time();
        let bytes = dsn::build(&dsn::Bounce {
            hostname: &svc.settings.hostname,
            id: self.info.id,
            sender: &env.sender,
            meta: &self.meta,
            arrival: self.info.arrival.to_system_time(),
            now,
            failures: wanted,
            original: &self.body,
            default_ret: svc.settings.bounce_return,
        });
        let meta = MessageMeta {
            content_8bit: !bytes.is_ascii(),
            ..Default::default()
        };
        let arrival = svc.clock.now();
        let msg = NewMessage {
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
        let size = msg.body.len() as u64;
        match svc.queue.enqueue(msg).await {
            Ok(bounce_id) => {
                let mut r = Record::new(Kind::Reception, now, bounce_id.to_string(), String::new());
                r.recipients = Some(1);
                r.size = Some(size);
                r.client = Some(format!("bounce of {}", self.info.id));
                svc.log.write(&r);
                svc.wake.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(queue_id = %self.info.id, error = %e, "cannot queue the bounce; the failed recipients will be tried again");
                false
            }
        }
    }

    fn log(&self, kind: Kind, o: &Outcome, attempts: u16) {
        let svc = &self.svc;
        let now = svc.clock.system_time();
        let mut r = Record::new(
            kind,
            now,
            self.info.id.to_string(),
            self.info.envelope.sender.to_string(),
        );
        r.message_id = self.meta.message_id.clone();
        r.recipient = Some(
            self.info.envelope.recipients[o.index as usize]
                .address
                .to_string(),
        );
        r.pool = Some(self.pool.name.to_string());
        r.site = o.site.as_deref().map(str::to_owned);
        r.source = o.source.as_deref().map(str::to_owned);
        r.remote_host = o.host.as_ref().map(|(h, _)| h.clone());
        r.remote_ip = o.host.as_ref().map(|(_, a)| a.ip().to_string());
        r.reply = Some(o.reply.to_string());
        r.attempts = Some(attempts);
        r.queue_time_ms = Some(
            svc.clock
                .now()
                .saturating_since(self.info.arrival)
                .as_millis() as u64,
        );
        svc.log.write(&r);
        self.count(kind, o, r.queue_time_ms.unwrap_or(0));
        if kind != Kind::Delivery {
            tracing::info!(queue_id = %self.info.id, rcpt = %r.recipient.as_deref().unwrap_or(""), reply = %o.reply, ?kind, "delivery outcome");
        }
    }

    /// Counts an outcome in the metrics.
    fn count(&self, kind: Kind, o: &Outcome, queue_ms: u64) {
        use crate::metrics::{Labels, Outcome as M};
        let m = &self.svc.settings.metrics;
        let outcome = match kind {
            Kind::Delivery => M::Delivered,
            Kind::TransientFailure => M::Deferred,
            Kind::Bounce => M::Bounced,
            Kind::Expiration => M::Expired,
            _ => return,
        };
        m.outcome(
            outcome,
            &Labels {
                provider: o.provider.as_deref().unwrap_or("other"),
                source: o.source.as_deref().unwrap_or(""),
                pool: &self.pool.name,
                tenant: self.meta.tenant.as_deref().unwrap_or(""),
            },
        );
        if kind == Kind::Delivery {
            m.queue_time(queue_ms as f64 / 1000.0);
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
