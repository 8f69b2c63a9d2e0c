//! Egress paths: one per (source, destination site). A path holds its
//! ready queue (jobs its destinations moved to it, at most `max_ready`)
//! and runs up to `connection_limit` connection workers ([`super::worker`])
//! that take jobs from it. When a job leaves the ready queue, the
//! destinations waiting for room are pumped again; when the path cannot
//! send (suspended, paused, its source unusable), its ready jobs go back
//! to their destinations, which send them from the pool's other sources
//! or keep them. Its shaping (rates, leases, holds, rules) is in
//! `shaped.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::time::Instant;

use super::super::Delivery;
use super::super::job::Job;
use super::super::scheduler::Dest;
use super::lanes::Lanes;
use crate::egress::Source;
use crate::shaping::{Limiter, Plan};

/// A path's changing state, under its lock.
pub(crate) struct State {
    /// Jobs ready to go, by priority.
    pub(crate) ready: Lanes,
    pub(crate) workers: u32,
    pub(crate) idle: u32,
    /// Workers holding an open connection.
    pub(crate) connected: u32,
    /// Jobs being sent now.
    pub(crate) sending: u32,
    /// Consecutive failed connections (reset by a successful one).
    pub(crate) failures: u32,
    /// Destinations waiting for room in the ready queue.
    waiters: Vec<Weak<Dest>>,
    /// The day (UTC day number) the source's warm-up share for this
    /// path's provider ran out, if it did.
    pub(crate) warm_full: Option<i64>,
    /// Asking the fleet for more of a shared source's warm-up share
    /// until then.
    pub(crate) warm_wait: Option<tokio::time::Instant>,
}

/// Why a path cannot send now: until when (if known), and why.
pub(crate) type Hold = (Option<Instant>, String);

/// Whether a path takes more jobs now.
pub(crate) enum Room {
    /// This many more.
    Open(usize),
    /// Its ready queue is full.
    Full,
    /// It cannot send: until when (if known), and why.
    Held(Option<Instant>, String),
}

/// One egress path.
pub(crate) struct Path {
    pub source: Arc<Source>,
    pub site: Arc<str>,
    /// Its key in the delivery's map (the site, or `site|domain`).
    pub key: Arc<str>,
    /// A domain it carries mail to (the one its plan was made for).
    domain: Arc<str>,
    /// Its limits and the shared scopes it answers to.
    pub(crate) plan: Plan,
    /// Its own message rate.
    pub(crate) messages: Option<Arc<Limiter>>,
    /// Its own new-connection rate.
    pub(crate) connects: Option<Arc<Limiter>>,
    /// Its adaptive rate, once a slow-down rule has fired.
    pub(crate) aimd: std::sync::OnceLock<Arc<crate::shaping::aimd::Aimd>>,
    state: Mutex<State>,
    /// The last hold looked up: (actions version, hold), see `shaped.rs`.
    pub(super) hold_seen: Mutex<Option<(u64, Option<Hold>)>>,
    /// Messages sent over the last minute.
    pub(crate) sent: super::super::view::Meter,
    ready_signal: tokio::sync::Notify,
    stopped: AtomicBool,
    /// Ready-queue bounds.
    max_ready: usize,
    max_ready_bytes: u64,
}

