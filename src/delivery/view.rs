//! What operators see of delivery now: each egress path's waiting jobs,
//! connections and recent sending rate, for the admin API, the status
//! page and `/metrics`. Reads state; never changes it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Delivery;
use crate::admin::types::PathRow;

const WINDOW: Duration = Duration::from_secs(60);

/// Messages sent over a sliding minute: the count of the current window
/// plus the previous window's, weighted by how much of it still overlaps.
#[derive(Debug)]
pub(crate) struct Meter(Mutex<(Instant, u64, u64)>);

impl Default for Meter {
    fn default() -> Self {
        Self(Mutex::new((Instant::now(), 0, 0)))
    }
}

impl Meter {
    fn roll(w: &mut (Instant, u64, u64), now: Instant) {
        let elapsed = now.saturating_duration_since(w.0);
        if elapsed >= WINDOW * 2 {
            *w = (now, 0, 0);
        } else if elapsed >= WINDOW {
            *w = (w.0 + WINDOW, 0, w.1);
        }
    }

    /// Counts `n` messages sent now.
    pub fn add(&self, n: u64) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Self::roll(&mut w, Instant::now());
        w.1 += n;
    }

    /// Messages sent over the last minute (estimated).
    pub fn last_minute(&self) -> u64 {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Self::roll(&mut w, now);
        let into = now.saturating_duration_since(w.0).as_secs_f64() / WINDOW.as_secs_f64();
        w.1 + (w.2 as f64 * (1.0 - into.min(1.0))).round() as u64
    }
}

impl Delivery {
    /// Every egress path now, busiest first.
    pub fn paths(&self) -> Vec<PathRow> {
        let paths = self.live_paths();
        let now = self.clock.now();
        let mut rows: Vec<PathRow> = paths
            .iter()
            .map(|p| {
                let st = p.state();
                let (mut waiting, mut rcpts, mut oldest) = (0u64, 0u64, 0u64);
                for job in st.jobs.iter() {
                    waiting += 1;
                    rcpts += job.rcpts.len() as u64;
                    let age = now.saturating_since(job.attempt.info.arrival).as_secs();
                    oldest = oldest.max(age);
                }
                PathRow {
                    source: p.source.name.to_string(),
                    site: p.site.to_string(),
                    provider: p.plan.provider.as_deref().map(str::to_owned),
                    waiting,
                    waiting_recipients: rcpts,
                    oldest_secs: oldest,
                    connections: u64::from(st.connected),
                    workers: u64::from(st.workers),
                    sent_last_minute: p.sent.last_minute(),
                    paused: st.paused_until.is_some_and(|u| u > Instant::now()),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.waiting + b.sent_last_minute)
                .cmp(&(a.waiting + a.sent_last_minute))
                .then_with(|| (&a.source, &a.site).cmp(&(&b.source, &b.site)))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_meter_slides_over_a_minute() {
        let m = Meter::default();
        m.add(60);
        assert_eq!(m.last_minute(), 60);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(
            m.last_minute(),
            30,
            "half of the last window still overlaps"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(m.last_minute(), 0);
    }
}
