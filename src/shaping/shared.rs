//! Limits kept fleet-wide: the local side of a shared rate ([`SharedRate`],
//! a small stock of slots granted by the fleet's store) and the
//! [`Fleet`] that grants them and connection slots.
//!
//! A shared rate never makes the scheduler wait on the network: the pump
//! asks [`SharedRate::earliest`] and [`SharedRate::try_take`] as it asks a
//! local limiter, synchronously. When the stock is empty the rate asks the
//! fleet for a batch in the background and answers "a moment from now";
//! the fleet's answer fills the stock (or says when to ask again). The
//! batch grows while the stock is used up before it goes stale and
//! shrinks when slots were left over (those are handed back), so a quiet
//! path takes one slot at a time and a busy one a batch per round trip.
//!
//! While the store does not answer ([`Fleet::up`] false), the limiter
//! falls back to its local state at its share of the limit (the limit
//! divided by the nodes last seen alive): mail keeps flowing and no
//! retry is spent. Owns no I/O: the cluster module implements [`Fleet`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long granted slots stay usable; unused ones are handed back.
pub const FRESH: Duration = Duration::from_millis(250);
/// How soon the pump looks again while an answer is on its way.
pub const POLL: Duration = Duration::from_millis(1);

/// A boxed future, for the fleet's connection slots.
pub type FleetFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the store answered to a request for a connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// Taken: its id, to renew and return.
    Taken(u64),
    /// Every slot is in use fleet-wide.
    Full,
    /// The store did not answer: decide locally.
    Unreachable,
}

/// The fleet's shared store, as limits see it.
pub trait Fleet: Send + Sync + fmt::Debug {
    /// True while the store answers.
    fn up(&self) -> bool;
    /// Nodes alive when last seen, this one included (at least 1).
    fn nodes(&self) -> u32;
    /// How much of a rate to ask for at once (`cluster.rate_batch`).
    fn batch(&self) -> Duration;
    /// Asks for slots of `rate`; the answer comes back through
    /// [`SharedRate::granted`] or [`SharedRate::denied`] (or
    /// [`SharedRate::failed`]).
    fn refill(&self, rate: Arc<SharedRate>, ask: Ask);
    /// Hands back `count` unused slots of the rate kept under `key`.
    fn refund(&self, key: Arc<str>, interval: Duration, count: u32);
    /// Takes one of `limit` connection slots kept under `key`.
    fn lease(&self, key: Arc<str>, limit: u32) -> FleetFuture<LeaseAnswer>;
    /// Returns a connection slot taken by [`Fleet::lease`].
    fn release(&self, key: Arc<str>, id: u64);
    /// Asks for `want` more of a day's count capped at `cap` (a warm-up
    /// share); the answer comes back through [`SharedCount::granted`] or
    /// [`SharedCount::failed`].
    fn count(&self, count: Arc<SharedCount>, cap: u32, want: u32);
}

/// One request for slots of a shared rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Time between two events at the rate in force.
    pub interval: Duration,
    /// How far ahead of now the rate's state may run (its burst).
    pub tolerance: Duration,
    /// Slots wanted: the store grants all of them, or none and says when
    /// they would all fit (so a busy rate costs a round trip per batch).
    pub want: u32,
}

#[derive(Debug)]
struct Stock {
    /// Slots granted and not yet used.
    granted: u32,
    /// When granted slots go stale.
    fresh_until: Instant,
    /// The store said to ask again then.
    retry_at: Option<Instant>,
    /// A request is on its way.
    asking: bool,
    /// The batch to ask for next.
    want: u32,
    /// The size of the last grant (to tell whether it was all used).
    last_grant: u32,
}

/// The local side of one fleet-wide rate.
pub struct SharedRate {
    /// Its key in the store (`rate:provider gmail:messages`).
    pub key: Arc<str>,
    fleet: Arc<dyn Fleet>,
    stock: Mutex<Stock>,
}

impl fmt::Debug for SharedRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRate")
            .field("key", &self.key)
            .finish()
    }
}

impl SharedRate {
    /// The rate kept under `key` in `fleet`'s store.
    pub fn new(key: impl Into<Arc<str>>, fleet: Arc<dyn Fleet>) -> Arc<Self> {
        Arc::new(Self {
            key: key.into(),
            fleet,
            stock: Mutex::new(Stock {
                granted: 0,
                fresh_until: Instant::now(),
                retry_at: None,
                asking: false,
                want: 1,
                last_grant: 0,
            }),
        })
    }

    /// The fleet it asks.
    pub fn fleet(&self) -> &Arc<dyn Fleet> {
        &self.fleet
    }

    fn stock(&self) -> std::sync::MutexGuard<'_, Stock> {
        self.stock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the next event may go, for a rate of `interval` and
    /// `tolerance`: now with a slot in stock, else when the store said,
    /// else a moment from now (a request is sent if none is on its way).
    pub fn earliest(self: &Arc<Self>, now: Instant, interval: Duration, tol: Duration) -> Instant {
        let mut st = self.stock();
        if self.usable(&mut st, now, interval) {
            return now;
        }
        if let Some(at) = st.retry_at.filter(|at| *at > now) {
            return at;
        }
        self.ask(&mut st, interval, tol);
        now + POLL
    }

