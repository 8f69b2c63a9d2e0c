//! The in-memory state of the queue: every live message's metadata, the
//! due-time order, and the bookkeeping that decides which segment files may
//! be deleted.
//!
//! The same `apply_*` functions are used when recovery replays the log and
//! when the writer commits a batch, so the state after a restart is exactly
//! the state before it. The index never does I/O.
//!
//! # Which segments may be deleted
//!
//! Records of one message live in its *home* segment (its latest full
//! record) and possibly later segments (status records). A segment may go
//! when both hold:
//! - no live message has a record in it (`refs == 0`), and
//! - every segment in its `deps` is already gone. A segment gets a dep on
//!   an older segment when it holds the record that ended a message homed
//!   there, or a relocated copy of a message whose older full record is
//!   there. Deleting it first would let recovery resurrect the message from
//!   the older record.
//!
//! The active segment is never deleted.

mod domains;
mod due;
mod entry;
mod merge;
mod state;
#[cfg(test)]
mod tests;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::packed::Packed;
use crate::segment::SegId;
use crate::types::{MessageId, RecipientState, RecipientStatus, Timestamp, UpdateOutcome};

pub(crate) use entry::{Due, Entry, Loc, OtherSeg, Statuses};

/// A bounded set of recent reply texts to share.
#[derive(Default)]
struct RecentReplies(HashSet<Arc<str>>);

impl RecentReplies {
    /// At most this many texts are kept; then the set starts over.
    const MAX: usize = 4096;

    fn intern(&mut self, text: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.0.get(&**text) {
            return known.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(text.clone());
        text.clone()
    }
}

/// Bookkeeping for one segment file.
pub(crate) struct SegInfo {
    /// Live messages with at least one record here.
    pub refs: u32,
    /// Older segments that must be deleted before this one.
    pub deps: BTreeSet<SegId>,
    /// Bytes in the file.
    pub size: u64,
    /// Bytes of full records of live messages homed here.
    pub live: u64,
    pub salt: u32,
    /// Open handle for reading bodies (`None` in a read-only inspection).
    pub file: Option<Arc<File>>,
}

/// A body to hand out: from RAM, or where to read it.
pub(crate) enum BodySource {
    Cached(Bytes),
    OnDisk {
        file: Arc<File>,
        loc: Loc,
        salt: u32,
    },
}

/// The whole in-memory state. Guarded by one mutex in [`crate::Queue`].
#[derive(Default)]
pub(crate) struct Index {
    /// Every live message. Boxed: ids arrive in increasing order, which
    /// leaves a B-tree's leaves half full, so a leaf slot holding a whole
    /// entry would cost twice the entry; a slot holding a pointer costs
    /// little (about 70 bytes less per message, `tests/memory.rs`).
    messages: BTreeMap<MessageId, Box<Entry>>,
    /// (priority, due time, id) of every message waiting to be taken.
    due: due::DueSet,
    /// Bodies kept in RAM until the first delivery attempt, within
    /// `cache_budget` (apart from the entries, which most messages would
    /// otherwise pay 32 bytes each for).
    cache: HashMap<MessageId, Bytes>,
    /// Recent reply texts, so that the recipients of many messages that got
    /// the same reply (a provider's deferral) share one copy.
    replies: RecentReplies,
    pub segments: BTreeMap<SegId, SegInfo>,
    pub active: SegId,
    pending: u64,
    /// Recipients held by an operator.
    held: u64,
    body_bytes: u64,
    live_bytes: u64,
    cache_used: u64,
    pub cache_budget: u64,
    /// Messages taken from their holder (claimed or removed while handed
    /// out): holders check their hand-outs again when it changes.
    pub disturbed: u64,
    /// The state values kept beside the messages, by key.
    states: BTreeMap<Box<str>, state::StateEntry>,
    /// Queued messages and recipients per domain, kept as they change.
    by_domain: domains::DomainCounts,
    /// The segments beyond an entry's first other one that hold its
    /// status records (a message deferred across several segments).
    more_others: HashMap<MessageId, Vec<SegId>>,
    /// While the spool is recovered in the background: what is known of
    /// it before the merge (`merge.rs`).
    recovering: Option<Box<merge::Recovering>>,
}

impl Index {
    pub fn new(cache_budget: u64) -> Self {
        Self {
            cache_budget,
            ..Default::default()
        }
    }

    /// An index for a spool recovered in the background, serving the
    /// glance's state values until the merge; new writes go to
    /// `first_new`, the segment started at the open.
    pub fn recovering(
        cache_budget: u64,
        states: std::collections::BTreeMap<Box<str>, Bytes>,
        first_new: SegId,
    ) -> Self {
        Self {
            recovering: Some(Box::new(merge::Recovering::new(states, first_new))),
            active: first_new,
            ..Self::new(cache_budget)
        }
    }

