//! An index that serves while the spool is recovered in the background,
//! and its merge with the recovered one.
//!
//! While the old segments are read, the live index holds only what was
//! written since the open, in segments numbered above every old one. Old
//! messages are not in it: they cannot be handed out, listed or changed
//! until their recovery is complete (a later old segment may still hold
//! their outcome), so nothing written meanwhile refers to them. State
//! values are read from the glance's provisional copy, shadowed by every
//! key written since the open. No segment is deleted and none compacted
//! until the merge: the accounting that decides it is incomplete. If the
//! recovery fails, the merge never comes: the old segments stay as they
//! are until the next open, and the new ones, whose accounting is whole,
//! are collected and compacted again.
//!
//! A recovered message can join the live index before the merge, once the
//! last old segment holding a record of it has been read
//! ([`Index::release_into`]): nothing still to read can change it. From
//! then on it is the live index's, with its share of the old segments'
//! accounting (references, live bytes); the rest of that accounting stays
//! with the recovered index until the merge adds the two.
//!
//! The merge appends the live index to the recovered one, as replaying the
//! new segments after the old would: their messages are disjoint (new ids
//! are above every old one, and a released message has left the recovered
//! index), and a state key written since the open supersedes its
//! recovered record.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::{Index, SegInfo};
use crate::segment::SegId;
use crate::types::MessageId;

/// What the live index knows of the spool being recovered.
#[derive(Default)]
pub(crate) struct Recovering {
    /// The state values the glance found.
    pub states: BTreeMap<Box<str>, Bytes>,
    /// Keys written since the open, and the segment of each one's latest
    /// record (a removal included).
    written: HashMap<Box<str>, SegId>,
    /// The first segment written since the open: every old one is below.
    first_new: SegId,
    /// The recovery gave up: the old segments stay as they are until the
    /// next open, and the new ones are collected and compacted again.
    failed: bool,
}

impl Recovering {
    pub fn new(states: BTreeMap<Box<str>, Bytes>, first_new: SegId) -> Self {
        Self {
            states,
            written: HashMap::new(),
            first_new,
            failed: false,
        }
    }

    /// A key was written (or removed) by a record in `seg`.
    pub fn wrote(&mut self, key: &str, seg: SegId) {
        match self.written.get_mut(key) {
            Some(s) => *s = seg,
            None => {
                self.written.insert(key.into(), seg);
            }
        }
    }

    /// The provisional value of a key not written since the open.
    fn value(&self, key: &str) -> Option<Bytes> {
        if self.written.contains_key(key) {
            return None;
        }
        self.states.get(key).cloned()
    }
}

/// The items of both collections (B-tree maps or sets) in the bigger
/// one: the smaller's inserted one by one, where `append` would build a
/// third tree (the peak, and the freed nodes of both that the allocator
/// keeps, cost the resident memory of a million-message queue).
pub(super) fn into_bigger<C, T>(a: C, b: C, len: impl Fn(&C) -> usize) -> C
where
    C: Extend<T> + IntoIterator<Item = T>,
{
    let (mut big, small) = if len(&a) >= len(&b) { (a, b) } else { (b, a) };
    big.extend(small);
    big
}

impl Index {
    /// Whether the index waits for a background recovery's merge.
    pub fn is_recovering(&self) -> bool {
        self.recovering.is_some()
    }

    /// The background recovery gave up (an I/O error, or the queue
    /// closed): its merge will not come. The old segments' accounting stays
    /// incomplete, so they are never deleted or compacted until the next
    /// open; the segments written since the open are accounted whole (the
    /// messages released before the failure included) and are collected
    /// and compacted again.
    pub fn recovery_failed(&mut self) {
        if let Some(r) = &mut self.recovering {
            r.failed = true;
        }
    }

    /// Whether segment `seg` may be deleted or compacted as its
    /// accounting says: always, unless a background recovery has not
    /// merged (never while it runs; only the new segments once it failed).
    pub(super) fn collectable(&self, seg: SegId) -> bool {
        self.recovering
            .as_ref()
            .is_none_or(|r| r.failed && seg >= r.first_new)
    }

    /// The value of `key` not written since the open, while recovering.
    pub(super) fn provisional_state(&self, key: &str) -> Option<Bytes> {
        self.recovering.as_ref()?.value(key)
    }

