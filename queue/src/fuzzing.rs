//! Entry points for the fuzz targets (`fuzz/`, built with `--cfg fuzzing`
//! only, or with `fault-injection` for the corpus replay): the record
//! checks and decoder recovery runs on what it reads.

use crate::codec::{Check, check_record, decode};
use crate::recovery::Interner;

/// Walks `data` as recovery walks a segment's records (salt from its first
/// four bytes), and decodes every payload as if its checksum had matched.
pub fn records(data: &[u8]) {
    let Some((salt, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let salt = u32::from_le_bytes(*salt);
    let mut interner = Interner::default();
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
