//! Tern's own state that must outlive a restart, kept in the spool beside
//! the messages ([`queue::Queue::put_state`], under the queue's
//! crash-safety contract), never in files of its own: the shaping actions
//! in force (suspensions, dead-site pauses, slow-downs), the rebinds, the
//! warm-up counts of the day, and the size of the fleet last seen.
//!
//! Each key has a [`Slot`]: its owner sets the latest value (a cheap,
//! synchronous call), and a keeper task writes it to the spool, the latest
//! value only when several come quickly, retrying with back-off while the
//! spool cannot write. It owns the keys and the writing; it never decides
//! what the values mean.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue::Queue;
use tokio::sync::watch;

/// The shaping actions in force (JSON).
pub const ACTIONS: &str = "shaping/actions";
/// The rebinds in force (JSON).
pub const REBINDS: &str = "delivery/rebinds";
/// The warm-up counts of the day, per source (JSON).
pub const WARMUP: &str = "egress/warmup";
/// How many nodes of the fleet were alive when last seen (a decimal
/// number), so that a node that starts while Redis is away takes only its
/// share of the shared limits.
pub const FLEET_NODES: &str = "cluster/nodes";

/// The latest value of one key, to be written by its keeper.
#[derive(Clone, Debug)]
pub struct Slot {
    tx: Arc<watch::Sender<Option<Bytes>>>,
}

impl Slot {
    /// A slot whose values go nowhere (tests, tools).
    pub fn detached() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Sets the key's value; the keeper writes it soon.
    pub fn set(&self, value: Bytes) {
        self.tx.send_replace(Some(value));
    }

    /// Writes the latest value now (a clean shutdown, before the spool
    /// closes).
    pub async fn flush(&self, queue: &Queue, key: &str) {
        let value = self.tx.borrow().clone();
        if let Some(v) = value
            && let Err(e) = queue.put_state(key, v).await
        {
            tracing::warn!(key, error = %e, "cannot keep state in the spool at shutdown");
        }
    }
}

/// Opens the slot of `key` on `queue`, and starts its keeper on the
/// current runtime.
pub fn slot(queue: &Arc<Queue>, key: &'static str) -> Slot {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(keep(queue.clone(), key, rx));
    Slot { tx: Arc::new(tx) }
}

/// Writes each new value of `key` until every sender is gone.
async fn keep(queue: Arc<Queue>, key: &'static str, mut rx: watch::Receiver<Option<Bytes>>) {
    while rx.changed().await.is_ok() {
        let mut wait = Duration::from_millis(100);
        loop {
            let Some(value) = rx.borrow_and_update().clone() else {
                break;
            };
            match queue.put_state(key, value).await {
                Ok(()) => break,
                Err(queue::QueueError::Closed) => return,
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot keep state in the spool yet; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
