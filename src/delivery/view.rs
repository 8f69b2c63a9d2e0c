//! What operators see of delivery now: each destination's scheduled
//! jobs and why they wait, each egress path's ready jobs, sends,
//! connections and recent sending rate, for the admin API, the status
//! page and `/metrics`. Reads state; never changes it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Delivery;
use crate::views::{DestRow, PathRow, SourceRow};

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
                let (ready, rcpts, oldest) = p.ready_totals();
                let held = p.hold(self).map(|(_, why)| why);
                let st = p.state();
                PathRow {
                    source: p.source.name.to_string(),
                    site: p.key.to_string(),
                    provider: p.plan.provider.as_deref().map(str::to_owned),
                    waiting: ready,
                    waiting_recipients: rcpts,
                    oldest_secs: oldest.map_or(0, |t| now.saturating_since(t).as_secs()),
                    sending: u64::from(st.sending),
                    connections: u64::from(st.connected),
                    workers: u64::from(st.workers),
                    sent_last_minute: p.sent.last_minute(),
                    paused: held.is_some(),
                    held,
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

    /// Delivery now: paths, destinations, and messages held for their
    /// outcomes.
    pub fn state(&self) -> crate::views::DeliveryState {
        crate::views::DeliveryState {
            sources: self.sources(),
            paths: self.paths(),
            dests: self.destinations(),
            unrecorded: self.unwritten.len() as u64,
        }
    }

    /// Every egress source of the config in force, by name.
    pub fn sources(&self) -> Vec<SourceRow> {
        let now = Instant::now();
        let egress = self.egress.get();
        let mut rows: Vec<SourceRow> = egress
            .all_sources()
            .map(|(s, shared)| {
                let rest = s.unusable().filter(|(until, _)| *until > now);
                SourceRow {
                    name: s.name.to_string(),
                    address: s.address.map(|a| a.to_string()),
                    proxy: s.proxy.as_ref().map(|p| p.public()),
                    ehlo: s.ehlo.clone(),
                    shared,
                    usable: rest.is_none(),
                    held: rest.map(|(until, why)| {
                        let secs = until.saturating_duration_since(now).as_secs();
                        format!("{why} (for {secs} s more)")
                    }),
                    proxy_failures: crate::egress::PROXY_REASONS
                        .iter()
                        .zip(s.proxy_failures())
                        .map(|(r, n)| ((*r).to_owned(), n))
                        .collect(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// Messages held because the spool could not write their outcomes.
    pub fn unrecorded(&self) -> usize {
        self.unwritten.len()
    }

    /// Every destination with mail scheduled or on its paths, most jobs
    /// first.
    pub fn destinations(&self) -> Vec<DestRow> {
        let now = self.clock.now();
        let paths = self.paths();
        let shaper = &self.settings.shaper;
        let mut rows: Vec<DestRow> = self
            .scheduler
            .dests()
            .iter()
            .map(|d| {
                let q = d.lock();
                let (scheduled, rcpts) = q.totals();
                let oldest = q.iter().map(|j| j.arrival).min();
                let pool = self.egress.get().pool(Some(&d.pool));
                let mine = |p: &&PathRow| {
                    *p.site == *d.key && pool.sources().any(|s| *s.name == *p.source)
                };
                let (ready, sending) = paths
                    .iter()
                    .filter(mine)
                    .fold((0, 0), |(r, s), p| (r + p.waiting, s + p.sending));
                DestRow {
                    pool: d.pool.to_string(),
                    site: d.key.to_string(),
                    provider: shaper.provider_name(&d.site).map(|p| p.to_string()),
                    scheduled,
                    scheduled_recipients: rcpts,
                    oldest_secs: oldest.map_or(0, |t| now.saturating_since(t).as_secs()),
                    ready,
                    sending,
                    held: q.held.clone().filter(|_| scheduled > 0),
                }
            })
            .filter(|r| r.scheduled + r.ready + r.sending > 0)
            .collect();
        rows.sort_by(|a, b| {
            (b.scheduled + b.ready)
                .cmp(&(a.scheduled + a.ready))
                .then_with(|| (&a.site, &a.pool).cmp(&(&b.site, &b.pool)))
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
