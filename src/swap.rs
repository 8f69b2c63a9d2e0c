//! A value a config reload replaces while its readers keep the one they
//! took: readers clone an `Arc` under a read lock held for a moment, so a
//! reload never waits for a delivery or a transaction to end, and nothing
//! under way sees a half-applied config.

use std::sync::{Arc, RwLock};

/// The current value of a reloadable part.
#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `value` in force; returns the one it replaces.
    pub fn set(&self, value: T) -> Arc<T> {
        let mut w = self.0.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *w, Arc::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_what_it_took_while_new_readers_see_the_new_value() {
        let s = Swap::new(1);
        let taken = s.get();
        assert_eq!(*s.set(2), 1);
        assert_eq!((*taken, *s.get()), (1, 2));
    }
}
