//! The last hour of this node's rates, for the status page: running totals
//! of messages received and of recipients delivered, deferred and bounced,
//! sampled every 10 seconds into a ring of an hour. Counting costs one
//! relaxed atomic add per event; sampling happens on the metrics' upkeep
//! tick, never on the mail's path. It never exports anything (Prometheus
//! has the counters).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted.
#[derive(Debug, Clone, Copy)]
pub enum Series {
    /// Messages accepted.
    Received = 0,
    /// Recipients delivered.
    Delivered = 1,
    /// Recipients deferred.
    Deferred = 2,
    /// Recipients bounced or expired.
    Bounced = 3,
}

/// Seconds between samples.
pub const STEP: u64 = 10;
/// Samples kept: an hour.
const KEEP: usize = 360;

/// Totals, and their samples over the last hour.
#[derive(Default)]
pub struct Trend {
    totals: [AtomicU64; 4],
    /// (seconds since the Unix epoch, totals then), oldest first.
    ring: Mutex<VecDeque<(u64, [u64; 4])>>,
}

impl Trend {
    /// One more event of `s`.
    pub fn count(&self, s: Series) {
        self.totals[s as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the totals at `now` (seconds) when the last sample is at
    /// least a step old.
    pub fn sample(&self, now: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.back().is_some_and(|(t, _)| now < t + STEP) {
            return;
        }
        let totals = self.totals.each_ref().map(|t| t.load(Ordering::Relaxed));
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back((now, totals));
    }

    /// Events per second of each series over about the last `secs`
    /// (between the newest sample and the oldest one within `secs` of it).
    pub fn rates(&self, secs: u64) -> [f64; 4] {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let Some(&(t1, last)) = ring.back() else {
            return [0.0; 4];
        };
        let Some(&(t0, first)) = ring.iter().find(|(t, _)| t1 - t <= secs) else {
            return [0.0; 4];
        };
        let span = (t1 - t0).max(1) as f64;
        std::array::from_fn(|i| last[i].saturating_sub(first[i]) as f64 / span)
    }

    /// Per step of the last hour: (seconds since the epoch, events per
    /// second of each series during the step that ended then).
    pub fn steps(&self) -> Vec<(u64, [f64; 4])> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .zip(ring.iter().skip(1))
            .map(|((t0, a), (t1, b))| {
                let span = (t1 - t0).max(1) as f64;
                (
                    *t1,
                    std::array::from_fn(|i| b[i].saturating_sub(a[i]) as f64 / span),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_samples_within_the_window() {
        let t = Trend::default();
        t.sample(1000);
        for _ in 0..50 {
            t.count(Series::Received);
        }
        t.sample(1005); // too soon: not kept
        t.sample(1010);
        for _ in 0..100 {
            t.count(Series::Delivered);
        }
        t.sample(1020);
        assert_eq!(t.rates(60), [2.5, 5.0, 0.0, 0.0]);
        assert_eq!(t.rates(10), [0.0, 10.0, 0.0, 0.0], "only the last step");
        let steps = t.steps();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0], (1010, [5.0, 0.0, 0.0, 0.0]));
        for i in 0..KEEP as u64 + 10 {
            t.sample(2000 + i * STEP);
        }
        assert_eq!(t.steps().len(), KEEP - 1, "an hour is kept");
    }
}
