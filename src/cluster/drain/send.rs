//! Draining this node: it stops taking mail (421 at the door, 503 at
//! `/v1/ready`), starts no new sends, and hands every queued message to
//! live peers in batches, each exactly once:
//!
//! 1. the batch's ids and its peer are kept in the spool (the journal);
//! 2. the peer writes the batch durably, held, and says which it holds;
//! 3. this node removes its copies of those;
//! 4. the peer is told to commit them (they become due there);
//! 5. the journal entry is cleared.
//!
//! After a crash at any step the drain resumes at start (the drain itself
//! is kept in the spool): the journal's messages still here are sent to
//! the same peer again (it holds them already and says so, without a
//! second copy), those gone from here are committed. A held message is
//! never sent by the peer before its commit, so no message is ever sent
//! by both. Never delivers mail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use queue::{MessageId, MessageInfo, Queue, RecipientState};
use serde::{Deserialize, Serialize};

use super::peer::{self, PeerError};
use super::wire::{self, Commit, Moved, Taken};
use crate::cluster::Cluster;
use crate::delivery::Delivery;
use crate::node::{Mode, NodeState};

/// The drain in force, kept in the spool (resumed after a restart).
pub const DRAIN_KEY: &str = "cluster/drain";
/// The batch on its way to a peer, kept in the spool.
pub const JOURNAL_KEY: &str = "cluster/drain/batch";
/// Most body bytes in one batch.
const MAX_BATCH_BYTES: u64 = 32 << 20;

/// Where a drain stands, for the API and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// `idle` (never drained), `running`, `done` (the queue is empty: the
    /// node can be switched off), or `stopped` (cancelled).
    pub state: String,
    /// The peers asked for (names or `host:port`), or empty: every live
    /// peer.
    pub targets: Vec<String>,
    /// Messages handed over so far.
    pub moved: u64,
    /// Messages still queued here.
    pub left: u64,
    /// Messages handed to each peer.
    pub per_peer: BTreeMap<String, u64>,
    /// Why the drain waits, if it does (a peer that does not answer...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// The drain's durable settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    targets: Vec<String>,
}

/// A batch on its way (the journal).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    /// The peer's name.
    #[serde(default)]
    name: String,
    /// Where its admin API is.
    peer: String,
    ids: Vec<u64>,
}

/// What a drain needs of the node.
pub struct Drainer {
    queue: Arc<Queue>,
    delivery: Arc<Delivery>,
    node: Arc<NodeState>,
    cluster: Option<Arc<Cluster>>,
    log: Arc<crate::log::DeliveryLog>,
    clock: crate::clock::Clock,
    /// This node's name, as peers know it.
    name: String,
    /// The fleet's token.
    token: Option<String>,
    batch: usize,
    progress: Mutex<Progress>,
    stop: AtomicBool,
    running: AtomicBool,
}

/// A peer chosen for batches: its name and where its admin API is.
#[derive(Debug, Clone)]
struct Peer {
    name: String,
    addr: String,
}

impl Drainer {
    /// The drainer of a node.
    pub fn new(
        (queue, delivery, node): (Arc<Queue>, Arc<Delivery>, Arc<NodeState>),
        cluster: Option<Arc<Cluster>>,
        (log, clock): (Arc<crate::log::DeliveryLog>, crate::clock::Clock),
        config: &crate::config::Config,
    ) -> Arc<Self> {
        let c = config.cluster.clone().unwrap_or_default();
        Arc::new(Self {
            queue,
            delivery,
            node,
            cluster,
            log,
            clock,
            name: c.node_name(&config.server.hostname),
            token: c.token.clone(),
            batch: c.drain_batch as usize,
            progress: Mutex::new(Progress {
                state: "idle".into(),
                ..Progress::default()
            }),
            stop: AtomicBool::new(false),
            running: AtomicBool::new(false),
        })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the drain stands.
    pub fn status(&self) -> Progress {
        let mut p = self.progress().clone();
        p.left = self.queue.message_count();
        p
    }

    /// Resumes a drain kept in the spool (a restart during one).
    pub fn resume(self: &Arc<Self>) {
        let Some(kept) = self.queue.state(DRAIN_KEY) else {
            return;
        };
        let targets =
            serde_json::from_slice::<Kept>(&kept).map_or_else(|_| Vec::new(), |k| k.targets);
        tracing::warn!(
            ?targets,
            "cluster: a drain was under way at the last stop; it goes on"
        );
        self.start_task(targets);
    }

    /// Starts draining to `targets` (names or `host:port`; empty: every
    /// live peer); kept in the spool first. A drain already running goes
    /// on as it is.
    pub async fn start(
        self: &Arc<Self>,
        targets: Vec<String>,
    ) -> Result<Progress, queue::QueueError> {
        if !self.running.load(Ordering::Acquire) {
            let kept = serde_json::to_vec(&Kept {
                targets: targets.clone(),
            })
            .unwrap_or_default();
            self.queue.put_state(DRAIN_KEY, kept.into()).await?;
            tracing::warn!(?targets, "cluster: drain started by an operator");
            self.start_task(targets);
        }
        Ok(self.status())
    }

    fn start_task(self: &Arc<Self>, targets: Vec<String>) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.store(false, Ordering::Release);
        self.node.set(Mode::Draining);
        self.delivery.pause(true);
        *self.progress() = Progress {
            state: "running".into(),
            targets: targets.clone(),
            ..Progress::default()
        };
        tokio::spawn(self.clone().run(targets));
    }

