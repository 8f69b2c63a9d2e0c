//! Run-time limiters: a rate ([`Limiter`], GCRA: one timestamp, no timer
//! per event) and a connection limit ([`Slots`], a counter whose leases
//! are RAII and whose limit a reload may change in place), grouped in a
//! [`Scope`] that several egress paths share. A reload keeps every part
//! whose setting did not change, with its state.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::rate::Gcra;
use super::shared::{Fleet, LeaseAnswer, SharedRate};
use crate::config::TotalLimitsConfig;
use crate::config::values::Rate;

/// One rate limit and its state; kept fleet-wide when it has a
/// [`SharedRate`] (its local state then serves only while the fleet's
/// store does not answer).
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    state: Mutex<Local>,
    shared: Option<Arc<SharedRate>>,
}

/// A limiter's local state.
#[derive(Debug)]
struct Local {
    /// The rate in force: the configured one scaled by `scale` and split
    /// over `nodes`.
    gcra: Gcra,
    tat: Option<Instant>,
    /// A slow-down's scale (1.0: the full rate).
    scale: f64,
    /// For a shared limit while the store does not answer: the nodes its
    /// rate is split over; 0 otherwise.
    nodes: u32,
}

impl Local {
    fn new(rate: Rate, tat: Option<Instant>) -> Self {
        Self {
            gcra: Gcra::new(rate),
            tat,
            scale: 1.0,
            nodes: 0,
        }
    }

    /// Puts `next` in force; what was counted stays counted.
    fn rescale(&mut self, next: Gcra) {
        if let Some(t) = &mut self.tat {
            let (old, new) = (self.gcra.tolerance(), next.tolerance());
            *t = match new >= old {
                true => *t + (new - old),
                false => t.checked_sub(old - new).unwrap_or(*t),
            };
        }
        self.gcra = next;
    }
}

