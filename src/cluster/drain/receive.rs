//! Taking over a draining peer's messages, exactly once.
//!
//! A batch's messages are written to the spool durably (group-committed)
//! with their recipients' statuses, their pending recipients held (due at
//! [`HELD_MS`], never sent) and their origin (the peer and its queue id)
//! in their metadata; the answer lists them only then. The peer then
//! removes its copies and commits: the held messages become due when
//! they were due there. A batch sent again (the peer crashed, or the
//! answer was lost) finds its messages by origin and is answered without
//! a second copy: the origins of held messages are indexed, rebuilt from
//! the spool after a restart. Committed messages are ordinary mail.
//! Never sends anything; the drain's sending side is [`super::send`].

use std::collections::HashMap;
use std::sync::Arc;

use queue::{Envelope, MessageId, NewMessage, Queue, RecipientState, Timestamp};
use tokio::sync::{Mutex, MutexGuard, Notify};

use super::wire::{Moved, Refused, Taken};
use crate::message::{MessageMeta, Origin};

/// When a held hand-over's pending recipients are due: never, in
/// practice (2200-01-01), until the hand-over is committed.
pub const HELD_MS: u64 = 7_258_118_400_000;

/// Held hand-overs: (node, its queue id) -> the message here.
type Index = HashMap<(String, u64), MessageId>;

/// The receiving side of drains.
pub struct Receiver {
    queue: Arc<Queue>,
    wake: Arc<Notify>,
    log: Arc<crate::log::DeliveryLog>,
    clock: crate::clock::Clock,
    /// Built from the spool at first use.
    index: Mutex<Option<Index>>,
}

/// True when `m` is a hand-over not yet committed (its pending
/// recipients are held): operators' "retry now" leaves it alone.
pub fn held(m: &queue::MessageInfo) -> bool {
    m.statuses
        .iter()
        .any(|s| s.state == RecipientState::Pending && s.next_attempt.as_millis() == HELD_MS)
}

impl Receiver {
    /// Takes over into `queue`; `wake` starts delivery of committed mail.
    pub fn new(
        queue: Arc<Queue>,
        wake: Arc<Notify>,
        log: Arc<crate::log::DeliveryLog>,
        clock: crate::clock::Clock,
    ) -> Self {
        Self {
            queue,
            wake,
            log,
            clock,
            index: Mutex::new(None),
        }
    }

    /// The index of held hand-overs, built from the spool the first time.
    async fn index(&self) -> MutexGuard<'_, Option<Index>> {
        let mut guard = self.index.lock().await;
        if guard.is_none() {
            // Built once, from every queued message.
            self.queue.recovered().await;
            let mut index = Index::new();
            let mut after = None;
            loop {
                let page = self.queue.page(after, 10_000);
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                for m in page.iter().filter(|m| held(m)) {
                    if let Some(o) = MessageMeta::decode(&m.envelope.meta).origin {
                        index.insert((o.node, o.id), m.id);
                    }
                }
            }
            *guard = Some(index);
        }
        guard
    }

    /// Writes `batch` from `node` durably (held until committed); a
    /// message already held here is answered without a second copy.
    pub async fn take(&self, node: &str, batch: Vec<Moved>) -> Taken {
        let mut guard = self.index().await;
        let index = guard.get_or_insert_with(Index::new);
        let mut taken = Taken::default();
        let mut writes = tokio::task::JoinSet::new();
        for m in batch {
            if index.contains_key(&(node.to_owned(), m.origin_id)) {
                taken.accepted.push(m.origin_id);
                continue;
            }
            let (origin, msg, statuses) = self.message(node, m);
            let queue = self.queue.clone();
            writes.spawn(async move { (origin, queue.adopt(msg, statuses).await) });
        }
        while let Some(done) = writes.join_next().await {
            match done {
                Ok((origin, Ok(id))) => {
                    index.insert((node.to_owned(), origin), id);
                    taken.accepted.push(origin);
                    self.logged(node, origin, id);
                }
                Ok((origin, Err(e))) => taken.refused.push(Refused {
                    id: origin,
                    error: e.to_string(),
                }),
                Err(e) => tracing::error!(error = %e, "cluster: a hand-over write was lost"),
            }
        }
        taken
    }

    /// The message to write for `m`: its metadata with its origin, its
    /// pending recipients held.
    fn message(&self, node: &str, m: Moved) -> (u64, NewMessage, Vec<queue::RecipientStatus>) {
        let mut meta = MessageMeta::decode(&m.meta);
        meta.origin = Some(Origin {
            node: node.to_owned(),
            id: m.origin_id,
            due_ms: m.due_ms,
        });
        let (recipients, mut statuses): (Vec<_>, Vec<_>) = m.recipients.into_iter().unzip();
        for s in statuses
            .iter_mut()
            .filter(|s| s.state == RecipientState::Pending)
        {
            s.next_attempt = Timestamp::from_millis(HELD_MS);
        }
        let arrival = Timestamp::from_millis(m.arrival_ms);
        let msg = NewMessage {
            id: None,
            envelope: Envelope {
                sender: m.sender,
                meta: meta.encode().into(),
                recipients: recipients.into(),
            },
            arrival,
            first_attempt: arrival,
            priority: m.priority,
            body: m.body,
        };
        (m.origin_id, msg, statuses)
    }

    fn logged(&self, node: &str, origin: u64, id: MessageId) {
        use crate::log::{Kind, Record};
        let Some(info) = self.queue.get(id) else {
            return;
        };
        let now = self.clock.system_time();
        let mut r = Record::new(
            Kind::Adopted,
            now,
            id.to_string(),
            info.envelope.sender.to_string(),
        );
        r.recipients = Some(info.pending().count());
        r.size = Some(info.body_len);
        r.target = Some(format!("{node} {}", MessageId::from_u64(origin)).into());
        self.log.write(&r);
    }

    /// The peer removed its copies of `ids`: they become due here when
    /// they were due there. Ids not held (already committed) are skipped.
    /// Returns how many were released.
    pub async fn commit(&self, node: &str, ids: &[u64]) -> Result<u64, queue::QueueError> {
        let mut guard = self.index().await;
        let index = guard.get_or_insert_with(Index::new);
        let mut writes = tokio::task::JoinSet::new();
        for origin in ids {
            let Some(&id) = index.get(&(node.to_owned(), *origin)) else {
                continue;
            };
            let due = self
                .queue
                .get(id)
                .and_then(|m| MessageMeta::decode(&m.envelope.meta).origin)
                .map_or(0, |o| o.due_ms);
            let (queue, origin) = (self.queue.clone(), *origin);
            writes.spawn(async move {
                let r = queue.reschedule(id, Timestamp::from_millis(due)).await;
                (origin, r)
            });
        }
        let mut released = 0;
        let mut failed = None;
        while let Some(Ok((origin, r))) = writes.join_next().await {
            match r {
                Ok(_) | Err(queue::QueueError::NotFound(_)) => {
                    index.remove(&(node.to_owned(), origin));
                    released += 1;
                }
                Err(e) => failed = Some(e),
            }
        }
        if released > 0 {
            self.wake.notify_one();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }

    /// Hand-overs held here now, waiting for their commit.
    pub async fn held_count(&self) -> usize {
        self.index().await.as_ref().map_or(0, HashMap::len)
    }
}
