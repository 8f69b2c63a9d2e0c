//! The memory budget for message data held by receiving sessions. Every
//! session's data buffer is counted (by capacity, what it really holds);
//! while the total is over the limit, new DATA and BDAT transactions get
//! `452 4.3.1` and the client tries again later, so a burst of large
//! messages cannot exhaust memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of message data held by all sessions, against a limit.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0: unlimited).
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            limit,
        })
    }

    /// True while new transactions may start receiving data.
    pub fn has_room(&self) -> bool {
        self.limit == 0 || self.used.load(Ordering::Relaxed) < self.limit
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// One buffer's share of the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Charge {
    pub fn new(budget: &Arc<MemoryBudget>) -> Self {
        Self {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Sets this buffer's share to `bytes`.
    pub fn set(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            self.budget
                .used
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_counted_and_given_back() {
        let b = MemoryBudget::new(100);
        let mut c1 = Charge::new(&b);
        c1.set(60);
        assert!(b.has_room());
        let mut c2 = Charge::new(&b);
        c2.set(50);
        assert!(!b.has_room());
        c2.set(10);
        assert_eq!(b.used(), 70);
        drop(c1);
        drop(c2);
        assert_eq!(b.used(), 0);
        assert!(MemoryBudget::new(0).has_room());
    }
}
