//! Connection slots in Redis: a sorted set per shared connection limit,
//! one member per open connection of the fleet, scored with the time its
//! slot runs out. A node renews its slots (one round trip for all of
//! them) every third of `cluster.lease_ttl` while their connections live,
//! and returns them when they close; a crashed node's slots run out by
//! themselves within `lease_ttl`. Never decides whether to wait: the
//! limiter ([`crate::shaping::limiter::Slots`]) does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::link::{Link, is_outage};
use crate::shaping::shared::LeaseAnswer;

/// The slots this node holds, and how it takes and returns them.
#[derive(Debug)]
pub(super) struct Leases {
    link: Arc<Link>,
    /// `node:boot`, the prefix of this process's slot holders (the boot
    /// part keeps a restarted node's slots apart from its old ones).
    holder: String,
    ttl: Duration,
    next: AtomicU64,
    /// Slots held: id -> key.
    held: Mutex<HashMap<u64, Arc<str>>>,
    returns: mpsc::UnboundedSender<(Arc<str>, u64)>,
}

impl Leases {
    /// Leases for `node`; returns them and the receiver of returned slots
    /// (for [`run`]).
    pub(super) fn new(
        link: Arc<Link>,
        node: &str,
        ttl: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<(Arc<str>, u64)>) {
        let (returns, rx) = mpsc::unbounded_channel();
        let leases = Arc::new(Self {
            link,
            holder: format!("{node}:{:016x}", fastrand::u64(..)),
            ttl,
            next: AtomicU64::new(1),
            held: Mutex::new(HashMap::new()),
            returns,
        });
        (leases, rx)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<str>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Slots this node holds now.
    pub(super) fn count(&self) -> usize {
        self.held().len()
    }

    /// Takes one of `limit` slots under `key`.
    pub(super) async fn take(&self, key: Arc<str>, limit: u32) -> LeaseAnswer {
        if !self.link.up() {
            return LeaseAnswer::Unreachable;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.link.conn();
        let mut inv = self.link.scripts.lease.key(self.link.key(&key));
        inv.arg(format!("{}:{id}", self.holder))
            .arg(limit)
            .arg(self.ttl_ms());
        match self.link.note(inv.invoke_async::<u32>(&mut conn).await) {
            Ok(1) => {
                self.held().insert(id, key);
                LeaseAnswer::Taken(id)
            }
            Ok(_) => LeaseAnswer::Full,
            Err(e) if is_outage(&e) => LeaseAnswer::Unreachable,
            Err(_) => LeaseAnswer::Unreachable,
        }
    }

    /// Returns a slot (sent by the task, batched with others).
    pub(super) fn release(&self, key: Arc<str>, id: u64) {
        if self.held().remove(&id).is_some() {
            let _ = self.returns.send((key, id));
        }
    }

    /// Returns every slot held (at shutdown), in one round trip.
    pub(super) async fn return_all(&self) {
        let held: Vec<(Arc<str>, u64)> = self.held().drain().map(|(i, k)| (k, i)).collect();
        if !held.is_empty() {
            self.send_returns(&held).await;
        }
    }

    /// Renews every slot held, in one round trip.
    async fn renew(&self) {
        let held: Vec<(u64, Arc<str>)> = self.held().iter().map(|(i, k)| (*i, k.clone())).collect();
        if held.is_empty() || !self.link.up() {
            return;
        }
        let mut inv = self.link.scripts.renew.prepare_invoke();
        inv.arg(self.ttl_ms());
        for (id, key) in &held {
            inv.arg(self.link.key(key))
                .arg(format!("{}:{id}", self.holder));
        }
        let mut conn = self.link.conn();
        if let Ok(lost) = self.link.note(inv.invoke_async::<u32>(&mut conn).await)
            && lost > 0
        {
            tracing::warn!(
                lost,
                "cluster: connection slots ran out in Redis while their connections lived (Redis was away); they count again from the next connection"
            );
        }
    }

    /// Returns the slots in `batch` in one round trip.
    async fn send_returns(&self, batch: &[(Arc<str>, u64)]) {
        if !self.link.up() {
            return; // they run out by themselves
        }
        let mut pipe = redis::pipe();
        for (key, id) in batch {
            pipe.zrem(self.link.key(key), format!("{}:{id}", self.holder))
                .ignore();
        }
        let mut conn = self.link.conn();
        let _ = self.link.note(pipe.query_async::<()>(&mut conn).await);
    }
}

/// Renews the slots held and sends the returned ones, until the node
/// stops.
pub(super) async fn run(
    leases: Arc<Leases>,
    mut returns: mpsc::UnboundedReceiver<(Arc<str>, u64)>,
) {
    let mut renew = tokio::time::interval(leases.ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = renew.tick() => leases.renew().await,
            n = returns.recv_many(&mut batch, 512) => {
                if n == 0 {
                    return;
                }
                leases.send_returns(&batch).await;
                batch.clear();
            }
        }
    }
}
