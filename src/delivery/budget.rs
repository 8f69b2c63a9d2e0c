//! The in-flight budget: how many messages, and how many bytes of their
//! bodies, delivery holds in RAM for sends at once. Only a send takes
//! from it, from just before it reads the body until its outcomes are
//! recorded; mail waiting for its turn never does.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Room for sends.
pub(crate) struct Budget {
    messages: Semaphore,
    kib: Semaphore,
    max_messages: usize,
    max_kib: u32,
}

/// One send's share of the budget, given back when dropped.
pub(crate) struct Share<'a> {
    _message: Option<SemaphorePermit<'a>>,
    _kib: Option<SemaphorePermit<'a>>,
}

impl Budget {
    /// `messages` sends at once, with at most `bytes` of bodies.
    pub fn new(messages: usize, bytes: u64) -> Self {
        let max_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            messages: Semaphore::new(messages.max(1)),
            kib: Semaphore::new(max_kib as usize),
            max_messages: messages.max(1),
            max_kib,
        }
    }

    /// Waits for room for one send of a body of `kib` KiB (a body larger
    /// than the whole budget waits for all of it).
    pub async fn acquire(&self, kib: u32) -> Share<'_> {
        let message = self.messages.acquire().await.ok();
        let kib = self.kib.acquire_many(kib.min(self.max_kib)).await.ok();
        Share {
            _message: message,
            _kib: kib,
        }
    }

    /// Sends holding a share now.
    pub fn in_use(&self) -> usize {
        self.max_messages - self.messages.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn sends_wait_for_room_in_messages_and_bytes() {
        let b = Budget::new(2, 10 * 1024);
        let a = b.acquire(4).await;
        let _c = b.acquire(4).await;
        assert_eq!(b.in_use(), 2);
        let third = tokio::time::timeout(Duration::from_secs(1), b.acquire(1)).await;
        assert!(third.is_err(), "two messages at once");
        drop(a);
        let big = tokio::time::timeout(Duration::from_secs(1), b.acquire(7)).await;
        assert!(big.is_err(), "4 + 7 KiB is over 10");
        let huge = tokio::time::timeout(Duration::from_secs(1), b.acquire(1000)).await;
        assert!(huge.is_err(), "a body over the budget waits for all of it");
        drop(_c);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), b.acquire(1000))
                .await
                .is_ok()
        );
    }
}
