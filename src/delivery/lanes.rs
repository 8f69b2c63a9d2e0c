//! The jobs waiting for an egress path, one FIFO lane per priority class:
//! a worker always takes the oldest job of the most urgent non-empty lane,
//! so a password reset queued behind a campaign leaves on the next free
//! connection. Never sends or decides anything else.

use std::collections::VecDeque;

use queue::LOWEST_PRIORITY;

use super::path::Job;

const LANES: usize = LOWEST_PRIORITY as usize + 1;

/// Waiting jobs by priority.
#[derive(Default)]
pub(crate) struct Lanes {
    lanes: [VecDeque<Job>; LANES],
}

impl Lanes {
    /// Queues a job at the back of its message's priority lane.
    pub fn push(&mut self, job: Job) {
        let lane = usize::from(job.attempt.info.priority).min(LANES - 1);
        self.lanes[lane].push_back(job);
    }

    /// The next job: the oldest of the most urgent lane.
    pub fn pop(&mut self) -> Option<Job> {
        self.lanes.iter_mut().find_map(VecDeque::pop_front)
    }

    /// Puts a job back at the front of its lane (it was taken, and is
    /// given back while its worker waits for a send slot).
    pub fn push_front(&mut self, job: Job) {
        let lane = usize::from(job.attempt.info.priority).min(LANES - 1);
        self.lanes[lane].push_front(job);
    }

    /// The oldest job of the most urgent lane whose front job `fits`.
    pub fn pop_fitting(&mut self, fits: impl Fn(&Job) -> bool) -> Option<Job> {
        let lane = self
            .lanes
            .iter()
            .position(|l| l.front().is_some_and(&fits))?;
        self.lanes[lane].pop_front()
    }

    /// Every waiting job, most urgent first.
    pub fn drain(&mut self) -> Vec<Job> {
        self.lanes.iter_mut().flat_map(|l| l.drain(..)).collect()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }
}
