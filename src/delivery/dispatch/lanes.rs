//! An egress path's ready queue: the jobs its destinations moved to it,
//! one FIFO per priority class, so a worker always takes the most urgent
//! class's oldest job (a password reset moved in behind a campaign leaves
//! on the next free connection). The order within a class is the order
//! the scheduled queues chose (tenants by weight), kept as it is. Never
//! sends or decides anything else.

use std::collections::VecDeque;

use queue::LOWEST_PRIORITY;

use super::super::job::Job;

const LANES: usize = LOWEST_PRIORITY as usize + 1;

fn lane_of(job: &Job) -> usize {
    usize::from(job.priority).min(LANES - 1)
}

/// Ready jobs by priority, with their count and size.
#[derive(Default)]
pub(crate) struct Lanes {
    lanes: [VecDeque<Job>; LANES],
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

    /// Queues a job at the back of its class.
    pub fn push(&mut self, job: Job) {
        self.count(&job, true);
        self.lanes[lane_of(&job)].push_back(job);
    }

    /// The next job: the most urgent class's oldest.
    pub fn pop(&mut self) -> Option<Job> {
        let job = self.lanes.iter_mut().find_map(VecDeque::pop_front)?;
        self.count(&job, false);
        Some(job)
    }

    /// Every waiting job, most urgent first.
    pub fn drain(&mut self) -> Vec<Job> {
        let mut out = Vec::with_capacity(self.len);
        for lane in &mut self.lanes {
            out.extend(lane.drain(..));
        }
        (self.len, self.bytes) = (0, 0);
        out
    }

    /// Takes out the jobs `drop` selects, keeping the others in order.
    pub fn remove(&mut self, mut drop: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let mut gone = Vec::new();
        for lane in &mut self.lanes {
            let mut kept = VecDeque::with_capacity(lane.len());
            for j in lane.drain(..) {
                match drop(&j) {
                    true => gone.push(j),
                    false => kept.push_back(j),
                }
            }
            *lane = kept;
        }
        for j in &gone {
            self.count(j, false);
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
        self.lanes.iter().flat_map(|l| l.iter())
    }
}