impl Limiter {
    /// A limiter for `rate`, with nothing counted yet.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: Mutex::new(Local::new(rate, None)),
            shared: None,
        }
    }

    /// A limiter for `rate` that counts as if it had just sent a full
    /// burst at `at`: the next event waits one interval after it. For a
    /// limit that takes over from traffic already flowing (a slow-down, a
    /// restart with queued mail), so that it never lets a burst through.
    pub fn new_busy(rate: Rate, at: Instant) -> Self {
        let tat = Gcra::new(rate).full_at(at);
        Self {
            rate,
            state: Mutex::new(Local::new(rate, Some(tat))),
            shared: None,
        }
    }

    /// [`Limiter::new`], or [`Limiter::new_busy`] from `busy_since`.
    pub fn starting(rate: Rate, busy_since: Option<Instant>) -> Self {
        match busy_since {
            Some(at) => Self::new_busy(rate, at),
            None => Self::new(rate),
        }
    }

    /// The same limiter kept fleet-wide through `shared`.
    pub fn shared(mut self, shared: Option<Arc<SharedRate>>) -> Self {
        self.shared = shared;
        self
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Its key in the fleet's store, when it is kept fleet-wide.
    pub fn shared_key(&self) -> Option<&str> {
        self.shared.as_deref().map(|s| &*s.key)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Local> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs at `scale` times the configured rate from now on. What was
    /// counted stays counted: the next event is allowed no sooner than it
    /// was before the change (a wider burst window at a lower rate gives
    /// no credit back).
    pub fn set_scale(&self, scale: f64) {
        let mut st = self.state();
        st.scale = scale;
        let next = Gcra::scaled(self.rate, scale / f64::from(st.nodes.max(1)));
        st.rescale(next);
    }

    /// The fleet's rate to ask for, if the limit is shared and its store
    /// answers; else the local state is made right for going alone (a
    /// share of the rate while the store is away, starting busy so that
    /// the switch lets no burst through).
    fn remote(&self, now: Instant) -> Option<(&Arc<SharedRate>, Duration, Duration)> {
        let shared = self.shared.as_ref()?;
        let fleet = shared.fleet();
        let mut st = self.state();
        if fleet.up() {
            if st.nodes != 0 {
                st.nodes = 0;
                let next = Gcra::scaled(self.rate, st.scale);
                st.rescale(next);
            }
            let g = Gcra::scaled(self.rate, st.scale);
            return Some((shared, g.interval(), g.tolerance()));
        }
        let nodes = fleet.nodes().max(1);
        if st.nodes != nodes {
            let next = Gcra::scaled(self.rate, st.scale / f64::from(nodes));
            if st.nodes == 0 {
                st.gcra = next;
                st.tat = Some(next.full_at(now).max(st.tat.unwrap_or(now)));
            } else {
                st.rescale(next);
            }
            st.nodes = nodes;
        }
        None
    }

    /// How far ahead of now the rate may run (its burst, as time).
    pub fn tolerance(&self) -> Duration {
        self.state().gcra.tolerance()
    }

    /// The earliest time an event would be allowed.
    pub fn earliest(&self, now: Instant) -> Instant {
        if let Some((shared, interval, tol)) = self.remote(now) {
            return shared.earliest(now, interval, tol);
        }
        let st = self.state();
        st.gcra.earliest(st.tat, now)
    }

    /// Counts an event at `now` if it is allowed; false (and nothing
    /// counted) otherwise.
    pub fn try_take(&self, now: Instant) -> bool {
        if let Some((shared, interval, tol)) = self.remote(now) {
            return shared.try_take(now, interval, tol);
        }
        let mut st = self.state();
        let Local { gcra, tat, .. } = &mut *st;
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

/// A connection limit: at most `limit` leases at once. The limit can be
/// changed while leases are out (a reload): a lower one lets no new lease
/// go until enough are returned. Kept fleet-wide when it has a store
/// (each lease then also holds a slot there); while the store does not
/// answer, the node takes its share of the limit.
#[derive(Debug)]
pub struct Slots {
    limit: AtomicU32,
    used: AtomicU32,
    freed: Notify,
    shared: Option<(Arc<str>, Arc<dyn Fleet>)>,
}

/// One connection's slot, returned when dropped.
#[derive(Debug)]
pub struct Lease {
    slots: Arc<Slots>,
    /// Its slot in the fleet's store, if it holds one.
    remote: Option<u64>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slots.used.fetch_sub(1, Ordering::AcqRel);
        self.slots.freed.notify_one();
        if let (Some(id), Some((key, fleet))) = (self.remote, &self.slots.shared) {
            fleet.release(key.clone(), id);
        }
    }
}

/// How often a connection waiting for a fleet-wide slot asks again.
const LEASE_POLL: Duration = Duration::from_millis(100);

impl Slots {
    /// A limit of `limit` connections, none in use.
    pub fn new(limit: u32) -> Arc<Self> {
        Self::shared(limit, None)
    }

    /// The same, kept fleet-wide under a key of `shared`'s store.
    pub fn shared(limit: u32, shared: Option<(Arc<str>, Arc<dyn Fleet>)>) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicU32::new(limit),
            used: AtomicU32::new(0),
            freed: Notify::new(),
            shared,
        })
    }

    /// Changes the limit; leases out stay valid.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
        self.freed.notify_waiters();
    }

    /// The limit in force.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// True when the limit is kept fleet-wide.
    pub fn fleet_wide(&self) -> bool {
        self.shared.is_some()
    }

    /// Leases out now.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }

    /// How many of this node's connections may be open: all of the limit,
    /// or, for a shared limit while the store does not answer, this
    /// node's share of it.
    fn local_limit(&self) -> u32 {
        let limit = self.limit();
        match &self.shared {
            Some((_, fleet)) if !fleet.up() => limit.div_ceil(fleet.nodes().max(1)),
            _ => limit,
        }
    }

    /// A local lease if one is free now (no fleet-wide slot).
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let limit = self.local_limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < limit).then_some(u + 1)
            })
            .ok()
            .map(|_| Lease {
                slots: self.clone(),
                remote: None,
            })
    }

    /// Waits for a free slot (and, for a shared limit, one of the
    /// fleet's).
    pub async fn lease(self: &Arc<Self>) -> Lease {
        loop {
            let freed = self.freed.notified();
            if let Some(mut lease) = self.try_lease() {
                let Some((key, fleet)) = self.shared.as_ref().filter(|(_, f)| f.up()) else {
                    return lease;
                };
                match fleet.lease(key.clone(), self.limit()).await {
                    LeaseAnswer::Taken(id) => {
                        lease.remote = Some(id);
                        return lease;
                    }
                    LeaseAnswer::Unreachable => return lease,
                    LeaseAnswer::Full => {
                        drop(lease);
                        tokio::time::sleep(LEASE_POLL).await;
                        continue;
                    }
                }
            }
            freed.await;
        }
    }
}

/// Limits shared by every egress path of a provider, a domain, a source
/// or a tenant.
#[derive(Debug)]
pub struct Scope {
    /// What it is: `provider gmail`, `domain example.com`, `source ip1`.
    pub name: String,
    /// Messages over all its paths.
    pub messages: Option<Arc<Limiter>>,
    /// New connections over all its paths.
    pub connection_rate: Option<Arc<Limiter>>,
    /// Connections open at once over all its paths.
    pub connections: Option<Arc<Slots>>,
}

impl Scope {
    /// A scope with these totals and nothing counted yet.
    pub fn new(name: String, totals: &TotalLimitsConfig) -> Self {
        Self::carried(name, totals, None, None, None)
    }