    /// Takes a slot from the stock if there is one (asking for more when
    /// there is not).
    pub fn try_take(self: &Arc<Self>, now: Instant, interval: Duration, tol: Duration) -> bool {
        let mut st = self.stock();
        if self.usable(&mut st, now, interval) {
            st.granted -= 1;
            if st.granted == 0 {
                // All of it used while fresh: ask for more next time.
                let cap = self.cap(interval, tol);
                st.want = st.want.saturating_mul(2).clamp(1, cap);
            }
            return true;
        }
        if st.retry_at.is_none_or(|at| at <= now) {
            self.ask(&mut st, interval, tol);
        }
        false
    }

    /// True with a fresh slot in stock; a stale stock is handed back and
    /// the next batch made smaller.
    fn usable(&self, st: &mut Stock, now: Instant, interval: Duration) -> bool {
        if st.granted == 0 {
            return false;
        }
        if now < st.fresh_until {
            return true;
        }
        let left = std::mem::take(&mut st.granted);
        st.want = st.last_grant.saturating_sub(left).max(1);
        self.fleet.refund(self.key.clone(), interval, left);
        false
    }

    /// The most slots asked for at once: a batch's worth of the rate, at
    /// most its burst.
    fn cap(&self, interval: Duration, tol: Duration) -> u32 {
        let per = interval.max(Duration::from_micros(1)).as_secs_f64();
        let batch = (self.fleet.batch().as_secs_f64() / per).floor() as u32;
        let burst = (tol.as_secs_f64() / per).floor() as u32 + 1;
        batch.clamp(1, burst.max(1))
    }

    fn ask(self: &Arc<Self>, st: &mut Stock, interval: Duration, tolerance: Duration) {
        if st.asking {
            return;
        }
        st.asking = true;
        let want = st.want.clamp(1, self.cap(interval, tolerance));
        let ask = Ask {
            interval,
            tolerance,
            want,
        };
        self.fleet.refill(self.clone(), ask);
    }

    /// The store granted `count` slots.
    pub fn granted(&self, count: u32) {
        let mut st = self.stock();
        st.asking = false;
        st.retry_at = None;
        st.granted += count;
        st.last_grant = st.granted;
        st.fresh_until = Instant::now() + FRESH;
    }

    /// The store says the batch fits only after `wait`.
    pub fn denied(&self, wait: Duration) {
        let mut st = self.stock();
        st.asking = false;
        st.retry_at = Some(Instant::now() + wait.max(POLL));
    }

    /// The store did not answer (the limiter falls back to its share).
    pub fn failed(&self) {
        let mut st = self.stock();
        st.asking = false;
        st.retry_at = None;
    }
}

/// What a fleet-wide count answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counted: go.
    Taken,
    /// The cap is reached for the fleet.
    Full,
    /// Asking the fleet; look again then.
    Wait(Instant),
}

#[derive(Debug, Default)]
struct CountStock {
    granted: u32,
    exhausted: bool,
    asking: bool,
}

/// The local side of one fleet-wide count with a cap (a warming source's
/// share of the day): the fleet grants this node a part of what is left
/// at a time, so the fleet never sends past the cap; a part granted and
/// not used by the end of the day is not sent by anyone.
pub struct SharedCount {
    /// Its key in the store (`warm:ip7:gmail:20423`).
    pub key: Arc<str>,
    fleet: Arc<dyn Fleet>,
    stock: Mutex<CountStock>,
}

impl fmt::Debug for SharedCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCount")
            .field("key", &self.key)
            .finish()
    }
}

/// How long a path waits for the fleet's answer about a count.
pub const COUNT_WAIT: Duration = Duration::from_millis(100);

impl SharedCount {
    /// The count kept under `key` in `fleet`'s store.
    pub fn new(key: impl Into<Arc<str>>, fleet: Arc<dyn Fleet>) -> Arc<Self> {
        Arc::new(Self {
            key: key.into(),
            fleet,
            stock: Mutex::new(CountStock::default()),
        })
    }

    /// The fleet it asks.
    pub fn fleet(&self) -> &Arc<dyn Fleet> {
        &self.fleet
    }

    fn stock(&self) -> std::sync::MutexGuard<'_, CountStock> {
        self.stock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one of the `cap`: from this node's part, or says to wait for
    /// more (asking for it), or that the fleet's cap is reached.
    pub fn take(self: &Arc<Self>, cap: u32) -> Take {
        let mut st = self.stock();
        if st.granted > 0 {
            st.granted -= 1;
            return Take::Taken;
        }
        if st.exhausted {
            return Take::Full;
        }
        if !st.asking {
            st.asking = true;
            let want = (cap / 50).max(1);
            self.fleet.count(self.clone(), cap, want);
        }
        Take::Wait(Instant::now() + COUNT_WAIT)
    }

    /// The fleet granted `n` more; `exhausted` when that reached the cap.
    pub fn granted(&self, n: u32, exhausted: bool) {
        let mut st = self.stock();
        st.asking = false;
        st.granted += n;
        st.exhausted |= exhausted;
    }

    /// The store did not answer.
    pub fn failed(&self) {
        self.stock().asking = false;
    }
}
