//! Reading a message body back from its segment, checksum-verified.
//! Used by `Queue::body` (delivery) and by the compactor.

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use crate::codec::{Check, check_record};
use crate::error::QueueError;
use crate::index::Loc;
use crate::segment;
use crate::shared::Shared;

/// Reads a message's body from its full record, checking the checksum.
pub(crate) fn read_body(shared: &Shared, loc: Loc) -> Result<Bytes, QueueError> {
    let (file, salt) = {
        let ix = shared.index();
        let seg = ix
            .segments
            .get(&loc.seg)
            .ok_or(QueueError::Invalid("segment gone"))?;
        (
            seg.file
                .clone()
                .ok_or(QueueError::Invalid("segment not open"))?,
            seg.salt,
        )
    };
    read_record_body(shared, &file, loc, salt)
}

/// Reads the record at `loc` from `file` and returns its body.
pub(crate) fn read_record_body(
    shared: &Shared,
    file: &std::fs::File,
    loc: Loc,
    salt: u32,
) -> Result<Bytes, QueueError> {
    let path = shared.dir.join(segment::file_name(loc.seg));
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, u64::from(loc.offset))
        .map_err(|e| QueueError::io(format!("read {} at {}", path.display(), loc.offset), e))?;
    match check_record(&buf, salt) {
        Check::Valid { total, .. } if total == buf.len() => {}
        Check::Invalid(reason) => {
            return Err(QueueError::Corrupt {
                path,
                offset: loc.offset.into(),
                reason,
            });
        }
        _ => {
            return Err(QueueError::Corrupt {
                path,
                offset: loc.offset.into(),
                reason: "record length changed",
            });
        }
    }
    Ok(Bytes::from(buf).slice(loc.body_offset as usize..))
}
