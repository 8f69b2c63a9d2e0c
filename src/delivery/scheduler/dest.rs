//! A destination's scheduled queue: the jobs of one pool to one site (or
//! to one domain shaped apart) that wait for room at an egress path.
//!
//! Jobs wait by priority class, then per tenant; within a class tenants
//! take turns by weight (deficit round robin: a tenant of weight 3 moves
//! three jobs per turn of a tenant of weight 1), so one tenant's campaign
//! delays another tenant's mail by no more than its share. A tenant that
//! may not send now (suspended, or over its total rate) is passed over
//! without losing its place; a job whose domain is suspended is parked
//! until the suspension ends. Holds nothing but the jobs (metadata); never
//! sends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use queue::LOWEST_PRIORITY;
use tokio::time::Instant;

use super::super::job::Job;

const CLASSES: usize = LOWEST_PRIORITY as usize + 1;

/// A tenant's turn in a class: may its next job go now?
pub(crate) enum Turn {
    /// Yes.
    Go,
    /// Not before this time (a total rate), or until told (`None`: a
    /// suspension, whose end wakes every destination).
    Wait(Option<Instant>),
}

/// One tenant's jobs in one class.
#[derive(Default)]
struct Lane {
    jobs: VecDeque<Job>,
    /// Jobs it may still move in its current turn.
    deficit: u32,
}

/// One priority class: a lane per tenant and the order of their turns.
#[derive(Default)]
struct Class {
    turns: VecDeque<Option<Arc<str>>>,
    lanes: HashMap<Option<Arc<str>>, Lane>,
}

impl Class {
    fn push(&mut self, job: Job, front: bool) {
        let lane = self.lanes.entry(job.tenant.clone()).or_default();
        if lane.jobs.is_empty() {
            self.turns.push_back(job.tenant.clone());
        }
        match front {
            true => lane.jobs.push_front(job),
            false => lane.jobs.push_back(job),
        }
    }

    /// The next job of the first tenant whose turn it is and who may go;
    /// `Err` with the earliest time one may (if any) when none can.
    fn pop(
        &mut self,
        turn: &mut impl FnMut(Option<&str>) -> Turn,
        weight: &impl Fn(Option<&str>) -> u32,
    ) -> Result<Job, Option<Instant>> {
        let mut wait: Option<Instant> = None;
        for _ in 0..self.turns.len() {
            let Some(t) = self.turns.front().cloned() else {
                break;
            };
            if let Turn::Wait(at) = turn(t.as_deref()) {
                if let Some(at) = at {
                    wait = Some(wait.map_or(at, |w| w.min(at)));
                }
                self.turns.rotate_left(1);
                continue;
            }
            let Some(lane) = self.lanes.get_mut(&t) else {
                self.turns.pop_front();
                continue;
            };
            if lane.deficit == 0 {
                lane.deficit = weight(t.as_deref()).max(1);
            }
            let job = lane.jobs.pop_front();
            lane.deficit -= 1;
            if lane.jobs.is_empty() {
                self.lanes.remove(&t);
                self.turns.pop_front();
            } else if lane.deficit == 0 {
                self.turns.rotate_left(1);
            }
            if let Some(job) = job {
                return Ok(job);
            }
        }
        Err(wait)
    }

    fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.lanes.values().flat_map(|l| l.jobs.iter())
    }

    /// Removes the jobs `drop` selects (from anywhere in the lanes).
    fn retain(&mut self, drop: &mut impl FnMut(&Job) -> bool, out: &mut Vec<Job>) {
        for lane in self.lanes.values_mut() {
            let mut kept = VecDeque::with_capacity(lane.jobs.len());
            for j in lane.jobs.drain(..) {
                match drop(&j) {
                    true => out.push(j),
                    false => kept.push_back(j),
                }
            }
            lane.jobs = kept;
        }
        self.lanes.retain(|_, l| !l.jobs.is_empty());
        let lanes = &self.lanes;
        self.turns.retain(|t| lanes.contains_key(t));
    }

    /// Removes the jobs at the front of each lane that `drop` selects.
    fn drain_fronts(&mut self, drop: &mut impl FnMut(&Job) -> bool, out: &mut Vec<Job>) {
        for lane in self.lanes.values_mut() {
            while lane.jobs.front().is_some_and(&mut *drop) {
                out.extend(lane.jobs.pop_front());
            }
        }
        self.lanes.retain(|_, l| !l.jobs.is_empty());
        let lanes = &self.lanes;
        self.turns.retain(|t| lanes.contains_key(t));
    }
}

