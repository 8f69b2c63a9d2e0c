//! Gradual slow-down of one egress path (AIMD): a push-back reply halves
//! its message rate, never below a floor; each delivered message gives
//! back a twentieth of the full rate, until the path is whole again. The
//! rate is the path's own GCRA limiter, scaled, so what it counted before
//! the push-back still counts (a slow-down never lets a burst through);
//! no timer, no per-message state.

use std::sync::{Arc, Mutex};

use super::limiter::Limiter;
use crate::config::values::Rate;

/// Share of the full rate a delivered message gives back.
pub const STEP: f64 = 0.05;
/// Share of the rate a push-back keeps.
pub const DECREASE: f64 = 0.5;

/// The adaptive rate of one path.
#[derive(Debug)]
pub struct Aimd {
    limiter: Arc<Limiter>,
    /// The lowest scale (floor / full rate).
    floor: f64,
    /// The scale in force, 1.0 when whole.
    scale: Mutex<f64>,
}

fn per_second(r: Rate) -> f64 {
    r.count as f64 / r.per.as_secs_f64().max(1e-9)
}

impl Aimd {
    /// Slows down the path whose message rate `limiter` keeps (its full
    /// rate), never below `floor`.
    pub fn new(limiter: Arc<Limiter>, floor: Rate) -> Self {
        let full = limiter.rate();
        Self {
            limiter,
            floor: (per_second(floor) / per_second(full)).clamp(1e-6, 1.0),
            scale: Mutex::new(1.0),
        }
    }

    /// The limiter to pace messages with.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The same, shared (a reload keeps a slow-down whose limiter stays).
    pub fn limiter_arc(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    fn scale(&self) -> std::sync::MutexGuard<'_, f64> {
        self.scale.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A push-back: multiplicative decrease. Returns the new messages per
    /// second.
    pub fn decrease(&self) -> f64 {
        let mut s = self.scale();
        *s = (*s * DECREASE).max(self.floor);
        self.limiter.set_scale(*s);
        *s * per_second(self.limiter.rate())
    }

    /// A delivered message: additive increase. Returns true when the path
    /// just became whole again.
    pub fn increase(&self) -> bool {
        let mut s = self.scale();
        if *s >= 1.0 {
            return false;
        }
        *s = (*s + STEP).min(1.0);
        self.limiter.set_scale(*s);
        *s >= 1.0
    }

    /// Runs at `per_second` (within the floor and the full rate): a
    /// slow-down put back after a restart.
    pub fn set_rate(&self, per_second: f64) {
        let mut s = self.scale();
        *s = (per_second / self::per_second(self.limiter.rate())).clamp(self.floor, 1.0);
        self.limiter.set_scale(*s);
    }

    /// Back at the full rate at once (the rule that slowed it is gone).
    pub fn reset(&self) {
        let mut s = self.scale();
        *s = 1.0;
        self.limiter.set_scale(1.0);
    }

    /// The messages per second in force.
    pub fn current(&self) -> f64 {
        *self.scale() * per_second(self.limiter.rate())
    }

    /// True while slowed down.
    pub fn slowed(&self) -> bool {
        *self.scale() < 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_push_back_to_a_floor_and_climbs_back_in_steps() {
        let full = Arc::new(Limiter::new("60/m".parse().unwrap()));
        let a = Aimd::new(full, "10/m".parse().unwrap());
        assert!(!a.slowed());
        assert!((a.decrease() - 0.5).abs() < 1e-9, "60/m -> 30/m");
        assert!((a.decrease() - 0.25).abs() < 1e-9);
        let floor = 10.0 / 60.0;
        assert!((a.decrease() - floor).abs() < 1e-9, "never below the floor");
        assert!((a.decrease() - floor).abs() < 1e-9);
        let mut steps = 0;
        while !a.increase() {
            steps += 1;
            assert!(steps < 100);
        }
        assert_eq!(steps + 1, 17, "(1 - 1/6) / 0.05 steps back to whole");
        assert!(!a.slowed() && !a.increase());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_down_keeps_what_the_rate_counted() {
        use tokio::time::{Duration, Instant};
        let rate = Arc::new(Limiter::new("60/m,burst=3".parse().unwrap()));
        let now = Instant::now();
        assert!((0..3).all(|_| rate.try_take(now)), "the burst is spent");
        let a = Aimd::new(rate.clone(), "6/m".parse().unwrap());
        a.decrease();
        assert!(
            !a.limiter().try_take(now),
            "no fresh burst after a push-back"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            a.limiter().try_take(Instant::now()),
            "when the old rate allowed one"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !a.limiter().try_take(Instant::now()),
            "then at half the rate"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(a.limiter().try_take(Instant::now()), "2 s apart");
    }
}