    /// Stops draining after the batch under way: the node takes mail and
    /// sends again.
    pub async fn cancel(self: &Arc<Self>) -> Result<Progress, queue::QueueError> {
        self.stop.store(true, Ordering::Release);
        for _ in 0..600 {
            if !self.running.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.queue.put_state(DRAIN_KEY, Bytes::new()).await?;
        self.node.set(Mode::Accepting);
        self.delivery.pause(false);
        let mut p = self.progress();
        p.state = "stopped".into();
        tracing::warn!("cluster: drain cancelled; the node takes mail again");
        Ok(p.clone())
    }

    async fn run(self: Arc<Self>, targets: Vec<String>) {
        // Every queued message goes: wait until all of them are in the queue.
        self.queue.recovered().await;
        let mut rr = 0usize;
        let mut wait = Duration::from_millis(200);
        let mut after: Option<MessageId> = None;
        while !self.stop.load(Ordering::Acquire) {
            if let Err(why) = self.finish_journal().await {
                self.wait_for(&why, &mut wait).await;
                continue;
            }
            if self.queue.message_count() == 0 {
                self.done().await;
                break;
            }
            let peers = self.peers(&targets).await;
            let Some(peer) = (!peers.is_empty()).then(|| peers[rr % peers.len()].clone()) else {
                self.wait_for("no live peer to hand mail to", &mut wait)
                    .await;
                continue;
            };
            rr = rr.wrapping_add(1);
            let batch = self.claim_batch(&mut after);
            if batch.is_empty() {
                // What is left is being sent, held or waiting for its
                // outcome to be written: look again shortly.
                after = None;
                self.wait_for(
                    "messages still being sent here",
                    &mut Duration::from_millis(200),
                )
                .await;
                continue;
            }
            match self.hand_over(&peer, batch).await {
                Ok(()) => wait = Duration::from_millis(200),
                Err(why) => self.wait_for(&why, &mut wait).await,
            }
        }
        self.running.store(false, Ordering::Release);
    }

    async fn wait_for(&self, why: &str, wait: &mut Duration) {
        self.progress().waiting = Some(why.to_owned());
        tokio::time::sleep(*wait).await;
        *wait = (*wait * 2).min(Duration::from_secs(10));
    }

    async fn done(&self) {
        let _ = self.queue.put_state(DRAIN_KEY, Bytes::new()).await;
        let mut p = self.progress();
        p.state = "done".into();
        p.waiting = None;
        tracing::warn!(
            moved = p.moved,
            "cluster: drain done; the queue is empty and the node can be switched off"
        );
    }

    /// The peers to hand mail to now: the targets (by name through the
    /// fleet's list, or as `host:port`), or every live peer.
    async fn peers(&self, targets: &[String]) -> Vec<Peer> {
        let rows = match &self.cluster {
            Some(c) => c.nodes().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let live = |r: &&crate::views::NodeRow| r.state == "accepting" && r.node != self.name;
        if targets.is_empty() {
            return rows
                .iter()
                .filter(live)
                .filter_map(|r| {
                    Some(Peer {
                        name: r.node.clone(),
                        addr: r.admin.clone()?,
                    })
                })
                .collect();
        }
        targets
            .iter()
            .filter_map(|t| match rows.iter().filter(live).find(|r| &r.node == t) {
                Some(r) => Some(Peer {
                    name: t.clone(),
                    addr: r.admin.clone()?,
                }),
                None => t.contains(':').then(|| Peer {
                    name: t.clone(),
                    addr: t.clone(),
                }),
            })
            .collect()
    }

    /// Claims up to a batch of messages (not being sent, not held
    /// hand-overs waiting for their own commit), paging from `after`.
    fn claim_batch(&self, after: &mut Option<MessageId>) -> Vec<MessageInfo> {
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while batch.len() < self.batch && bytes < MAX_BATCH_BYTES {
            let page = self.queue.page(*after, self.batch);
            let Some(last) = page.last() else {
                *after = None;
                break;
            };
            *after = Some(last.id);
            for m in page {
                if m.in_flight || super::receive::held(&m) || batch.len() >= self.batch {
                    continue;
                }
                if let Some(info) = self.queue.claim(m.id) {
                    bytes += info.body_len;
                    batch.push(info);
                }
            }
        }
        batch
    }

    /// Steps 1 to 5 for one batch; the claims end either way.
    async fn hand_over(&self, peer: &Peer, batch: Vec<MessageInfo>) -> Result<(), String> {
        let moved = match self.read(&batch).await {
            Ok(m) => m,
            Err(e) => {
                self.release(&batch);
                return Err(e);
            }
        };
        let ids: Vec<u64> = batch.iter().map(|m| m.id.as_u64()).collect();
        let journal = Journal {
            name: peer.name.clone(),
            peer: peer.addr.clone(),
            ids,
        };
        if let Err(e) = self.keep(Some(&journal)).await {
            self.release(&batch);
            return Err(format!("cannot keep the journal: {e}"));
        }
        let taken = match self.send(&peer.addr, &moved).await {
            Ok(t) => t,
            Err(e) => {
                self.release(&batch);
                // The journal stays: the same batch goes to the same peer
                // again before anything else.
                return Err(e.to_string());
            }
        };
        for r in &taken.refused {
            tracing::warn!(queue_id = %MessageId::from_u64(r.id), peer = %peer.name, error = %r.error, "cluster: a peer refused a message; it stays here");
        }
        let accepted = self.remove(&batch, &taken, &peer.name).await;
        self.release(&batch);
        self.commit(&peer.addr, accepted)
            .await
            .map_err(|e| e.to_string())?;
        self.keep(None).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The batch's messages as they travel (bodies read off the reactor).
    async fn read(&self, batch: &[MessageInfo]) -> Result<Vec<Moved>, String> {
        let queue = self.queue.clone();
        let infos = batch.to_vec();
        tokio::task::spawn_blocking(move || {
            infos
                .into_iter()
                .map(|m| {
                    let body = queue
                        .body(m.id)
                        .map_err(|e| format!("reading {}: {e}", m.id))?;
                    Ok(moved(m, body))
                })
                .collect()
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn keep(&self, journal: Option<&Journal>) -> Result<(), queue::QueueError> {
        let value = journal.map_or_else(Vec::new, |j| serde_json::to_vec(j).unwrap_or_default());
        self.queue.put_state(JOURNAL_KEY, value.into()).await
    }

    async fn send(&self, addr: &str, batch: &[Moved]) -> Result<Taken, PeerError> {
        let path = format!("/v1/cluster/transfer?from={}", self.name);
        let body = wire::encode(batch);
        let answer = peer::post(
            addr,
            &path,
            ("application/x-tern-transfer", body),
            self.token.as_deref(),
        )
        .await?;
        serde_json::from_slice(&answer)
            .map_err(|e| PeerError::Protocol(addr.to_owned(), e.to_string()))
    }

    async fn commit(&self, addr: &str, ids: Vec<u64>) -> Result<(), PeerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let path = format!("/v1/cluster/commit?from={}", self.name);
        let body = serde_json::to_vec(&Commit { ids }).unwrap_or_default();
        peer::post(
            addr,
            &path,
            ("application/json", body.into()),
            self.token.as_deref(),
        )
        .await?;
        Ok(())
    }

    /// Removes the copies the peer holds now; returns their ids.
    async fn remove(&self, batch: &[MessageInfo], taken: &Taken, peer: &str) -> Vec<u64> {
        let accepted: std::collections::HashSet<u64> = taken.accepted.iter().copied().collect();
        let mut writes = tokio::task::JoinSet::new();
        for m in batch.iter().filter(|m| accepted.contains(&m.id.as_u64())) {
            let (queue, id) = (self.queue.clone(), m.id);
            writes.spawn(async move { (id, queue.remove(id).await) });
        }
        let mut removed = Vec::new();
        while let Some(Ok((id, r))) = writes.join_next().await {
            match r {
                Ok(()) | Err(queue::QueueError::NotFound(_)) => removed.push(id.as_u64()),
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "cluster: cannot remove a handed-over message yet; the journal keeps it")
                }
            }
        }
        self.logged(batch, &removed, peer);
        removed
    }

    fn logged(&self, batch: &[MessageInfo], removed: &[u64], peer: &str) {
        use crate::log::{Kind, Record};
        let now = self.clock.system_time();
        for m in batch.iter().filter(|m| removed.contains(&m.id.as_u64())) {
            let mut r = Record::new(
                Kind::Moved,
                now,
                m.id.to_string(),
                m.envelope.sender.to_string(),
            );
            r.recipients = Some(m.pending().count());
            r.target = Some(peer.to_owned().into());
            self.log.write(&r);
        }
        let mut p = self.progress();
        p.moved += removed.len() as u64;
        *p.per_peer.entry(peer.to_owned()).or_default() += removed.len() as u64;
        p.waiting = None;
    }

    fn release(&self, batch: &[MessageInfo]) {
        for m in batch {
            self.queue.release(m.id);
        }
    }

    /// Finishes the batch a crash (or a failed call) left: its messages
    /// still here go to its peer again, then it is committed.
    async fn finish_journal(&self) -> Result<(), String> {
        let Some(kept) = self.queue.state(JOURNAL_KEY) else {
            return Ok(());
        };
        let Ok(j) = serde_json::from_slice::<Journal>(&kept) else {
            tracing::error!("cluster: the drain's journal is unreadable; it is dropped");
            return self.keep(None).await.map_err(|e| e.to_string());
        };
        let mut here = Vec::new();
        for id in &j.ids {
            if let Some(info) = self.queue.claim(MessageId::from_u64(*id)) {
                here.push(info);
            }
        }
        let name = match j.name.is_empty() {
            true => j.peer.clone(),
            false => j.name.clone(),
        };
        let peer = Peer {
            name,
            addr: j.peer.clone(),
        };
        if !here.is_empty() {
            let moved = match self.read(&here).await {
                Ok(m) => m,
                Err(e) => {
                    self.release(&here);
                    return Err(e);
                }
            };
            let taken = self.send(&j.peer, &moved).await;
            let taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    self.release(&here);
                    return Err(format!("{e} (the batch under way waits for this peer)"));
                }
            };
            self.remove(&here, &taken, &peer.name).await;
            self.release(&here);
        }
        let gone: Vec<u64> = j
            .ids
            .iter()
            .copied()
            .filter(|id| self.queue.get(MessageId::from_u64(*id)).is_none())
            .collect();
        self.commit(&j.peer, gone)
            .await
            .map_err(|e| e.to_string())?;
        self.keep(None).await.map_err(|e| e.to_string())
    }
}

/// A queued message as it travels.
fn moved(m: MessageInfo, body: Bytes) -> Moved {
    let due = m
        .statuses
        .iter()
        .filter(|s| s.state == RecipientState::Pending)
        .map(|s| s.next_attempt.as_millis())
        .min()
        .unwrap_or(0);
    let recipients = m
        .envelope
        .recipients
        .iter()
        .cloned()
        .zip(m.statuses.iter().cloned())
        .collect();
    Moved {
        origin_id: m.id.as_u64(),
        arrival_ms: m.arrival.as_millis(),
        due_ms: due,
        priority: m.priority,
        sender: m.envelope.sender.clone(),
        meta: m.envelope.meta.clone(),
        recipients,
        body,
    }
}
