//! Run-time limiters: a rate ([`Limiter`], GCRA: one timestamp, no timer
//! per event) and a connection limit (a semaphore whose permits are RAII
//! leases), grouped in a [`Scope`] that several egress paths share.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::rate::Gcra;
use crate::config::values::Rate;

/// One rate limit and its state.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    /// The limiter in force (the rate, possibly scaled down) and the TAT.
    state: Mutex<(Gcra, Option<Instant>)>,
}

impl Limiter {
    /// A limiter for `rate`, with nothing counted yet.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: Mutex::new((Gcra::new(rate), None)),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Gcra, Option<Instant>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs at `scale` times the configured rate from now on.
    pub fn set_scale(&self, scale: f64) {
        self.state().0 = Gcra::scaled(self.rate, scale);
    }

    /// The earliest time an event would be allowed.
    pub fn earliest(&self, now: Instant) -> Instant {
        let st = self.state();
        st.0.earliest(st.1, now)
    }

    /// Counts an event at `now` if it is allowed; false (and nothing
    /// counted) otherwise.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut st = self.state();
        let (gcra, tat) = &mut *st;
        if !gcra.allows(*tat, now) {
            return false;
        }
        gcra.record(tat, now);
        true
    }
}

/// Waits until every limiter allows one event, then counts it in each.
/// Another waiter may take a slot first; then this one waits again.
pub async fn pace(limiters: &[&Limiter]) {
    if limiters.is_empty() {
        return;
    }
    loop {
        let now = Instant::now();
        let at = limiters
            .iter()
            .map(|l| l.earliest(now))
            .max()
            .unwrap_or(now);
        if at > now {
            tokio::time::sleep_until(at).await;
            continue;
        }
        // All allowed a moment ago; take each (a race lost on one leaves
        // the others counted: that errs on the slow side).
        if limiters.iter().all(|l| l.try_take(now)) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Limits shared by every egress path of a provider, a domain or a source.
#[derive(Debug)]
pub struct Scope {
    /// What it is: `provider gmail`, `domain example.com`, `source ip1`.
    pub name: String,
    /// Messages over all its paths.
    pub messages: Option<Limiter>,
    /// New connections over all its paths.
    pub connection_rate: Option<Limiter>,
    /// Connections open at once over all its paths.
    pub connections: Option<Arc<Semaphore>>,
    /// The configured connection limit.
    pub connection_limit: Option<u32>,
}

impl Scope {
    /// A scope with these totals.
    pub fn new(
        name: String,
        messages: Option<Rate>,
        connection_rate: Option<Rate>,
        connection_limit: Option<u32>,
    ) -> Self {
        Self {
            name,
            messages: messages.map(Limiter::new),
            connection_rate: connection_rate.map(Limiter::new),
            connections: connection_limit.map(|n| Arc::new(Semaphore::new(n as usize))),
            connection_limit,
        }
    }

    /// Waits for a connection slot; the lease frees it when dropped.
    pub async fn lease(&self) -> Option<OwnedSemaphorePermit> {
        match &self.connections {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn pace_spaces_events_by_the_slowest_limiter() {
        let fast = Limiter::new("10/s,burst=1".parse().unwrap());
        let slow = Limiter::new("2/s,burst=1".parse().unwrap());
        let t0 = Instant::now();
        let mut at = Vec::new();
        for _ in 0..4 {
            pace(&[&fast, &slow]).await;
            at.push(t0.elapsed());
        }
        let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1000, 1500]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_rate_holds() {
        let l = Limiter::new("60/m,burst=3".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            pace(&[&l]).await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
        pace(&[&l]).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert!(
            !l.try_take(Instant::now()),
            "the next slot is a second away"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leases_hold_connection_slots_until_dropped() {
        let s = Scope::new("provider p".into(), None, None, Some(2));
        let a = s.lease().await.unwrap();
        let _b = s.lease().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(1), s.lease()).await;
        assert!(third.is_err(), "a third connection waits");
        drop(a);
        assert!(s.lease().await.is_some(), "a freed slot is taken");
        let open = Scope::new("domain d".into(), None, None, None);
        assert!(open.lease().await.is_none(), "no limit, no lease");
    }
}
