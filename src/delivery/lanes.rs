//! The jobs waiting for an egress path: one lane per priority class, and
//! within a lane one FIFO per tenant served in turn (round robin, one
//! message each), so a worker always takes the most urgent class and, in
//! it, the next tenant's oldest job. A password reset queued behind a
//! campaign leaves on the next free slot, and one tenant's campaign cannot
//! starve another's. Never sends or decides anything else.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use queue::LOWEST_PRIORITY;

use super::path::Job;

const LANES: usize = LOWEST_PRIORITY as usize + 1;

/// A tenant, as a hash of its name (a collision only merges two turns).
type TenantKey = u64;

fn tenant_of(job: &Job) -> TenantKey {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(job.attempt.meta.tenant.as_deref())
}

fn lane_of(job: &Job) -> usize {
    usize::from(job.attempt.info.priority).min(LANES - 1)
}

/// One priority class: a queue per tenant and the order of their turns.
#[derive(Default)]
struct Lane {
    turns: VecDeque<TenantKey>,
    queues: HashMap<TenantKey, VecDeque<Job>>,
}

impl Lane {
    fn push(&mut self, job: Job, front: bool) {
        let t = tenant_of(&job);
        let q = self.queues.entry(t).or_default();
        if front {
            // A job given back: its tenant had the turn, and has it again.
            q.push_front(job);
            if let Some(i) = self.turns.iter().position(|x| *x == t) {
                self.turns.remove(i);
            }
            self.turns.push_front(t);
        } else {
            if q.is_empty() {
                self.turns.push_back(t);
            }
            q.push_back(job);
        }
    }

    /// The front job of the first tenant in turn whose front job `fits`;
    /// that tenant's turn moves to the back.
    fn pop_fitting(&mut self, fits: &impl Fn(&Job) -> bool) -> Option<Job> {
        let i = self.turns.iter().position(|t| {
            self.queues
                .get(t)
                .and_then(VecDeque::front)
                .is_some_and(fits)
        })?;
        let t = self.turns.remove(i)?;
        let q = self.queues.get_mut(&t)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&t);
        } else {
            self.turns.push_back(t);
        }
        job
    }
}

/// Waiting jobs by priority, then tenant.
#[derive(Default)]
pub(crate) struct Lanes {
    lanes: [Lane; LANES],
}

impl Lanes {
    /// Queues a job at the back of its tenant's queue in its class.
    pub fn push(&mut self, job: Job) {
        let lane = lane_of(&job);
        self.lanes[lane].push(job, false);
    }

    /// Puts a job back first in line (it was taken, and is given back
    /// while its worker waits for a send slot).
    pub fn push_front(&mut self, job: Job) {
        let lane = lane_of(&job);
        self.lanes[lane].push(job, true);
    }

    /// The next job: the most urgent class, the next tenant in turn.
    pub fn pop(&mut self) -> Option<Job> {
        self.pop_fitting(|_| true)
    }

    /// Like [`Lanes::pop`], among the jobs `fits` accepts.
    pub fn pop_fitting(&mut self, fits: impl Fn(&Job) -> bool) -> Option<Job> {
        self.lanes.iter_mut().find_map(|l| l.pop_fitting(&fits))
    }

    /// Every waiting job, most urgent first.
    pub fn drain(&mut self) -> Vec<Job> {
        let mut out = Vec::new();
        for lane in &mut self.lanes {
            lane.turns.clear();
            out.extend(lane.queues.drain().flat_map(|(_, q)| q));
        }
        out
    }

    /// Every waiting job (for views), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.lanes
            .iter()
            .flat_map(|l| l.queues.values().flat_map(|q| q.iter()))
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.turns.is_empty())
    }
}
