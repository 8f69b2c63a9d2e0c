//! The read side of the index: due messages, paging, bodies, counts.

use super::{BodySource, Index};
use crate::types::{DomainCount, LOWEST_PRIORITY, MessageId, MessageInfo, QueueStats, Timestamp};

impl Index {
    /// Hands out up to `limit` messages due at `now`, marking them taken.
    pub fn take_due(&mut self, now: Timestamp, limit: usize) -> Vec<MessageInfo> {
        let mut out = Vec::new();
        // Priority first: every due message of priority 0, then of 1, ...
        for p in 0..=LOWEST_PRIORITY {
            while out.len() < limit {
                let Some((t, id)) = self.due.first_of(p).filter(|(t, _)| *t <= now) else {
                    break;
                };
                self.due.remove(p, t, id);
                let Some(e) = self.messages.get_mut(&id) else {
                    continue; // the due set only holds live messages
                };
                e.due = super::Due::NONE;
                e.taken = true;
                e.handout = e.handout.wrapping_add(1);
                out.push(e.info(id));
            }
        }
        out
    }

    /// Takes one message, due or not, and hands it out (an operator's
    /// action); `None` if it is gone or being sent. A message taken by
    /// someone else and not being sent changes hands: its former holder's
    /// hand-out is stale.
    pub fn claim(&mut self, id: MessageId) -> Option<MessageInfo> {
        let e = self.messages.get_mut(&id)?;
        if e.busy > 0 {
            return None;
        }
        if let Some(t) = e.due.take() {
            self.due.remove(e.priority, t, id);
        }
        if e.taken {
            self.disturbed += 1;
        }
        e.taken = true;
        e.handout = e.handout.wrapping_add(1);
        Some(e.info(id))
    }

    /// Takes a message from whoever holds it, not being sent (an operator
    /// holds it): the holder's hand-out goes stale, and the message is
    /// due again when its recipients are.
    pub fn take_from_holder(&mut self, id: MessageId) {
        let Some(e) = self.messages.get_mut(&id) else {
            return;
        };
        if e.taken && e.busy == 0 {
            e.handout = e.handout.wrapping_add(1);
            self.disturbed += 1;
            self.release(id);
        }
    }

    /// A send of message `id` of hand-out `handout` starts: its current
    /// metadata, or `None` if that hand-out is stale (the message is gone,
    /// released, or taken again since).
    pub fn begin(&mut self, id: MessageId, handout: u32) -> Option<MessageInfo> {
        let e = self.messages.get_mut(&id)?;
        if !e.taken || e.handout != handout {
            return None;
        }
        e.busy = e.busy.saturating_add(1);
        Some(e.info(id))
    }

    /// A send started by `begin` is over.
    pub fn end(&mut self, id: MessageId) {
        if let Some(e) = self.messages.get_mut(&id) {
            e.busy = e.busy.saturating_sub(1);
        }
    }

    /// True while hand-out `handout` of message `id` still holds it.
    pub fn is_current(&self, id: MessageId, handout: u32) -> bool {
        self.messages
            .get(&id)
            .is_some_and(|e| e.taken && e.handout == handout)
    }

    /// Ends a message's hand-out without a status change: it is due again
    /// when its recipients are.
    pub fn release(&mut self, id: MessageId) -> bool {
        let Some(e) = self.messages.get_mut(&id) else {
            return false;
        };
        if e.taken {
            e.taken = false;
            e.due = super::Due::from(e.due_key());
            if let Some(t) = e.due.get() {
                self.due.insert(e.priority, t, id);
            }
        }
        true
    }

    /// The earliest time any message not handed out is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        (0..=LOWEST_PRIORITY)
            .filter_map(|p| self.due.first_of(p).map(|(t, _)| t))
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
        // Sized up front: growing a page of a thousand copies reallocates
        // and moves it several times (2 % of a million-message purge).
        let mut page = Vec::with_capacity(limit.min(self.messages.len()));
        page.extend(range.take(limit).map(|(id, e)| e.info(*id)));
        page
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
            held: self.held,
            body_bytes: self.body_bytes,
            disk_bytes: self.segments.values().map(|s| s.size).sum(),
            segments: self.segments.len() as u64,
        }
    }

    /// Queued (pending or held) recipients and messages per recipient
    /// domain, most recipients first: from counts kept as messages change.
    pub fn domains(&self) -> Vec<DomainCount> {
        self.by_domain.rows()
    }
}
