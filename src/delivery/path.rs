//! Egress paths: one per (source, destination site). Each holds the jobs
//! waiting for it and runs up to `connection_limit` connection workers; a
//! worker connects from the path's source to the site's hosts in order,
//! then delivers job after job over that connection (up to
//! `max_messages_per_connection`), and closes it when idle. Its shaping
//! (rates, leases, pauses, rules) is in `shaped.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::Delivery;
use super::attempt::{Attempt, Outcome, Verdict};
use super::lanes::Lanes;
use crate::config::TlsPolicy;
use crate::dns::route::Route;
use crate::egress::Source;
use crate::message::RecipientParams;
use crate::shaping::{Limiter, Plan};
use crate::smtp::client::{
    ClientError, Connection, Greeting, RcptRequest, RcptResult, RemoteReply, TxnRequest,
    local_reply,
};

/// Some recipients of one message for one domain.
pub(crate) struct Job {
    pub attempt: Arc<Attempt>,
    pub rcpts: Vec<u32>,
    pub route: Route,
    /// The recipients' domain (lowercase).
    pub domain: String,
}

/// A path's changing state, under its lock.
pub(super) struct State {
    /// Jobs waiting for a worker, by priority.
    pub(super) jobs: Lanes,
    pub(super) workers: u32,
    pub(super) idle: u32,
    /// Workers holding an open connection.
    pub(super) connected: u32,
    /// Consecutive failed connections (reset by a successful one).
    pub(super) failures: u32,
    /// Set while the path is paused after `dead_site_failures` failures.
    pub(super) paused_until: Option<tokio::time::Instant>,
}

/// One egress path.
pub(crate) struct Path {
    pub source: Arc<Source>,
    pub site: Arc<str>,
    /// Its limits and the shared scopes it answers to.
    pub(super) plan: Plan,
    /// Its own message rate.
    pub(super) messages: Option<Limiter>,
    /// Its own new-connection rate.
    pub(super) connects: Option<Limiter>,
    /// Its adaptive rate, once a slow-down rule has fired.
    pub(super) aimd: std::sync::OnceLock<crate::shaping::aimd::Aimd>,
    state: Mutex<State>,
    /// Messages sent over the last minute.
    pub(super) sent: super::view::Meter,
    ready: tokio::sync::Notify,
    stopped: AtomicBool,
}

/// Why a worker could not connect.
enum ConnectFailure {
    /// The source address cannot be bound: not the destination's fault.
    Bind,
    /// No host answered (or all refused): defer with this reply; the last
    /// refusal a host itself sent, if any, is matched against the rules.
    Unreachable(RemoteReply, Option<RemoteReply>),
}

impl Path {
    pub fn new(source: Arc<Source>, site: Arc<str>, plan: Plan) -> Self {
        Self {
            source,
            site,
            messages: plan.limits.message_rate.map(Limiter::new),
            connects: plan.limits.connection_rate.map(Limiter::new),
            aimd: std::sync::OnceLock::new(),
            plan,
            state: Mutex::new(State {
                jobs: Lanes::default(),
                workers: 0,
                idle: 0,
                connected: 0,
                failures: 0,
                paused_until: None,
            }),
            sent: Default::default(),
            ready: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
        }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job; starts a worker if none is idle and the limit allows.
    /// While the path is paused (a dead site), the job is deferred at once.
    pub fn push(self: &Arc<Self>, svc: &Arc<Delivery>, job: Job) {
        let spawn = {
            let mut st = self.state();
            let now = tokio::time::Instant::now();
            if let Some(reply) = st
                .jobs
                .is_empty()
                .then(|| self.suspension(svc, &job))
                .flatten()
            {
                drop(st);
                defer_jobs(self, vec![job], &reply);
                return;
            }
            if let Some(until) = st.paused_until.filter(|u| *u > now) {
                let failures = st.failures;
                drop(st);
                let reply = local_reply(
                    451,
                    [4, 4, 1],
                    format!(
                        "{} paused after {failures} failed connections; next try in {}s",
                        self.site,
                        (until - now).as_secs()
                    ),
                );
                defer_jobs(self, vec![job], &reply);
                return;
            }
            st.jobs.push(job);
            // After a pause, a single connection probes the site; the jobs
            // wait behind it (deferred with it if it fails too).
            let limit = match st.failures >= self.plan.limits.dead_site_failures {
                true => 1,
                false => self.plan.limits.connection_limit,
            };
            let spawn = st.idle == 0 && st.workers < limit;
            if spawn {
                st.workers += 1;
            }
            spawn
        };
        if spawn {
            tokio::spawn(worker(svc.clone(), self.clone()));
        } else {
            self.ready.notify_one();
        }
    }

    /// Stops the path: workers take no new jobs.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.ready.notify_waiters();
    }