    /// Rebuilds the id map and the due set in one go each, with full
    /// nodes (after recovery, which grows them key by key, mostly in
    /// order: half-full nodes, about 30 bytes a message more).
    pub fn repack(&mut self) {
        self.messages = std::mem::take(&mut self.messages).into_iter().collect();
        self.due.repack();
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.messages.contains_key(&id)
    }

    pub fn entry(&self, id: MessageId) -> Option<&Entry> {
        self.messages.get(&id).map(|e| &**e)
    }

    /// Live messages.
    pub fn message_count(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Bytes of the bodies of live messages.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    #[cfg(test)]
    pub fn pending_recipients(&self) -> u64 {
        self.pending
    }

    pub(crate) fn seg(&mut self, id: SegId) -> &mut SegInfo {
        self.segments.entry(id).or_insert_with(|| SegInfo {
            refs: 0,
            deps: BTreeSet::new(),
            size: 0,
            live: 0,
            salt: 0,
            file: None,
        })
    }

    /// A full record of `id` was committed at `loc`: a new message, or a
    /// relocated copy that supersedes everything before it.
    pub fn apply_full(
        &mut self,
        id: MessageId,
        env: Packed,
        statuses: impl Into<Statuses>,
        (arrival, priority): (Timestamp, u8),
        loc: Loc,
        body: Option<Bytes>,
    ) {
        let mut entry = Entry {
            env,
            statuses: statuses.into(),
            arrival,
            priority,
            home: loc,
            others: OtherSeg::NONE,
            due: Due::NONE,
            taken: false,
            busy: 0,
            handout: 0,
        };
        let mut body = body;
        if let Some(cached) = self.uncache(id) {
            body = Some(cached); // a relocated copy keeps its cached body
        }
        if let Some(old) = self.messages.remove(&id) {
            self.detach(id, &old);
            if old.home.seg != loc.seg {
                self.seg(loc.seg).deps.insert(old.home.seg);
            }
            // A relocated copy is the same message: whoever holds it
            // still does.
            (entry.taken, entry.busy, entry.handout) = (old.taken, old.busy, old.handout);
        }
        if !entry.is_live() {
            return; // nothing left to deliver: not queued
        }
        if let Some(body) = body
            && self.cache_used + body.len() as u64 <= self.cache_budget
        {
            self.cache_used += body.len() as u64;
            self.cache.insert(id, body);
        }
        self.attach(id, &mut entry);
        self.messages.insert(id, Box::new(entry));
    }

    /// Counts a message in the totals and the due set.
    fn attach(&mut self, id: MessageId, e: &mut Entry) {
        let seg = self.seg(e.home.seg);
        seg.refs += 1;
        seg.live += u64::from(e.home.len);
        self.live_bytes += u64::from(e.home.len);
        self.pending += e.pending().count() as u64;
        self.held += e.held() as u64;
        self.by_domain.count(e, 1);
        self.body_bytes += e.home.body_len();
        if !e.taken {
            e.due = Due::from(e.due_key());
            if let Some(t) = e.due.get() {
                self.due.insert(e.priority, t, id);
            }
        }
    }

    /// Undoes `attach` and drops the references to every segment.
    fn detach(&mut self, id: MessageId, e: &Entry) {
        let more = self.more_others.remove(&id).unwrap_or_default();
        self.detach_from(id, e, &more);
    }

    /// `detach`, the entry's further status segments (`more_others`)
    /// already taken out.
    fn detach_from(&mut self, id: MessageId, e: &Entry, more: &[SegId]) {
        let home = self.seg(e.home.seg);
        home.refs -= 1;
        home.live -= u64::from(e.home.len);
        for &s in e.others.get().iter().chain(more) {
            self.seg(s).refs -= 1;
        }
        self.live_bytes -= u64::from(e.home.len);
        self.pending -= e.pending().count() as u64;
        self.held -= e.held() as u64;
        self.by_domain.count(e, -1);
        self.body_bytes -= e.home.body_len();
        if let Some(t) = e.due.get() {
            self.due.remove(e.priority, t, id);
        }
        self.uncache(id);
    }

    /// Drops a message's cached body, returning it.
    fn uncache(&mut self, id: MessageId) -> Option<Bytes> {
        let b = self.cache.remove(&id)?;
        self.cache_used -= b.len() as u64;
        Some(b)
    }

    /// Whether a message's body is in RAM.
    #[cfg(test)]
    pub fn is_cached(&self, id: MessageId) -> bool {
        self.cache.contains_key(&id)
    }

    /// Ends a message because of a record in `seg`.
    fn kill(&mut self, id: MessageId, seg: SegId) {
        if let Some(e) = self.messages.remove(&id) {
            self.detach(id, &e);
            if e.home.seg != seg {
                self.seg(seg).deps.insert(e.home.seg);
            }
        }
    }

    /// Applies a committed status record from `seg`. `None` if the message
    /// is unknown (already removed, or its full record was lost). With
    /// `release`, the message stops being handed out; without, whoever holds
    /// it keeps it (its other recipients are still being delivered).
    pub fn apply_status(
        &mut self,
        id: MessageId,
        changes: &[(u32, RecipientStatus)],
        seg: SegId,
        release: bool,
    ) -> Option<UpdateOutcome> {
        self.change_statuses(id, changes, Some(seg), release)
    }

    /// Applies status changes that were not written (a deferral while the
    /// spool is under its free-space reserve): the message keeps no
    /// record of them, so a restart forgets them. Only changes that leave
    /// the message queued are taken this way.
    pub fn apply_in_memory(
        &mut self,
        id: MessageId,
        changes: &[(u32, RecipientStatus)],
        release: bool,
    ) -> Option<UpdateOutcome> {
        self.change_statuses(id, changes, None, release)
    }

    fn change_statuses(
        &mut self,
        id: MessageId,
        changes: &[(u32, RecipientStatus)],
        seg: Option<SegId>,
        release: bool,
    ) -> Option<UpdateOutcome> {
        let e = self.messages.get_mut(&id)?;
        // The per-domain counts change only when a recipient starts or
        // stops being left to do (not for a deferral, a hold or a release).
        let recount = changes.iter().any(|(i, st)| {
            (e.statuses.get(*i as usize)).is_some_and(|s| s.state.is_final() != st.state.is_final())
        });
        if recount {
            self.by_domain.count(e, -1);
        }
        let (mut pending_delta, mut held_delta) = (0i64, 0i64);
        for (index, st) in changes {
            let Some(slot) = e.statuses.get_mut(*index as usize) else {
                continue;
            };
            pending_delta -= i64::from(slot.state == RecipientState::Pending);
            pending_delta += i64::from(st.state == RecipientState::Pending);
            held_delta -= i64::from(slot.state == RecipientState::Held);
            held_delta += i64::from(st.state == RecipientState::Held);
            *slot = st.clone();
            if let Some(r) = &slot.last_reply {
                slot.last_reply = Some(self.replies.intern(r));
            }
        }
        let more = &mut self.more_others;
        let known = |s: &SegId| {
            *s == e.home.seg
                || e.others.get() == Some(*s)
                || more.get(&id).is_some_and(|m| m.contains(s))
        };
        let add_ref = seg.filter(|s| !known(s));
        if let Some(s) = add_ref {
            match e.others.get() {
                None => e.others = OtherSeg::some(s),
                Some(_) => more.entry(id).or_default().push(s),
            }
        }
        let old_due = e.due.take();
        let priority = e.priority;
        if release {
            e.taken = false;
        }
        let live = e.is_live();
        if recount {
            self.by_domain.count(e, 1);
        }
        e.due = Due::from(e.due_key().filter(|_| !e.taken));
        let new_due = e.due.get();
        self.pending = self.pending.saturating_add_signed(pending_delta);
        self.held = self.held.saturating_add_signed(held_delta);
        self.uncache(id); // the first attempt is over
        if let Some(s) = add_ref {
            self.seg(s).refs += 1;
        }
        if let Some(t) = old_due {
            self.due.remove(priority, t, id);
        }
        if let Some(t) = new_due {
            self.due.insert(priority, t, id);
        }
        match (live, seg) {
            (false, Some(seg)) => {
                self.kill(id, seg);
                Some(UpdateOutcome::Removed)
            }
            _ => Some(UpdateOutcome::StillQueued),
        }
    }

    /// Applies a committed remove record from `seg`; false if unknown.
    pub fn apply_remove(&mut self, id: MessageId, seg: SegId) -> bool {
        let known = self.messages.contains_key(&id);
        if self.messages.get(&id).is_some_and(|e| e.taken) {
            self.disturbed += 1;
        }
        self.kill(id, seg);
        known
    }

    /// Segments that may be deleted now (see the module docs).
    pub fn deletable(&self) -> Vec<SegId> {
        self.segments
            .iter()
            .filter(|(id, s)| {
                **id != self.active
                    // Not an old one while a background recovery's
                    // accounting of them is not in.
                    && self.collectable(**id)
                    && s.refs == 0
                    && s.deps.iter().all(|d| !self.segments.contains_key(d))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Total bytes of the spool files and of live records in them.
    pub fn footprint(&self) -> (u64, u64) {
        (
            self.segments.values().map(|s| s.size).sum(),
            self.live_bytes,
        )
    }

    /// The oldest segment that is neither active nor already deletable.
    pub fn compaction_victim(&self) -> Option<SegId> {
        let deletable = self.deletable();
        self.segments
            .keys()
            .copied()
            .find(|id| *id != self.active && self.collectable(*id) && !deletable.contains(id))
    }

    /// Live messages with any record in `seg`, and their current homes.
    pub fn referencing(&self, seg: SegId) -> Vec<(MessageId, Loc)> {
        self.messages
            .iter()
            .filter(|(id, e)| {
                e.home.seg == seg
                    || e.others.get() == Some(seg)
                    || self.more_others.get(id).is_some_and(|m| m.contains(&seg))
            })
            .map(|(id, e)| (*id, e.home))
            .collect()
    }
}