    /// Provisional keys starting with `prefix`, while recovering.
    pub(super) fn provisional_keys(&self, prefix: &str) -> Vec<String> {
        let Some(r) = &self.recovering else {
            return Vec::new();
        };
        super::state::keys_with_prefix(&r.states, prefix)
            .filter(|k| !r.written.contains_key(*k))
            .map(str::to_owned)
            .collect()
    }

    /// Moves the messages `ids` of this recovered index, which no old
    /// segment still to read holds a record of, to the `live` one, with
    /// their share of the old segments' accounting; ids no longer here
    /// (finished in a later segment) are skipped. Returns how many moved.
    pub fn release_into(&mut self, live: &mut Index, ids: &[MessageId]) -> u64 {
        let mut moved = 0;
        for &id in ids {
            let Some(mut e) = self.messages.remove(&id) else {
                continue;
            };
            let more = self.more_others.remove(&id).unwrap_or_default();
            self.detach_from(id, &e, &more);
            for s in std::iter::once(e.home.seg)
                .chain(e.others.get())
                .chain(more.iter().copied())
            {
                if let Some(info) = self.segments.get(&s) {
                    live.adopt_segment(s, info);
                }
            }
            for &s in e.others.get().iter().chain(&more) {
                live.seg(s).refs += 1;
            }
            if !more.is_empty() {
                live.more_others.insert(id, more);
            }
            e.due = super::Due::NONE;
            live.attach(id, &mut e);
            live.messages.insert(id, e);
            moved += 1;
        }
        moved
    }

    /// Knows old segment `s` (as `info` describes it) with none of its
    /// accounting yet: what the released messages bring.
    fn adopt_segment(&mut self, s: SegId, info: &SegInfo) {
        self.segments.entry(s).or_insert_with(|| SegInfo {
            refs: 0,
            deps: Default::default(),
            size: info.size,
            live: 0,
            salt: info.salt,
            file: info.file.clone(),
        });
    }

    /// Takes in the index recovered from the old segments: afterwards this
    /// index is what one recovery of every segment would have built.
    pub fn absorb(&mut self, mut old: Index) {
        let Some(recovering) = self.recovering.take() else {
            return;
        };
        for (key, seg) in recovering.written {
            if let Some(prev) = old.states.remove(&key) {
                let s = old.seg(prev.seg);
                s.refs -= 1;
                s.live -= u64::from(prev.len);
                old.live_bytes -= u64::from(prev.len);
                // Deleting the newer record first would bring this one back.
                self.seg(seg).deps.insert(prev.seg);
            }
        }
        old.states.append(&mut self.states);
        self.states = old.states;
        if let Some((first_new, _)) = self.messages.first_key_value()
            && let Some((last_old, _)) = old.messages.last_key_value()
            && last_old >= first_new
        {
            // Never expected: new ids start above the glance's highest.
            tracing::error!(%last_old, %first_new, "recovered message ids overlap new ones; where one id is both, one of the two is kept");
        }
        let live = std::mem::take(&mut self.messages);
        self.messages = into_bigger(old.messages, live, BTreeMap::len);
        self.due.absorb(old.due);
        self.segments = merge_segments(old.segments, std::mem::take(&mut self.segments));
        self.by_domain.absorb(old.by_domain);
        self.more_others.extend(old.more_others);
        self.pending += old.pending;
        self.held += old.held;
        self.body_bytes += old.body_bytes;
        self.live_bytes += old.live_bytes;
        self.disturbed += old.disturbed;
    }
}

/// The segments of the recovered index and of the live one, one
/// accounting: an old segment the live index knows (through released
/// messages) has its references, live bytes and dependencies in both.
fn merge_segments(
    mut old: BTreeMap<SegId, SegInfo>,
    live: BTreeMap<SegId, SegInfo>,
) -> BTreeMap<SegId, SegInfo> {
    for (s, info) in live {
        match old.get_mut(&s) {
            Some(o) => {
                o.refs += info.refs;
                o.live += info.live;
                o.deps.extend(info.deps);
            }
            None => {
                old.insert(s, info);
            }
        }
    }
    old
}
