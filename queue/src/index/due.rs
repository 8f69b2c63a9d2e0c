//! The due set: every message waiting to be taken, ordered by priority,
//! then due time, then id. Each entry is 16 bytes (priority and time packed
//! into one word, then the id) rather than 24, which the B-tree's half-full
//! leaves (due times arrive mostly in order) double.

use std::collections::BTreeSet;

use crate::types::{MessageId, Timestamp};

/// Times are kept to 2^56 ms (two million years); later ones are that.
const MAX_MS: u64 = (1 << 56) - 1;

#[derive(Default)]
pub(crate) struct DueSet(BTreeSet<(u64, MessageId)>);

fn key(priority: u8, t: Timestamp) -> u64 {
    (u64::from(priority) << 56) | t.as_millis().min(MAX_MS)
}

impl DueSet {
    pub fn insert(&mut self, priority: u8, t: Timestamp, id: MessageId) {
        self.0.insert((key(priority, t), id));
    }

    pub fn remove(&mut self, priority: u8, t: Timestamp, id: MessageId) {
        self.0.remove(&(key(priority, t), id));
    }

    /// Rebuilds the set from its own sorted contents: a B-tree built in one
    /// go has full nodes, where one grown key by key in order has half-full
    /// ones.
    pub fn repack(&mut self) {
        self.0 = std::mem::take(&mut self.0).into_iter().collect();
    }

    /// Takes in every entry of `other` (a recovered index's).
    pub fn absorb(&mut self, other: DueSet) {
        let mine = std::mem::take(&mut self.0);
        self.0 = super::merge::into_bigger(mine, other.0, BTreeSet::len);
    }

    /// The earliest message of `priority`: when it is due, and its id.
    pub fn first_of(&self, priority: u8) -> Option<(Timestamp, MessageId)> {
        let start = (
            key(priority, Timestamp::from_millis(0)),
            MessageId::from_u64(0),
        );
        let &(k, id) = self.0.range(start..).next()?;
        ((k >> 56) as u8 == priority).then(|| (Timestamp::from_millis(k & MAX_MS), id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_first_then_time_then_id() {
        let mut d = DueSet::default();
        let t = Timestamp::from_millis;
        let id = MessageId::from_u64;
        d.insert(1, t(5), id(9));
        d.insert(1, t(5), id(3));
        d.insert(0, t(u64::MAX), id(1));
        d.insert(2, t(1), id(7));
        assert_eq!(d.first_of(0), Some((t(MAX_MS), id(1))));
        assert_eq!(d.first_of(1), Some((t(5), id(3))));
        d.remove(1, t(5), id(3));
        assert_eq!(d.first_of(1), Some((t(5), id(9))));
        assert_eq!(d.first_of(3), None);
        d.remove(0, t(u64::MAX), id(1));
        assert_eq!(d.first_of(0), None);
    }
}
