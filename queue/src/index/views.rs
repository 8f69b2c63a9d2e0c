//! The read side of the index: due messages, paging, bodies, counts.

use std::collections::HashMap;

use super::{BodySource, Index};
use crate::types::{
    DomainCount, LOWEST_PRIORITY, MessageId, MessageInfo, QueueStats, RecipientState, Timestamp,
};

impl Index {
    /// Hands out up to `limit` messages due at `now`, marking them in flight.
    pub fn take_due(&mut self, now: Timestamp, limit: usize) -> Vec<MessageInfo> {
        let mut out = Vec::new();
        // Priority first: every due message of priority 0, then of 1, ...
        for p in 0..=LOWEST_PRIORITY {
            while out.len() < limit {
                let start = (p, Timestamp::from_millis(0), MessageId::from_u64(0));
                let Some(&key) = self.due.range(start..).next() else {
                    break;
                };
                let (q, t, id) = key;
                if q != p || t > now {
                    break;
                }
                self.due.remove(&key);
                let e = self
                    .messages
                    .get_mut(&id)
                    .expect("due set only holds live messages");
                e.due = None;
                e.in_flight = true;
                out.push(e.info(id));
            }
        }
        out
    }

    /// Marks one message in flight, due or not, and hands it out (an
    /// operator's bounce); `None` if it is gone or already in flight.
    pub fn claim(&mut self, id: MessageId) -> Option<MessageInfo> {
        let e = self.messages.get_mut(&id)?;
        if e.in_flight {
            return None;
        }
        if let Some(t) = e.due.take() {
            self.due.remove(&(e.priority, t, id));
        }
        e.in_flight = true;
        Some(e.info(id))
    }

    /// Ends a message's in-flight state without a status change.
    pub fn release(&mut self, id: MessageId) -> bool {
        let Some(e) = self.messages.get_mut(&id) else {
            return false;
        };
        if e.in_flight {
            e.in_flight = false;
            e.due = e.due_key();
            if let Some(t) = e.due {
                self.due.insert((e.priority, t, id));
            }
        }
        true
    }

    /// The earliest time any message not in flight is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        (0..=LOWEST_PRIORITY)
            .filter_map(|p| {
                let start = (p, Timestamp::from_millis(0), MessageId::from_u64(0));
                self.due
                    .range(start..)
                    .next()
                    .filter(|k| k.0 == p)
                    .map(|k| k.1)
            })
            .min()
    }

    /// Up to `limit` messages with ids greater than `after`, in id order.
    pub fn page(&self, after: Option<MessageId>, limit: usize) -> Vec<MessageInfo> {
        let range = match after {
            Some(a) => self
                .messages
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.messages.range(..),
        };
        range.take(limit).map(|(id, e)| e.info(*id)).collect()
    }

    /// Where to get a message's body.
    pub fn body_source(&self, id: MessageId) -> Option<BodySource> {
        let e = self.messages.get(&id)?;
        if let Some(b) = self.cache.get(&id) {
            return Some(BodySource::Cached(b.clone()));
        }
        let seg = self.segments.get(&e.home.seg)?;
        Some(BodySource::OnDisk {
            file: seg.file.clone()?,
            loc: e.home,
            salt: seg.salt,
        })
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.messages.len() as u64,
            recipients: self.pending,
            body_bytes: self.body_bytes,
            disk_bytes: self.segments.values().map(|s| s.size).sum(),
            segments: self.segments.len() as u64,
        }
    }

    /// Pending recipients and messages per recipient domain, most recipients first.
    pub fn domains(&self) -> Vec<DomainCount> {
        let mut by: HashMap<String, (u64, u64, MessageId)> = HashMap::new();
        for (id, e) in &self.messages {
            for (r, st) in e.env.recipients.iter().zip(e.statuses.iter()) {
                if st.state != RecipientState::Pending {
                    continue;
                }
                let slot = by
                    .entry(r.domain().to_ascii_lowercase())
                    .or_insert((0, 0, *id));
                slot.1 += 1;
                if slot.0 == 0 || slot.2 != *id {
                    slot.0 += 1;
                    slot.2 = *id;
                }
            }
        }
        let mut out: Vec<DomainCount> = by
            .into_iter()
            .map(|(domain, (messages, recipients, _))| DomainCount {
                domain,
                messages,
                recipients,
            })
            .collect();
        out.sort_by(|a, b| {
            b.recipients
                .cmp(&a.recipients)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        out
    }
}