/// The changing part of a destination, under its lock.
#[derive(Default)]
pub(crate) struct Queued {
    classes: [Class; CLASSES],
    /// Jobs whose domain is suspended, until it is not.
    parked: Vec<Job>,
    jobs: u64,
    rcpts: u64,
    /// Why it waits now, if it does (for the views).
    pub held: Option<String>,
    /// The earliest wake-up asked of the scheduler, if any.
    pub wake_at: Option<Instant>,
}

impl Queued {
    fn count(&mut self, job: &Job, add: bool) {
        let r = job.rcpts.len() as u64;
        match add {
            true => (self.jobs, self.rcpts) = (self.jobs + 1, self.rcpts + r),
            false => {
                self.jobs = self.jobs.saturating_sub(1);
                self.rcpts = self.rcpts.saturating_sub(r);
            }
        }
    }

    fn class(job: &Job) -> usize {
        usize::from(job.priority).min(CLASSES - 1)
    }

    /// Queues a job at the back of its tenant's lane.
    pub fn push(&mut self, job: Job) {
        self.count(&job, true);
        self.classes[Self::class(&job)].push(job, false);
    }

    /// Puts a job back first in its tenant's lane (its path could not
    /// send it).
    pub fn push_front(&mut self, job: Job) {
        self.count(&job, true);
        self.classes[Self::class(&job)].push(job, true);
    }

    /// The next job to move: the most urgent class, then the tenant whose
    /// turn it is and who may go (`turn`). `Err` with the earliest time a
    /// waiting tenant may go, when none can now.
    pub fn pop(
        &mut self,
        mut turn: impl FnMut(Option<&str>) -> Turn,
        weight: impl Fn(Option<&str>) -> u32,
    ) -> Result<Job, Option<Instant>> {
        let mut wait: Option<Instant> = None;
        for class in &mut self.classes {
            match class.pop(&mut turn, &weight) {
                Ok(job) => {
                    self.count(&job, false);
                    return Ok(job);
                }
                Err(Some(at)) => wait = Some(wait.map_or(at, |w| w.min(at))),
                Err(None) => {}
            }
        }
        Err(wait)
    }

    /// Parks a job whose domain is suspended.
    pub fn park(&mut self, job: Job) {
        self.count(&job, true);
        self.parked.push(job);
    }

    /// Puts the parked jobs `free` selects back in their lanes.
    pub fn unpark(&mut self, mut free: impl FnMut(&Job) -> bool) {
        let parked = std::mem::take(&mut self.parked);
        for job in parked {
            self.count(&job, false);
            match free(&job) {
                true => self.push_front(job),
                false => self.park(job),
            }
        }
    }

    /// True when some job is parked.
    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Jobs parked.
    pub fn parked_len(&self) -> u64 {
        self.parked.len() as u64
    }

    /// A parked job, if any.
    pub fn a_parked(&self) -> Option<&Job> {
        self.parked.first()
    }

    /// Jobs and recipients waiting.
    pub fn totals(&self) -> (u64, u64) {
        (self.jobs, self.rcpts)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.jobs == 0
    }

    /// Every waiting job, parked ones included, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.classes
            .iter()
            .flat_map(Class::jobs)
            .chain(self.parked.iter())
    }

    /// Takes out every job `drop` selects.
    pub fn remove(&mut self, mut drop: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let mut out = Vec::new();
        for class in &mut self.classes {
            class.retain(&mut drop, &mut out);
        }
        let (gone, kept): (Vec<Job>, Vec<Job>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|j| drop(j));
        self.parked = kept;
        out.extend(gone);
        for j in &out {
            self.count(j, false);
        }
        out
    }

    /// Takes out the jobs `drop` selects at the front of each lane (the
    /// oldest of each tenant): a sweep whose cost does not grow with the
    /// backlog.
    pub fn remove_fronts(&mut self, mut drop: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let mut out = Vec::new();
        for class in &mut self.classes {
            class.drain_fronts(&mut drop, &mut out);
        }
        for j in &out {
            self.count(j, false);
        }
        out
    }
}

