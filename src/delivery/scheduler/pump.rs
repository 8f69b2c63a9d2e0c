//! Pumping a destination: moving its scheduled jobs to the ready queues
//! of its pool's egress paths while they have room, each job to a source
//! chosen by weight among those that can take it now.
//!
//! A path that cannot send now (suspended, paused, its source unusable or
//! over its warm-up share) is passed over: the pool's other sources take
//! the mail. When no path can take more, the destination keeps its jobs,
//! asks the full paths to pump it again when they have room, and asks the
//! scheduler to wake it when the first hold ends. A tenant that may not
//! send now (suspended, over its total rate) is passed over in its turn;
//! a job whose domain is suspended is parked; a job past `max_age`
//! expires here.

use std::sync::Arc;

use tokio::time::Instant;

use super::super::Delivery;
use super::super::dispatch::{Path, Room};
use super::super::job::Job;
use super::dest::{Dest, Queued, Turn};
use super::holds::Holds;
use crate::egress::{Pool, Source};
use crate::shaping::Shaping;

/// What one pump reads once: the time, the holds, the limits, the
/// tenants' weights.
struct Round {
    instant: Instant,
    now: queue::Timestamp,
    holds: Arc<Holds>,
    shaping: Arc<Shaping>,
    weights: Arc<super::super::Weights>,
}

/// A path of the destination's pool, its room as last seen, and when its
/// rates allow its next message if that is later than now.
struct Candidate {
    path: Arc<Path>,
    room: Room,
    slot: Option<Instant>,
}

impl Candidate {
    fn new(path: Arc<Path>, svc: &Delivery, now: Instant) -> Self {
        let room = path.room(svc);
        let slot = Some(path.next_slot(now)).filter(|at| *at > now);
        Self { path, room, slot }
    }

    fn open(&self) -> bool {
        matches!(self.room, Room::Open(n) if n > 0)
    }

    /// It cannot take mail now whatever its room: held, or over its rate
    /// (then the pool's other sources take the mail).
    fn held(&self) -> bool {
        matches!(self.room, Room::Held(..)) || self.slot.is_some()
    }
}

/// May a tenant's next job go now?
fn turn(tenant: Option<&str>, holds: &Holds, shaping: &Shaping) -> Turn {
    let Some(t) = tenant else {
        return Turn::Go;
    };
    if let Some((until, _)) = holds.tenant(t) {
        return Turn::Wait(Some(*until));
    }
    match shaping.tenant(Some(t)).and_then(|s| s.messages.as_ref()) {
        Some(rate) => {
            let now = Instant::now();
            match rate.try_take(now) {
                true => Turn::Go,
                false => Turn::Wait(Some(rate.earliest(now))),
            }
        }
        None => Turn::Go,
    }
}

impl Delivery {
    /// Moves as many of `dest`'s jobs as its paths can take now (see the
    /// module docs).
    pub(crate) fn pump(self: &Arc<Self>, dest: &Arc<Dest>) {
        if self.stopping() {
            return;
        }
        let mut expired = Vec::new();
        {
            let mut q = dest.lock();
            q.held = None;
            if !q.is_empty() {
                self.move_jobs(dest, &mut q, &mut expired);
            }
        }
        self.expire(expired);
    }

    fn move_jobs(self: &Arc<Self>, dest: &Arc<Dest>, q: &mut Queued, expired: &mut Vec<Job>) {
        if !self.working() {
            // Resumed by the scheduler when the spool heals (or the
            // drain ends).
            q.held = Some("the spool cannot write outcomes now, or the node drains".into());
            return;
        }
        let holds = self.scheduler.holds.get(&self.settings.shaper.actions);
        if let Some((until, why)) = holds.pool(&dest.pool) {
            q.held = Some(why.clone());
            self.scheduler.wake_at(dest, q, *until);
            return;
        }
        if q.has_parked() {
            q.unpark(|j| holds.domain(&j.domain).is_none());
        }
        let egress = self.egress.get();
        let pool = egress.pool(Some(&dest.pool));
        let round = Round {
            instant: Instant::now(),
            now: self.clock.now(),
            shaping: self.settings.shaper.current(),
            weights: self.weights.get(),
            holds,
        };
        let mut paths: Vec<Candidate> = pool
            .sources()
            .map(|s| Candidate::new(self.path(s.clone(), dest), self, round.instant))
            .collect();
        loop {
            if paths.iter().all(Candidate::held) {
                self.blocked(dest, q, &paths);
                return;
            }
            let Some(job) = self.next_job(dest, q, &round, expired) else {
                return;
            };
            if !self.move_one(dest, q, (&pool, &mut paths), job, round.instant) {
                return;
            }
        }
    }

