//! An egress path's ready queue: the jobs moved to it from their
//! destinations' scheduled queues, one lane per priority class, and within
//! a lane one FIFO per tenant served in turn (round robin, one message
//! each), so a worker always takes the most urgent class and, in it, the
//! next tenant's oldest job. A password reset moved in behind a campaign
//! leaves on the next free slot. It is kept short (`max_ready`): the
//! scheduled queues decide the shares. Never sends or decides anything
//! else.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use queue::LOWEST_PRIORITY;

use super::super::job::Job;

const LANES: usize = LOWEST_PRIORITY as usize + 1;

/// A tenant, as a hash of its name (a collision only merges two turns).
type TenantKey = u64;

fn tenant_of(job: &Job) -> TenantKey {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(job.tenant())
}

fn lane_of(job: &Job) -> usize {
    usize::from(job.priority).min(LANES - 1)
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

/// Waiting jobs by priority, then tenant, with their count and size.
#[derive(Default)]
pub(crate) struct Lanes {
    lanes: [Lane; LANES],
    len: usize,
    bytes: u64,
}

impl Lanes {
    fn count(&mut self, job: &Job, add: bool) {
        match add {
            true => (self.len, self.bytes) = (self.len + 1, self.bytes + u64::from(job.size)),
            false => {
                self.len = self.len.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(u64::from(job.size));
            }
        }
    }

    /// Queues a job at the back of its tenant's queue in its class.
    pub fn push(&mut self, job: Job) {
        self.count(&job, true);
        let lane = lane_of(&job);
        self.lanes[lane].push(job, false);
    }

    /// Puts a job back first in line (it was taken, and is given back
    /// while its worker waits for a send slot).
    pub fn push_front(&mut self, job: Job) {
        self.count(&job, true);
        let lane = lane_of(&job);
        self.lanes[lane].push(job, true);
    }

    /// The next job: the most urgent class, the next tenant in turn.
    pub fn pop(&mut self) -> Option<Job> {
        self.pop_fitting(|_| true)
    }

    /// Like [`Lanes::pop`], among the jobs `fits` accepts.
    pub fn pop_fitting(&mut self, fits: impl Fn(&Job) -> bool) -> Option<Job> {
        let job = self.lanes.iter_mut().find_map(|l| l.pop_fitting(&fits))?;
        self.count(&job, false);
        Some(job)
    }

    /// Every waiting job, most urgent first.
    pub fn drain(&mut self) -> Vec<Job> {
        let mut out = Vec::new();
        for lane in &mut self.lanes {
            lane.turns.clear();
            out.extend(lane.queues.drain().flat_map(|(_, q)| q));
        }
        (self.len, self.bytes) = (0, 0);
        out
    }

    /// Takes out the jobs `drop` selects.
    pub fn remove(&mut self, mut drop: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let (gone, kept): (Vec<Job>, Vec<Job>) = self.drain().into_iter().partition(|j| drop(j));
        for j in kept {
            self.push(j);
        }
        gone
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Their body bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every waiting job (for views), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.lanes
            .iter()
            .flat_map(|l| l.queues.values().flat_map(|q| q.iter()))
    }
}
