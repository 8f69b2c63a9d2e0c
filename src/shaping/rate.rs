//! GCRA (generic cell rate algorithm): a rate limit with a burst, kept as
//! one timestamp per limited key, with no timer per event.
//!
//! For a rate of `count` per `per` with a burst of `b`, each event advances
//! a "theoretical arrival time" (TAT) by `per / count`; an event is allowed
//! while TAT is no more than `(b - 1) * per / count` ahead of now.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::values::Rate;

/// A rate limit; the per-key state is an `Option<Instant>` (the TAT).
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    interval: Duration,
    tolerance: Duration,
}

impl Gcra {
    /// The limiter for `rate`.
    pub fn new(rate: Rate) -> Self {
        let interval = rate.per / u32::try_from(rate.count.max(1)).unwrap_or(u32::MAX);
        let burst = u32::try_from(rate.burst().max(1)).unwrap_or(u32::MAX);
        Self {
            interval,
            tolerance: interval * (burst - 1),
        }
    }

    /// The limiter for `rate` scaled by `scale` (0 < scale <= 1): the same
    /// burst, events `1 / scale` times further apart.
    pub fn scaled(rate: Rate, scale: f64) -> Self {
        let g = Self::new(rate);
        let scale = scale.clamp(1e-6, 1.0);
        let interval = g.interval.div_f64(scale);
        let burst = u32::try_from(rate.burst().max(1)).unwrap_or(u32::MAX);
        Self {
            interval,
            tolerance: interval * (burst - 1),
        }
    }

    /// The time between two events.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How far ahead of now the state may be while events are allowed.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// The state of a limiter that has just used its whole burst at
    /// `now`: the next event is allowed one interval later.
    pub fn full_at(&self, now: Instant) -> Instant {
        now + self.interval + self.tolerance
    }

    /// Would an event at `now` be allowed? Does not count it.
    pub fn allows(&self, tat: Option<Instant>, now: Instant) -> bool {
        tat.is_none_or(|t| t.saturating_duration_since(now) <= self.tolerance)
    }

    /// The earliest time an event would be allowed, given the state.
    pub fn earliest(&self, tat: Option<Instant>, now: Instant) -> Instant {
        match tat {
            Some(t) if t > now + self.tolerance => t - self.tolerance,
            _ => now,
        }
    }

    /// Counts an event at `now`; returns false if it exceeded the limit
    /// (it is counted anyway, so persistent offenders stay limited).
    pub fn record(&self, tat: &mut Option<Instant>, now: Instant) -> bool {
        let allowed = self.allows(*tat, now);
        let base = tat.map_or(now, |t| t.max(now));
        *tat = Some(base + self.interval);
        allowed
    }

    /// True once a key's state no longer limits anything (it may be dropped).
    pub fn is_idle(&self, tat: Option<Instant>, now: Instant) -> bool {
        tat.is_none_or(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let g = Gcra::new("6/m,burst=3".parse().unwrap()); // one per 10 s, 3 at once
        let mut tat = None;
        let t0 = Instant::now();
        assert!(g.record(&mut tat, t0));
        assert!(g.record(&mut tat, t0));
        assert!(g.record(&mut tat, t0));
        assert!(!g.allows(tat, t0), "burst used up");
        assert!(
            g.allows(tat, t0 + Duration::from_secs(10)),
            "one more after an interval"
        );
        assert!(!g.record(&mut tat, t0 + Duration::from_secs(1)));
        assert!(!g.is_idle(tat, t0 + Duration::from_secs(30)));
        assert!(g.is_idle(tat, t0 + Duration::from_secs(41)));
    }
}
