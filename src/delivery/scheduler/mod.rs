//! The scheduler: takes due messages from the queue, splits them into
//! jobs (one per recipient domain), routes each domain to its site, and
//! keeps the jobs in the **scheduled queue** of their destination (pool
//! and site) until an egress path of that pool has room in its ready
//! queue; then it moves them there, as fast as the path sends and no
//! faster ([`pump`]).
//!
//! A destination that cannot send (every path suspended, paused, over
//! its warm-up share, or full) keeps its jobs and costs nothing per job
//! while it waits: it asks to be woken when a path has room, or at the
//! time its hold ends (one timer per destination, not per job). Waiting is
//! never a delivery attempt: nothing is written to the spool for a job
//! until a receiver (or DNS) has been asked.
//!
//! Also here: the retries held for messages with other jobs still on
//! their way, the expiry of jobs that waited past `max_age`, and the
//! removal of jobs whose message an operator took (purge, bounce, rebind).

mod admit;
pub(crate) mod dest;
mod holds;
mod pump;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use queue::MessageId;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Delivery;
use super::job::{Job, Rcpts};
pub(crate) use dest::Dest;

/// How often waiting jobs are checked for expiry.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// How soon the jobs of messages an operator took leave the queues (and
/// the views).
const STALE_CHECK: Duration = Duration::from_secs(2);

/// Due messages taken from the queue at a time.
const BATCH: usize = 1024;

/// A destination's name: (pool, path key).
type DestKey = (Arc<str>, Arc<str>);

/// Timed work: destinations to wake when a hold ends, and retries held
/// for messages with other jobs on their way.
#[derive(Default)]
struct Timers {
    seq: u64,
    wakes: BTreeMap<(Instant, u64), Weak<Dest>>,
    retries: BTreeMap<(Instant, u64), ((MessageId, u32), Rcpts)>,
}

impl Timers {
    fn next(&self) -> Option<Instant> {
        let w = self.wakes.keys().next().map(|k| k.0);
        let r = self.retries.keys().next().map(|k| k.0);
        [w, r].into_iter().flatten().min()
    }
}

/// The scheduler's state (the loop is [`Delivery::run`]).
#[derive(Default)]
pub(crate) struct Scheduler {
    dests: Mutex<HashMap<DestKey, Arc<Dest>>>,
    pub(crate) routes: admit::Routes,
    timers: Mutex<Timers>,
    /// Told when a timer earlier than the loop's sleep is set.
    timer_set: Notify,
    /// The queue's `disturbed` count at the last check of stale jobs.
    disturbed: AtomicU64,
    /// The holds of pools, tenants and domains, by actions version.
    holds: holds::Cache,
}

impl Scheduler {
    fn timers(&self) -> MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dests_map(&self) -> MutexGuard<'_, HashMap<DestKey, Arc<Dest>>> {
        self.dests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every destination.
    pub fn dests(&self) -> Vec<Arc<Dest>> {
        self.dests_map().values().cloned().collect()
    }

    /// The destination (pool, key), created empty on first use.
    fn dest(
        &self,
        pool: &Arc<str>,
        site: &Arc<str>,
        key: &Arc<str>,
        domain: &Arc<str>,
    ) -> Arc<Dest> {
        let mut dests = self.dests_map();
        if let Some(d) = dests.get(&(pool.clone(), key.clone())) {
            return d.clone();
        }
        let d = Arc::new(Dest::new(
            pool.clone(),
            site.clone(),
            key.clone(),
            domain.clone(),
        ));
        dests.insert((pool.clone(), key.clone()), d.clone());
        d
    }

    /// Wakes `dest` at `at` (unless it is already to be woken sooner).
    pub fn wake_at(&self, dest: &Arc<Dest>, q: &mut dest::Queued, at: Instant) {
        if q.wake_at.is_some_and(|w| w <= at && w > Instant::now()) {
            return;
        }
        q.wake_at = Some(at);
        let mut t = self.timers();
        t.seq += 1;
        let key = (at, t.seq);
        t.wakes.insert(key, Arc::downgrade(dest));
        drop(t);
        self.timer_set.notify_one();
    }

