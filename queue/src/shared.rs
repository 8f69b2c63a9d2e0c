//! State shared by the [`crate::Queue`] handle, the writer thread and the
//! compactor thread: the index, the health flag and the wake-up signals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::index::Index;
use crate::options::QueueOptions;

/// Whether the queue accepts new messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Accepting.
    Healthy,
    /// Refusing new messages until free space is back (outcomes are still
    /// written). Clears by itself.
    Full(Arc<str>),
    /// Refusing every write: one failed (no space, no file descriptor, an
    /// I/O error) and no fresh segment could be started since. Retried
    /// with back-off; clears by itself when the cause does.
    Unhealthy(Arc<str>),
}

const HEALTHY: u8 = 0;
const FULL: u8 = 1;
const UNHEALTHY: u8 = 2;

/// Lock-free to read on every request; the reason text is behind a mutex
/// and read only when the state is not healthy.
#[derive(Default)]
pub(crate) struct HealthCell {
    state: AtomicU8,
    reason: Mutex<Option<Arc<str>>>,
    /// When the state last changed.
    since: Mutex<Option<std::time::SystemTime>>,
}

impl HealthCell {
    pub fn get(&self) -> Health {
        let state = self.state.load(Ordering::Acquire);
        if state == HEALTHY {
            return Health::Healthy;
        }
        let reason = lock(&self.reason)
            .clone()
            .unwrap_or_else(|| "unknown".into());
        if state == FULL {
            Health::Full(reason)
        } else {
            Health::Unhealthy(reason)
        }
    }

    pub fn set(&self, h: &Health) {
        let (state, reason) = match h {
            Health::Healthy => (HEALTHY, None),
            Health::Full(r) => (FULL, Some(r.clone())),
            Health::Unhealthy(r) => (UNHEALTHY, Some(r.clone())),
        };
        *lock(&self.reason) = reason;
        if self.state.swap(state, Ordering::AcqRel) != state {
            *lock(&self.since) = Some(std::time::SystemTime::now());
        }
    }

    /// When the state last changed (`None`: healthy since open).
    pub fn since(&self) -> Option<std::time::SystemTime> {
        *lock(&self.since)
    }
}

/// A wake-up flag with a condition variable (used to wake the compactor).
#[derive(Default)]
pub(crate) struct Signal {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    pub fn notify(&self) {
        *lock(&self.flag) = true;
        self.cond.notify_one();
    }

    /// Waits until notified or `timeout` passes; clears the flag.
    pub fn wait(&self, timeout: Duration) {
        let guard = lock(&self.flag);
        let (mut guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *guard = false;
    }
}

/// Counters of the writer's work since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Batches committed (each one write, and one sync with `Fsync`).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
}

#[derive(Default)]
pub(crate) struct IoCounters {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
}

impl IoCounters {
    pub fn get(&self) -> IoStats {
        IoStats {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }

    pub fn add(&self, records: usize, bytes: u64, synced: bool) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.syncs.fetch_add(u64::from(synced), Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub index: Mutex<Index>,
    pub io: IoCounters,
    /// Queued messages, refreshed by the writer after each commit.
    pub messages: AtomicU64,
    /// Bytes of queued bodies, refreshed likewise.
    pub body_bytes: AtomicU64,
    pub health: HealthCell,
    pub next_id: AtomicU64,
    pub opts: QueueOptions,
    pub dir: PathBuf,
    pub compactor_wake: Signal,
    pub stopping: std::sync::atomic::AtomicBool,
    /// Where a background recovery stands (`Done` at once otherwise).
    pub recovery: tokio::sync::watch::Sender<crate::recovery::Recovery>,
    #[cfg(any(test, feature = "fault-injection"))]
    pub faults: std::sync::Arc<crate::faults::Faults>,
}

impl Shared {
    /// The index lock. A panic while holding it would be a bug in this
    /// crate; the state is still consistent enough to keep serving, so a
    /// poisoned lock is used rather than propagated.
    pub fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