    /// The next job, waiting at most `idle_timeout`; `None` retires the
    /// worker (the count is updated under the same lock as `push`, so no
    /// job is left without a worker).
    async fn next(&self) -> Option<Job> {
        loop {
            if self.stopped.load(Ordering::Acquire) {
                let abandoned: Vec<Job> = {
                    let mut st = self.state();
                    st.workers -= 1;
                    st.jobs.drain()
                };
                for job in abandoned {
                    job.attempt.job_abandoned().await;
                }
                return None;
            }
            {
                let mut st = self.state();
                if let Some(job) = st.jobs.pop() {
                    return Some(job);
                }
                st.idle += 1;
            }
            let idle = self.plan.limits.idle_timeout;
            let woke = tokio::time::timeout(idle, self.ready.notified())
                .await
                .is_ok();
            let mut st = self.state();
            st.idle -= 1;
            if !woke && !self.stopped.load(Ordering::Acquire) {
                if let Some(job) = st.jobs.pop() {
                    return Some(job);
                }
                st.workers -= 1;
                return None;
            }
        }
    }

    /// Takes every waiting job (to move them to other sources).
    pub(super) fn take_all(&self) -> Vec<Job> {
        self.state().jobs.drain()
    }

    /// Ends a worker's connection (with QUIT if it is still in step).
    async fn close(&self, conn: Option<Connection>, quit: bool) {
        if let Some(c) = conn {
            self.state().connected -= 1;
            if quit {
                c.quit().await;
            }
        }
    }

    fn retire(&self) {
        self.state().workers -= 1;
    }
}

/// A connection worker of `path`, until it retires or shutdown aborts it.
async fn worker(svc: Arc<Delivery>, path: Arc<Path>) {
    tokio::select! {
        () = work(&svc, &path) => {}
        () = svc.aborted() => tracing::warn!(source = %path.source.name, site = %path.site, "connection dropped at shutdown"),
    }
}