    /// A scope with these totals that keeps the state of `previous` (the
    /// same scope under the config a reload replaces) for each limit whose
    /// setting did not change; a connection limit keeps its leases
    /// whatever its new value. New rates start busy from `busy_since`, if
    /// given (see [`Limiter::new_busy`]). With a `fleet`, its limits are
    /// kept fleet-wide, under keys named after the scope.
    pub fn carried(
        name: String,
        totals: &TotalLimitsConfig,
        previous: Option<&Scope>,
        busy_since: Option<Instant>,
        fleet: Option<&Arc<dyn Fleet>>,
    ) -> Self {
        let keep = |rate: Option<Rate>, old: Option<&Arc<Limiter>>, what: &str| {
            let rate = rate?;
            Some(match old.filter(|l| l.rate() == rate) {
                Some(l) => l.clone(),
                None => {
                    let shared =
                        fleet.map(|f| SharedRate::new(format!("rate:{name}:{what}"), f.clone()));
                    Arc::new(Limiter::starting(rate, busy_since).shared(shared))
                }
            })
        };
        let slots = previous.and_then(|p| p.connections.as_ref());
        let connections = totals.connection_limit.map(|n| match slots {
            Some(s) => {
                s.set_limit(n);
                s.clone()
            }
            None => {
                let shared = fleet.map(|f| (Arc::from(format!("lease:{name}")), f.clone()));
                Slots::shared(n, shared)
            }
        });
        Self {
            messages: keep(
                totals.message_rate,
                previous.and_then(|p| p.messages.as_ref()),
                "messages",
            ),
            connection_rate: keep(
                totals.connection_rate,
                previous.and_then(|p| p.connection_rate.as_ref()),
                "connections",
            ),
            connections,
            name,
        }
    }

    /// True when `other` is this scope carried over a reload unchanged
    /// (the same limiters, the same connection slots and limit).
    pub fn same_as(&self, other: &Scope) -> bool {
        fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        self.name == other.name
            && same(&self.messages, &other.messages)
            && same(&self.connection_rate, &other.connection_rate)
            && same(&self.connections, &other.connections)
    }

    /// The configured connection limit, if any.
    pub fn connection_limit(&self) -> Option<u32> {
        self.connections.as_ref().map(|s| s.limit())
    }

    /// Waits for a connection slot; the lease frees it when dropped.
    pub async fn lease(&self) -> Option<Lease> {
        match &self.connections {
            Some(s) => Some(s.lease().await),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn totals(message_rate: Option<Rate>, connection_limit: Option<u32>) -> TotalLimitsConfig {
        TotalLimitsConfig {
            message_rate,
            connection_limit,
            ..Default::default()
        }
    }

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
    async fn a_busy_limiter_lets_no_burst_through() {
        let l = Limiter::new_busy("60/m,burst=5".parse().unwrap(), Instant::now());
        assert!(!l.try_take(Instant::now()), "no burst at the start");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.try_take(Instant::now()), "one interval later, one");
        assert!(!l.try_take(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_hold_connection_slots_until_dropped() {
        let s = Scope::new("provider p".into(), &totals(None, Some(2)));
        let a = s.lease().await.unwrap();
        let _b = s.lease().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(1), s.lease()).await;
        assert!(third.is_err(), "a third connection waits");
        drop(a);
        assert!(s.lease().await.is_some(), "a freed slot is taken");
        let open = Scope::new("domain d".into(), &totals(None, None));
        assert!(open.lease().await.is_none(), "no limit, no lease");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_unchanged_limits_and_the_leases_out() {
        let rate: Rate = "60/m,burst=1".parse().unwrap();
        let old = Scope::new("provider p".into(), &totals(Some(rate), Some(2)));
        let _a = old.lease().await.unwrap();
        let _b = old.lease().await.unwrap();
        assert!(old.messages.as_ref().unwrap().try_take(Instant::now()));
        let new = Scope::carried(
            "provider p".into(),
            &totals(Some(rate), Some(3)),
            Some(&old),
            None,
            None,
        );
        let limiter = new.messages.as_ref().unwrap();
        assert!(
            !limiter.try_take(Instant::now()),
            "the rate's state goes on: no fresh burst"
        );
        assert_eq!(new.connection_limit(), Some(3));
        let c = new.connections.as_ref().unwrap();
        assert_eq!(c.used(), 2, "the connections open still count");
        let third = c.try_lease();
        assert!(third.is_some());
        assert!(c.try_lease().is_none(), "3 in all");
        let faster = Scope::carried(
            "provider p".into(),
            &totals(Some("2/s".parse().unwrap()), Some(1)),
            Some(&new),
            None,
            None,
        );
        assert!(
            faster.messages.as_ref().unwrap().try_take(Instant::now()),
            "a changed rate starts afresh"
        );
        drop(third);
        assert!(
            faster.connections.as_ref().unwrap().try_lease().is_none(),
            "lowered below what is open"
        );
    }
}
