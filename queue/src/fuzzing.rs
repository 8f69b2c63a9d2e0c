//! Entry points for the fuzz targets (`fuzz/`, built with `--cfg fuzzing`
//! only): the record checks and decoder recovery runs on what it reads.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::{Check, ReplyInterner, check_record, decode};

struct Interner(HashMap<Box<str>, Arc<str>>);

impl ReplyInterner for Interner {
    fn intern(&mut self, text: &str) -> Arc<str> {
        self.0
            .entry(text.into())
            .or_insert_with(|| text.into())
            .clone()
    }
}

/// Walks `data` as recovery walks a segment's records (salt from its first
/// four bytes), and decodes every payload as if its checksum had matched.
pub fn records(data: &[u8]) {
    let Some((salt, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let salt = u32::from_le_bytes(*salt);
    let mut interner = Interner(HashMap::new());
    let _ = decode(rest, &mut interner);
    while !rest.is_empty() {
        match check_record(rest, salt) {
            Check::Valid { payload, total } => {
                assert!(total <= rest.len() && payload.len() < total);
                let _ = decode(payload, &mut interner);
                rest = &rest[total..];
            }
            Check::Invalid(_) | Check::Incomplete => return,
        }
    }
}