    /// Holds a deferred job's recipients until `at` while its message's
    /// other jobs are on their way (see `outcome::trackers`).
    pub fn retry_later(&self, job: (MessageId, u32), rcpts: Rcpts, at: Instant) {
        let mut t = self.timers();
        t.seq += 1;
        let key = (at, t.seq);
        t.retries.insert(key, (job, rcpts));
        drop(t);
        self.timer_set.notify_one();
    }

    /// Forgets everything (shutdown).
    fn clear(&self) {
        self.dests_map().clear();
        *self.timers() = Timers::default();
    }
}

impl Delivery {
    /// The scheduler loop: admits due messages, fires timers, keeps house;
    /// runs until [`Delivery::shutdown`].
    pub async fn run(self: Arc<Self>) {
        let mut housekeeping = Instant::now() + HOUSEKEEPING;
        let mut stale_check = Instant::now() + STALE_CHECK;
        let mut writable = true;
        while !self.stopping() {
            if self.working() != writable {
                writable = !writable;
                self.work_turned(writable);
                continue;
            }
            if writable {
                let due = self.queue.take_due(self.clock.now(), BATCH);
                if !due.is_empty() {
                    self.admit(due);
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            if self.fire_timers() {
                continue;
            }
            let now = Instant::now();
            if self.unwritten.next().is_some_and(|t| t <= now) {
                tokio::spawn(self.clone().write_held());
            }
            if now >= stale_check {
                let disturbed = self.queue.disturbed();
                if self.scheduler.disturbed.swap(disturbed, Ordering::AcqRel) != disturbed {
                    self.drop_stale();
                }
                stale_check = now + STALE_CHECK;
            }
            if now >= housekeeping {
                self.keep_house();
                housekeeping = now + HOUSEKEEPING;
            }
            let due = match writable {
                true => self.queue.next_due().map(|t| self.clock.instant_at(t)),
                // Watch for the spool to heal.
                false => Some(now + STALE_CHECK),
            };
            let timer = self.scheduler.timers().next();
            let held = self
                .unwritten
                .next()
                .map(|t| t.max(now + Duration::from_millis(100)));
            let until = [Some(housekeeping), Some(stale_check), due, timer, held]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(housekeeping);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.scheduler.timer_set.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        self.scheduler.clear();
        tracing::info!("delivery stopped taking new messages");
    }

    /// True while the spool can write outcomes (it may refuse new mail).
    pub(crate) fn spool_writable(&self) -> bool {
        !matches!(self.queue.health(), queue::Health::Unhealthy(_))
    }

    /// True while delivery may start sends: the spool can write outcomes
    /// and the node is not draining.
    pub(crate) fn working(&self) -> bool {
        self.spool_writable() && !self.paused.load(Ordering::Acquire)
    }

    /// Stops starting sends (a drain hands the queue to other nodes; the
    /// sends under way finish), or starts again.
    pub fn pause(self: &Arc<Self>, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.wake.notify_one();
    }

    /// Sends under way now.
    pub fn sending(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// The spool stopped or started taking writes, or a drain paused
    /// delivery or ended: delivery stops taking new work (connections
    /// finish what they send, and idle), or takes it up again.
    fn work_turned(self: &Arc<Self>, working: bool) {
        if self.paused.load(Ordering::Acquire) {
            tracing::warn!("the node drains: delivery starts no new sends");
            return;
        }
        match working {
            true => {
                tracing::warn!("delivery resumes");
                self.holds_changed();
            }
            false => {
                let health = self.queue.health();
                tracing::error!(
                    ?health,
                    held = self.unwritten.len(),
                    "the spool cannot write: delivery stops taking new work until it can"
                );
            }
        }
    }

    /// Runs the timers that are due; true if any was.
    fn fire_timers(self: &Arc<Self>) -> bool {
        let now = Instant::now();
        let (wakes, retries) = {
            let mut t = self.scheduler.timers();
            let later_w = t.wakes.split_off(&(now, u64::MAX));
            let later_r = t.retries.split_off(&(now, u64::MAX));
            (
                std::mem::replace(&mut t.wakes, later_w),
                std::mem::replace(&mut t.retries, later_r),
            )
        };
        let any = !wakes.is_empty() || !retries.is_empty();
        for d in wakes.into_values().filter_map(|w| w.upgrade()) {
            d.lock().wake_at = None;
            self.pump(&d);
        }
        for (job, rcpts) in retries.into_values() {
            self.resume_held(job, rcpts);
        }
        any
    }

    /// A held retry is due: its recipients are admitted again, if their
    /// message is still held for them.
    fn resume_held(self: &Arc<Self>, (id, handout): (MessageId, u32), rcpts: Rcpts) {
        if !self.trackers.resume((id, handout)) {
            return;
        }
        match self.queue.get(id).filter(|m| m.handout == handout) {
            Some(info) => self.admit_some(info, Some(&rcpts)),
            None => self.trackers.forget((id, handout)),
        }
    }

    /// Expires the jobs that waited past `max_age` at the front of each
    /// waiting tenant's lane, and forgets what is no longer needed.
    fn keep_house(self: &Arc<Self>) {
        let now = self.clock.now();
        let max_age = self.settings.max_age;
        for d in self.scheduler.dests() {
            let expired = d
                .lock()
                .remove_fronts(|j| now.saturating_since(j.arrival) >= max_age);
            self.expire(expired);
        }
        self.scheduler.routes.prune();
        self.scheduler
            .dests_map()
            .retain(|_, d| Arc::strong_count(d) > 1 || !d.lock().is_empty());
    }

    /// Drops the waiting jobs whose message is no longer held for them.
    fn drop_stale(&self) {
        let stale = |j: &Job| !self.queue.is_current(j.id, j.handout);
        let mut gone = Vec::new();
        for d in self.scheduler.dests() {
            gone.extend(d.lock().remove(stale));
        }
        for p in self.live_paths() {
            gone.extend(p.remove_ready(stale));
        }
        for j in &gone {
            self.trackers.forget((j.id, j.handout));
        }
        if !gone.is_empty() {
            tracing::info!(
                jobs = gone.len(),
                "dropped waiting jobs of messages taken by an operator"
            );
        }
    }

    /// Puts jobs back in their destinations' queues (their path cannot
    /// send them) and pumps those destinations.
    pub(crate) fn requeue(self: &Arc<Self>, jobs: Vec<Job>) {
        let mut dests: Vec<Arc<Dest>> = Vec::new();
        for job in jobs {
            let d = job.dest.clone();
            d.lock().push_front(job);
            if !dests.iter().any(|x| Arc::ptr_eq(x, &d)) {
                dests.push(d);
            }
        }
        for d in dests {
            self.pump(&d);
        }
    }

    /// Something that holds mail changed (a suspension started or ended,
    /// a pause was lifted, a source came back, a reload): paths that
    /// cannot send give their ready jobs back, and every destination is
    /// pumped again.
    pub(crate) fn holds_changed(self: &Arc<Self>) {
        let holds = self.scheduler.holds.get(&self.settings.shaper.actions);
        for p in self.live_paths() {
            let jobs = match p.send_hold(self) {
                Some(_) => p.take_ready(),
                None => p.remove_ready(|j| holds.holds(&j.dest.pool, j.tenant(), &j.domain)),
            };
            self.requeue(jobs);
        }
        for d in self.scheduler.dests() {
            self.pump(&d);
        }
    }

    /// The fleet changed the actions here (another node's suspension,
    /// slow-down, pause or cancel): each path takes up its slow-down as
    /// the actions now say, then holds are looked at again.
    pub fn actions_changed(self: &Arc<Self>) {
        for p in self.live_paths() {
            p.drop_lost_slowdown(self);
            p.restore_slowdown(self);
        }
        self.holds_changed();
    }
}