/// One destination: a pool's mail to one site (or shaped domain).
pub(crate) struct Dest {
    /// The pool its mail is sent from.
    pub pool: Arc<str>,
    /// The site (its MX host set).
    pub site: Arc<str>,
    /// The key of its paths: the site, or `site|domain` for a domain
    /// shaped apart.
    pub key: Arc<str>,
    /// A domain of it (the domain, when shaped apart), for the paths'
    /// plans.
    pub domain: Arc<str>,
    state: Mutex<Queued>,
}

impl Dest {
    /// An empty destination.
    pub fn new(pool: Arc<str>, site: Arc<str>, key: Arc<str>, domain: Arc<str>) -> Self {
        Self {
            pool,
            site,
            key,
            domain,
            state: Mutex::new(Queued::default()),
        }
    }

    /// Its queue, locked.
    pub fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::route::Route;
    use queue::{MessageId, Timestamp};

    fn job(dest: &Arc<Dest>, n: u64, tenant: Option<&str>, priority: u8) -> Job {
        Job {
            id: MessageId::from_u64(n),
            handout: 1,
            rcpts: [0].into_iter().collect(),
            domain: "d.example".into(),
            route: Arc::new(Route {
                site: "mx.d.example".into(),
                hosts: Vec::new(),
                tls: crate::config::TlsPolicy::Off,
                policy: crate::tlspolicy::Applied::Configured,
            }),
            tenant: tenant.map(Arc::from),
            priority,
            arrival: Timestamp::from_millis(n),
            size: 100,
            dest: dest.clone(),
        }
    }

    fn dest() -> Arc<Dest> {
        Arc::new(Dest::new("p".into(), "s".into(), "s".into(), "d".into()))
    }

    fn order(q: &mut Queued, n: usize, weight: impl Fn(Option<&str>) -> u32) -> Vec<String> {
        (0..n)
            .map_while(|_| q.pop(|_| Turn::Go, &weight).ok())
            .map(|j| format!("{}{}", j.tenant().unwrap_or("-"), j.id.as_u64()))
            .collect()
    }

    #[test]
    fn tenants_take_turns_by_weight_within_a_class() {
        let d = dest();
        let mut q = Queued::default();
        for n in 0..8 {
            q.push(job(&d, n, Some("a"), 1));
            q.push(job(&d, 100 + n, Some("b"), 1));
        }
        let w = |t: Option<&str>| if t == Some("a") { 3 } else { 1 };
        let got = order(&mut q, 8, w);
        assert_eq!(got, ["a0", "a1", "a2", "b100", "a3", "a4", "a5", "b101"]);
        assert_eq!(q.totals(), (8, 8));
    }

    #[test]
    fn the_most_urgent_class_goes_first_and_held_tenants_keep_their_place() {
        let d = dest();
        let mut q = Queued::default();
        q.push(job(&d, 1, Some("bulk"), 3));
        q.push(job(&d, 2, Some("shop"), 3));
        q.push(job(&d, 3, Some("shop"), 0));
        let first = q.pop(|_| Turn::Go, |_| 1).unwrap();
        assert_eq!(first.id.as_u64(), 3, "high priority first");
        let later = Instant::now() + std::time::Duration::from_secs(5);
        let turn = |t: Option<&str>| match t {
            Some("bulk") => Turn::Wait(Some(later)),
            _ => Turn::Go,
        };
        assert_eq!(
            q.pop(turn, |_| 1).unwrap().id.as_u64(),
            2,
            "bulk is passed over"
        );
        let none = q.pop(|_| Turn::Wait(Some(later)), |_| 1);
        assert_eq!(none.err(), Some(Some(later)), "when the waiting one may go");
        assert_eq!(q.pop(|_| Turn::Go, |_| 1).unwrap().id.as_u64(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn parked_and_removed_jobs_leave_the_counts() {
        let d = dest();
        let mut q = Queued::default();
        for n in 0..4 {
            q.push(job(&d, n, None, 1));
        }
        let j = q.pop(|_| Turn::Go, |_| 1).unwrap();
        q.park(j);
        assert_eq!(q.totals().0, 4);
        let gone = q.remove(|j| j.id.as_u64() % 2 == 0);
        assert_eq!(gone.len(), 2, "one parked, one waiting");
        assert_eq!(q.totals().0, 2);
        let fronts = q.remove_fronts(|j| j.id.as_u64() == 1);
        assert_eq!(fronts.len(), 1);
        q.unpark(|_| true);
        assert_eq!(q.iter().count(), 1);
        assert_eq!(q.totals(), (1, 1));
    }
}