async fn work(svc: &Arc<Delivery>, path: &Arc<Path>) {
    let mut conn: Option<Connection> = None;
    let mut sent = 0;
    let mut leases = Vec::new();
    while let Some(job) = path.next().await {
        if let Some(reply) = path.suspension(svc, &job) {
            defer_jobs(path, vec![job], &reply);
            continue;
        }
        if conn
            .as_ref()
            .is_some_and(|c| job.route.tls == TlsPolicy::Required && !c.tls)
        {
            // This domain requires TLS; the open connection fell back to plaintext.
            path.close(conn.take(), true).await;
            leases.clear();
            sent = 0;
        }
        if conn.is_none() {
            leases = path.connection_slot().await;
            match connect(svc, path, &job.route).await {
                Ok(c) => {
                    path.connected();
                    conn = Some(c);
                }
                Err(ConnectFailure::Bind) => {
                    // Move this job and the waiting ones to the pool's other sources.
                    path.source.mark_unusable(tokio::time::Instant::now());
                    svc.submit(job);
                    for j in path.take_all() {
                        svc.submit(j);
                    }
                    path.retire();
                    return;
                }
                Err(ConnectFailure::Unreachable(reply, remote)) => {
                    leases.clear();
                    path.connection_failed(&reply);
                    if let Some(r) = &remote {
                        path.react(svc, r, &job);
                    }
                    defer_unreachable(path, job, &reply);
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let reusable = send_job(svc, path, c, job).await;
        sent += 1;
        if !reusable || sent >= path.plan.limits.max_messages_per_connection {
            path.close(conn.take(), reusable).await;
            leases.clear();
            sent = 0;
        }
    }
    path.close(conn.take(), true).await;
}

/// Sends one job over an open connection, within the path's message
/// rates; reacts to a refusal; records the outcomes. Returns whether the
/// connection can be reused.
///
/// Under a message rate, the job goes back to the path while the worker
/// waits for a send slot, and the slot goes to the most urgent job
/// waiting then (one this connection may carry: a plaintext connection
/// never takes TLS-only mail). So a password reset that arrives while a
/// campaign waits for the rate leaves with the next slot.
async fn send_job(svc: &Arc<Delivery>, path: &Path, c: &mut Connection, job: Job) -> bool {
    let job = if path.paced() {
        path.state().jobs.push_front(job);
        path.message_slot().await;
        let tls = c.tls;
        let next = path
            .state()
            .jobs
            .pop_fitting(|j| tls || j.route.tls != TlsPolicy::Required);
        match next {
            Some(job) => match path.suspension(svc, &job) {
                Some(reply) => {
                    defer_jobs(path, vec![job], &reply);
                    return true;
                }
                None => job,
            },
            None => return true, // another worker took it; the slot is lost
        }
    } else {
        job
    };
    // A tenant's total rate holds over every path it uses.
    if let Some(t) = svc
        .settings
        .shaper
        .tenant(job.attempt.meta.tenant.as_deref())
        && let Some(l) = &t.messages
    {
        crate::shaping::pace(&[l]).await;
    }
    let max_rcpts = path.plan.limits.max_recipients_per_transaction as usize;
    let started = tokio::time::Instant::now();
    let (mut outcomes, reusable) = deliver(c, &job, max_rcpts).await;
    let provider = path.plan.provider.as_deref().unwrap_or("other");
    (svc.settings.metrics).transaction(provider, started.elapsed().as_secs_f64());
    path.bounce_by_rule(svc, &mut outcomes);
    if outcomes.iter().any(|o| o.verdict == Verdict::Delivered) {
        path.sent.add(1);
    }
    match outcomes.iter().find(|o| o.verdict != Verdict::Delivered) {
        Some(o) => path.react(svc, &o.reply, &job),
        None => path.delivered(svc),
    }
    let host = Some((c.host.clone(), c.peer));
    let outcomes = outcomes
        .into_iter()
        .map(|o| with_path(o, path, host.clone()))
        .collect();
    job.attempt.job_done(outcomes).await;
    reusable
}

/// No host of the site answered: defers this job and, unless another
/// worker holds a connection (then the site works and only this try
/// failed), every job waiting for the path, so that a dead site costs one
/// connection timeout per retry round rather than one per message.
fn defer_unreachable(path: &Path, job: Job, reply: &RemoteReply) {
    let mut jobs = vec![job];
    if path.state().connected == 0 {
        jobs.extend(path.take_all());
    }
    defer_jobs(path, jobs, reply);
}

/// Defers every recipient of `jobs` with `reply`.
fn defer_jobs(path: &Path, jobs: Vec<Job>, reply: &RemoteReply) {
    for job in jobs {
        let outcomes = job
            .rcpts
            .iter()
            .map(|i| {
                with_path(
                    Outcome::new(*i, Verdict::Deferred, reply.clone()),
                    path,
                    None,
                )
            })
            .collect();
        tokio::spawn(async move { job.attempt.job_done(outcomes).await });
    }
}

fn with_path(mut o: Outcome, path: &Path, host: Option<(String, std::net::SocketAddr)>) -> Outcome {
    o.site = Some(path.site.clone());
    o.source = Some(path.source.name.clone());
    o.provider = path.plan.provider.clone();
    o.host = host;
    o
}

/// Connects to the first host of the route that answers, trying each of
/// its addresses the source can reach; an opportunistic TLS failure is
/// retried in plaintext on the same address.
async fn connect(svc: &Delivery, path: &Path, route: &Route) -> Result<Connection, ConnectFailure> {
    let timeouts = &svc.settings.timeouts;
    let mut last = None;
    let mut remote = None;
    for host in &route.hosts {
        for addr in host
            .addrs
            .iter()
            .copied()
            .filter(|a| path.source.reaches(*a))
        {
            let greeting = |tls| Greeting {
                ehlo: &path.source.ehlo,
                host: &host.name,
                tls,
                timeouts,
            };
            let result = match Connection::open(&path.source, addr, &greeting(route.tls)).await {
                Err(ClientError::Tls(e)) if route.tls == TlsPolicy::Opportunistic => {
                    tracing::info!(host = %host.name, %addr, error = %e, "TLS failed; retrying in plaintext");
                    Connection::open(&path.source, addr, &greeting(TlsPolicy::Off)).await
                }
                other => other,
            };
            match result {
                Ok(c) => return Ok(c),
                Err(ClientError::Bind(ip, e)) => {
                    tracing::warn!(source = %path.source.name, %ip, error = %e, "cannot bind the source address");
                    return Err(ConnectFailure::Bind);
                }
                Err(e) => {
                    if let ClientError::Rejected { reply, .. } = &e {
                        remote = Some(reply.clone());
                    }
                    tracing::debug!(host = %host.name, %addr, error = %e, "host unavailable; trying the next");
                    last = Some(format!("{} [{}]: {e}", host.name, addr.ip()));
                }
            }
        }
    }
    let why = last.unwrap_or_else(|| {
        format!(
            "no address of {} is reachable from source {}",
            route.site, path.source.name
        )
    });
    let reply = local_reply(
        451,
        [4, 4, 1],
        format!("no answer from any host of {}: {why}", route.site),
    );
    Err(ConnectFailure::Unreachable(reply, remote))
}

/// Delivers a job over an open connection, in transactions of at most
/// `max_recipients_per_transaction`; recipients refused with "too many
/// recipients" go in the next transaction. Returns the outcomes and
/// whether the connection can be reused.
async fn deliver(conn: &mut Connection, job: &Job, max_rcpts: usize) -> (Vec<Outcome>, bool) {
    let env = &job.attempt.info.envelope;
    let meta = &job.attempt.meta;
    let params: Vec<RecipientParams> = job
        .rcpts
        .iter()
        .map(|i| RecipientParams::decode(&env.recipients[*i as usize].params))
        .collect();
    let smtputf8 = meta.smtputf8
        || !env.sender.is_ascii()
        || job
            .rcpts
            .iter()
            .any(|i| !env.recipients[*i as usize].address.is_ascii());
    let mut pending: VecDeque<usize> = (0..job.rcpts.len()).collect();
    let mut outcomes = Vec::with_capacity(job.rcpts.len());
    while !pending.is_empty() {
        let n = pending.len().min(max_rcpts);
        let batch: Vec<usize> = pending.drain(..n).collect();
        let reqs: Vec<RcptRequest<'_>> = batch
            .iter()
            .map(|k| RcptRequest {
                address: &env.recipients[job.rcpts[*k] as usize].address,
                notify: params[*k].notify,
                orcpt: params[*k].orcpt.as_deref(),
            })
            .collect();
        let req = TxnRequest {
            sender: &env.sender,
            recipients: &reqs,
            body: &job.attempt.body,
            eight_bit: meta.content_8bit,
            smtputf8,
            ret: meta.ret,
            envid: meta.envid.as_deref(),
        };
        let (results, reusable) = conn.transaction(&req).await;
        // "Too many recipients" for the first of a transaction: the server
        // takes none at all now; those recipients are tried again later.
        let progress = results.iter().any(|r| !matches!(r, RcptResult::Again(_)));
        for (k, r) in batch.into_iter().zip(results) {
            let index = job.rcpts[k];
            match r {
                RcptResult::Delivered(rep) => {
                    outcomes.push(Outcome::new(index, Verdict::Delivered, rep))
                }
                RcptResult::Deferred(rep) => {
                    outcomes.push(Outcome::new(index, Verdict::Deferred, rep))
                }
                RcptResult::Failed(rep) => outcomes.push(Outcome::new(index, Verdict::Failed, rep)),
                RcptResult::Again(_) if progress => pending.push_back(k),
                RcptResult::Again(rep) => {
                    outcomes.push(Outcome::new(index, Verdict::Deferred, rep))
                }
            }
        }
        if !reusable {
            let reply = local_reply(451, [4, 4, 2], format!("connection to {} lost", conn.host));
            outcomes.extend(
                pending
                    .drain(..)
                    .map(|k| Outcome::new(job.rcpts[k], Verdict::Deferred, reply.clone())),
            );
            return (outcomes, false);
        }
    }
    (outcomes, true)
}