/// The longest a connection holding a fleet-wide slot stays idle.
pub const FLEET_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl Path {
    /// A path with `plan`; `previous` is the path a reload replaces, whose
    /// rate limiters (and slow-down) go on when their rates did not change.
    pub fn new(
        source: Arc<Source>,
        (site, key, domain): (Arc<str>, Arc<str>, Arc<str>),
        plan: Plan,
        previous: Option<&Path>,
        (max_ready, max_ready_bytes): (usize, u64),
    ) -> Self {
        let keep = |rate: Option<crate::config::values::Rate>, old: Option<&Arc<Limiter>>| {
            let rate = rate?;
            Some(match old.filter(|l| l.rate() == rate) {
                Some(l) => l.clone(),
                None => Arc::new(Limiter::starting(rate, plan.busy_since)),
            })
        };
        let messages = keep(
            plan.limits.message_rate,
            previous.and_then(|p| p.messages.as_ref()),
        );
        // A slow-down goes on if it scales the same limiter (or its own,
        // on a path still without a rate).
        let aimd = std::sync::OnceLock::new();
        if let Some(old) = previous.and_then(|p| p.aimd.get()) {
            let same = match (&messages, previous.and_then(|p| p.messages.as_ref())) {
                (Some(new), Some(_)) => Arc::ptr_eq(new, old.limiter_arc()),
                (None, None) => true,
                _ => false,
            };
            if same {
                let _ = aimd.set(old.clone());
            }
        }
        Self {
            connects: keep(
                plan.limits.connection_rate,
                previous.and_then(|p| p.connects.as_ref()),
            ),
            messages,
            aimd,
            source,
            site,
            key,
            domain,
            plan,
            state: Mutex::new(State {
                ready: Lanes::default(),
                workers: 0,
                idle: 0,
                connected: 0,
                sending: 0,
                failures: previous.map_or(0, |p| p.state().failures),
                waiters: Vec::new(),
                warm_full: previous.and_then(|p| p.state().warm_full),
                warm_wait: None,
            }),
            hold_seen: Mutex::new(None),
            sent: Default::default(),
            ready_signal: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
            max_ready: max_ready.max(1),
            max_ready_bytes: max_ready_bytes.max(1),
        }
    }

    /// The domain its plan was made for.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many more jobs it takes now.
    pub fn room(&self, svc: &Delivery) -> Room {
        if self.stopped.load(Ordering::Acquire) {
            return Room::Held(None, "retired by a reload".into());
        }
        if let Some((until, why)) = self.hold(svc) {
            return Room::Held(until, why);
        }
        let st = self.state();
        let (len, bytes) = (st.ready.len(), st.ready.bytes());
        if len > 0 && st.connected == 0 && self.rate_limited() {
            // Its jobs hold rate slots: no more until a connection is
            // open to send them (it may be waiting for a connection
            // slot another path or node holds).
            return Room::Full;
        }
        match len < self.max_ready && bytes < self.max_ready_bytes {
            true => Room::Open(self.max_ready - len),
            false => Room::Full,
        }
    }

    /// Asks to be pumped when the ready queue has room again.
    pub fn wait_for_room(&self, dest: &Arc<Dest>) {
        let mut st = self.state();
        if !st.waiters.iter().any(|w| w.as_ptr() == Arc::as_ptr(dest)) {
            st.waiters.push(Arc::downgrade(dest));
        }
    }

    /// Queues a ready job; starts a worker if none is idle and the limit
    /// allows.
    pub fn push(self: &Arc<Self>, svc: &Arc<Delivery>, job: Job) {
        let spawn = {
            let mut st = self.state();
            st.ready.push(job);
            // After a pause, a single connection probes the site; the jobs
            // wait behind it.
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
            tokio::spawn(super::worker::run(svc.clone(), self.clone()));
        } else {
            self.ready_signal.notify_one();
        }
    }

    /// Stops the path: workers take no new jobs.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.ready_signal.notify_waiters();
    }

    /// True once stopped.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The next ready job, waiting at most `idle_timeout`; `None` retires
    /// the worker (the count is updated under the same lock as `push`, so
    /// no job is left without a worker). Taking a job makes room: the
    /// destinations waiting for it are pumped.
    pub async fn next(&self, svc: &Arc<Delivery>) -> Option<Job> {
        loop {
            if self.stopped() {
                self.state().workers -= 1;
                return None;
            }
            {
                let mut st = self.state();
                if let Some(job) = st.ready.pop() {
                    let waiters = self.room_made(&mut st);
                    drop(st);
                    pump(svc, waiters);
                    return Some(job);
                }
                st.idle += 1;
            }
            let idle = self.idle_limit();
            let woke = tokio::time::timeout(idle, self.ready_signal.notified())
                .await
                .is_ok();
            let mut st = self.state();
            st.idle -= 1;
            if !woke && !self.stopped() {
                if let Some(job) = st.ready.pop() {
                    let waiters = self.room_made(&mut st);
                    drop(st);
                    pump(svc, waiters);
                    return Some(job);
                }
                st.workers -= 1;
                return None;
            }
        }
    }

    /// How long a connection (or room for one) waits idle for a job:
    /// `idle_timeout`, but at most [`FLEET_IDLE`] when it holds a slot of
    /// a fleet-wide connection limit, which other nodes may be waiting
    /// for.
    fn idle_limit(&self) -> std::time::Duration {
        let idle = self.plan.limits.idle_timeout;
        let fleet_wide = self
            .plan
            .scopes
            .iter()
            .any(|s| s.connections.as_ref().is_some_and(|c| c.fleet_wide()));
        match fleet_wide {
            true => idle.min(FLEET_IDLE),
            false => idle,
        }
    }

    /// A job left the ready queue: once it is down to half, the
    /// destinations waiting for room are pumped (each pump then moves a
    /// batch, not one job per send).
    fn room_made(&self, st: &mut State) -> Vec<Weak<Dest>> {
        match st.ready.len() <= self.max_ready / 2 {
            true => std::mem::take(&mut st.waiters),
            false => Vec::new(),
        }
    }

    /// Takes every ready job.
    pub fn take_ready(&self) -> Vec<Job> {
        self.state().ready.drain()
    }

    /// Takes the ready jobs `drop` selects.
    pub fn remove_ready(&self, drop: impl FnMut(&Job) -> bool) -> Vec<Job> {
        self.state().ready.remove(drop)
    }

    /// A worker without a connection leaves if no job is ready (it takes
    /// no connection slot for nothing); true when it left.
    pub fn leave_if_empty(&self) -> bool {
        let mut st = self.state();
        if st.ready.len() == 0 {
            st.workers -= 1;
            return true;
        }
        false
    }

    /// The next ready job without waiting; none: the worker leaves.
    pub fn next_now(&self, svc: &Arc<Delivery>) -> Option<Job> {
        let mut st = self.state();
        match st.ready.pop() {
            Some(job) => {
                let waiters = self.room_made(&mut st);
                drop(st);
                pump(svc, waiters);
                Some(job)
            }
            None => {
                st.workers -= 1;
                None
            }
        }
    }

    /// A worker leaves without waiting for `next` to say so.
    pub fn retire(&self) {
        self.state().workers -= 1;
    }

    /// Waiting jobs go back to their destinations, which pick another
    /// source or keep them: this path cannot send them now.
    pub fn give_back(&self, svc: &Arc<Delivery>, mut jobs: Vec<Job>) {
        jobs.extend(self.take_ready());
        svc.requeue(jobs);
    }

    /// The ready jobs and their recipients, and the oldest one's arrival.
    pub fn ready_totals(&self) -> (u64, u64, Option<queue::Timestamp>) {
        let st = self.state();
        let mut rcpts = 0;
        let mut oldest: Option<queue::Timestamp> = None;
        for j in st.ready.iter() {
            rcpts += j.rcpts.len() as u64;
            oldest = Some(oldest.map_or(j.arrival, |o| o.min(j.arrival)));
        }
        (st.ready.len() as u64, rcpts, oldest)
    }

    /// Ends a worker's connection (with QUIT if it is still in step).
    pub async fn close(&self, conn: Option<crate::smtp::client::Connection>, quit: bool) {
        if let Some(c) = conn {
            self.state().connected -= 1;
            if quit {
                c.quit().await;
            }
        }
    }
}

/// Pumps the destinations that waited for room.
fn pump(svc: &Arc<Delivery>, waiters: Vec<Weak<Dest>>) {
    for d in waiters.iter().filter_map(Weak::upgrade) {
        svc.pump(&d);
    }
}