    /// The next job that may go, by priority and tenants' turns: a job
    /// past `max_age` goes to `expired`, one whose domain is suspended is
    /// parked. `None` when no tenant's job may go now (the destination
    /// says why, and is woken when the first may).
    fn next_job(
        &self,
        dest: &Arc<Dest>,
        q: &mut Queued,
        r: &Round,
        expired: &mut Vec<Job>,
    ) -> Option<Job> {
        let max_age = self.settings.max_age;
        loop {
            let job = match q.pop(|t| turn(t, &r.holds, &r.shaping), |t| r.weights.of(t)) {
                Ok(job) => job,
                Err(at) => {
                    let parked = q.a_parked().and_then(|j| r.holds.domain(&j.domain));
                    q.held = Some(match parked {
                        Some((_, why)) if q.totals().0 == q.parked_len() => why.clone(),
                        _ => "its tenants are suspended or over their total rates".into(),
                    });
                    if let Some(at) = at {
                        self.scheduler.wake_at(dest, q, at);
                    }
                    return None;
                }
            };
            if r.now.saturating_since(job.arrival) >= max_age {
                expired.push(job);
                continue;
            }
            if let Some((until, _)) = r.holds.domain(&job.domain) {
                let until = *until;
                q.park(job);
                self.scheduler.wake_at(dest, q, until);
                continue;
            }
            return Some(job);
        }
    }

    /// Moves `job` to the path of the source whose turn it is, with a send
    /// slot; false (the job back in its queue) when that path is full: the
    /// destination waits for its room.
    fn move_one(
        self: &Arc<Self>,
        dest: &Arc<Dest>,
        q: &mut Queued,
        (pool, paths): (&Pool, &mut [Candidate]),
        job: Job,
        now: Instant,
    ) -> bool {
        let find = |s: &Source| paths.iter().position(|c| c.path.source.name == s.name);
        let picked = pool.pick_where(
            |s| find(s).is_some_and(|i| !paths[i].held()),
            |s| find(s).is_some_and(|i| paths[i].open()),
        );
        let source = match picked {
            Ok(source) => source,
            Err(full) => {
                // Its turn goes to a path that is full: the weights hold,
                // the mail waits for that path's room.
                q.push_front(job);
                match full.and_then(|s| find(&s)) {
                    Some(i) => {
                        let path = &paths[i].path;
                        path.wait_for_room(dest);
                        let why = format!(
                            "waiting for room at path {} -> {}",
                            path.source.name, path.site
                        );
                        q.held = Some(why);
                    }
                    None => self.blocked(dest, q, paths),
                }
                return false;
            }
        };
        let Some(i) = find(&source) else {
            q.push_front(job);
            return false;
        };
        let c = &mut paths[i];
        if !c.path.take_slot(now) {
            *c = Candidate::new(c.path.clone(), self, now);
            q.push_front(job);
            return true;
        }
        if c.path.source.warming() && !c.path.warmup_take(self) {
            c.room = c.path.room(self);
            q.push_front(job);
            return true;
        }
        c.path.push(self, job);
        c.room = match c.room {
            Room::Open(n) if n > 1 => Room::Open(n - 1),
            _ => c.path.room(self),
        };
        c.slot = Some(c.path.next_slot(now)).filter(|at| *at > now);
        true
    }

    /// No path can send now: wait for the end of the first hold.
    fn blocked(&self, dest: &Arc<Dest>, q: &mut Queued, paths: &[Candidate]) {
        let mut wake: Option<Instant> = None;
        let mut why: Option<String> = None;
        let mut earliest = |u: Instant| wake = Some(wake.map_or(u, |x: Instant| x.min(u)));
        for c in paths {
            match &c.room {
                Room::Held(until, w) => {
                    until.map(&mut earliest);
                    why.get_or_insert_with(|| w.clone());
                }
                _ => {
                    if let Some(at) = c.slot {
                        // Waiting a little past the first slot lets one
                        // wake-up move the slots of a few ms at once
                        // (within the rate's burst), rather than one.
                        earliest(at + c.path.slot_batch());
                        why.get_or_insert_with(|| "waiting for its paths' rates".into());
                    }
                }
            }
        }
        q.held = Some(why.unwrap_or_else(|| format!("pool {} has no source", dest.pool)));
        if let Some(at) = wake {
            self.scheduler.wake_at(dest, q, at);
        }
    }
}
