//! The state values kept beside the messages (see [`crate::Queue::put_state`]):
//! the latest value of each key, and the segment accounting that keeps a
//! key's record alive (and an older record of it from coming back) until
//! it is superseded.

use bytes::Bytes;

use super::Index;
use crate::segment::SegId;

/// The value a key holds now, and where its record is.
pub(crate) struct StateEntry {
    pub value: Bytes,
    pub seg: SegId,
    /// Its record's length on disk.
    pub len: u32,
}

impl Index {
    /// Applies a committed state record of `len` bytes from `seg`.
    pub fn apply_state(&mut self, key: Box<str>, value: Bytes, seg: SegId, len: u32) {
        if let Some(r) = &mut self.recovering {
            r.wrote(&key, seg);
        }
        if let Some(old) = self.states.remove(&key) {
            let s = self.seg(old.seg);
            s.refs -= 1;
            s.live -= u64::from(old.len);
            self.live_bytes -= u64::from(old.len);
            if old.seg != seg {
                // Deleting the newer record first would bring the old value back.
                self.seg(seg).deps.insert(old.seg);
            }
        }
        if value.is_empty() {
            return;
        }
        let s = self.seg(seg);
        s.refs += 1;
        s.live += u64::from(len);
        self.live_bytes += u64::from(len);
        self.states.insert(key, StateEntry { value, seg, len });
    }

    /// The value `key` holds.
    pub fn state(&self, key: &str) -> Option<Bytes> {
        match self.states.get(key) {
            Some(e) => Some(e.value.clone()),
            None => self.provisional_state(key),
        }
    }

    /// The keys that hold a value and start with `prefix`, in order.
    pub fn state_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = self.live_keys(prefix);
        if self.is_recovering() {
            keys.extend(self.provisional_keys(prefix));
            keys.sort_unstable();
            keys.dedup();
        }
        keys
    }

    fn live_keys(&self, prefix: &str) -> Vec<String> {
        keys_with_prefix(&self.states, prefix)
            .map(str::to_owned)
            .collect()
    }

    /// The keys whose record is in `seg` (for compaction).
    pub fn states_in(&self, seg: SegId) -> Vec<Box<str>> {
        self.states
            .iter()
            .filter(|(_, e)| e.seg == seg)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The segment of `key`'s record, if it holds a value.
    pub fn state_seg(&self, key: &str) -> Option<SegId> {
        self.states.get(key).map(|e| e.seg)
    }
}

/// The keys of `map` that start with `prefix`, in order.
pub(super) fn keys_with_prefix<'a, V>(
    map: &'a std::collections::BTreeMap<Box<str>, V>,
    prefix: &'a str,
) -> impl Iterator<Item = &'a str> {
    map.range::<str, _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    ))
    .map(|(k, _)| &**k)
    .take_while(move |k| k.starts_with(prefix))
}
