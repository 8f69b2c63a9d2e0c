//! Segment files: naming, the 32-byte header, and scanning a segment's bytes
//! into valid records, corrupt regions and a torn tail.
//!
//! A segment is `<16 hex digits>.seg` in the spool directory:
//!
//! ```text
//! magic    8 bytes  "TERNSEG\0"
//! version  u32      1
//! salt     u32      random; mixed into every record checksum
//! id       u64      equals the number in the file name
//! reserved u32      0
//! crc      u32      crc32c of the 28 bytes before it
//! records...
//! ```
//!
//! Scanning never fails: whatever the bytes, it returns the valid records,
//! the regions it had to skip, and where the valid data ends.

use crate::codec::{Check, RECORD_MAGIC, check_record};

/// A segment's number; segments are written in increasing order.
pub(crate) type SegId = u64;

/// The largest segment number a file name may carry: far beyond any a
/// spool reaches (a segment a millisecond for a hundred million years),
/// and low enough that the next one never overflows and the index can
/// use the values above it as markers. A larger name is not a segment.
pub(crate) const MAX_SEGMENT_ID: SegId = (1 << 62) - 1;

pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
const SEGMENT_MAGIC: [u8; 8] = *b"TERNSEG\0";
const SEGMENT_VERSION: u32 = 1;
const SUFFIX: &str = ".seg";

/// The file name of segment `id`.
pub(crate) fn file_name(id: SegId) -> String {
    format!("{id:016x}{SUFFIX}")
}

/// The segment id of a file name, if it is a segment's name.
pub(crate) fn parse_file_name(name: &str) -> Option<SegId> {
    let hex = name.strip_suffix(SUFFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|id| *id <= MAX_SEGMENT_ID)
}

/// The header of a new segment.
pub(crate) fn encode_header(id: SegId, salt: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&salt.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads a segment header; returns the salt.
pub(crate) fn decode_header(buf: &[u8], expect_id: SegId) -> Result<u32, &'static str> {
    let h = buf
        .get(..SEGMENT_HEADER_LEN)
        .ok_or("segment header truncated")?;
    if h[0..8] != SEGMENT_MAGIC {
        return Err("not a tern segment (bad magic)");
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().expect("4"));
    if crc != crc32c::crc32c(&h[..28]) {
        return Err("segment header checksum mismatch");
    }
    if u32::from_le_bytes(h[8..12].try_into().expect("4")) != SEGMENT_VERSION {
        return Err("unsupported segment version");
    }
    if u64::from_le_bytes(h[16..24].try_into().expect("8")) != expect_id {
        return Err("segment header id differs from its file name");
    }
    Ok(u32::from_le_bytes(h[12..16].try_into().expect("4")))
}

/// A run of bytes that held no valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BadRegion {
    pub offset: u64,
    pub len: u64,
    pub reason: &'static str,
}

/// What a scan found besides the valid records.
#[derive(Debug, Default)]
pub(crate) struct ScanOutcome {
    /// Offset just past the last valid record (or the header).
    pub valid_end: u64,
    /// Regions skipped between valid records.
    pub corrupt: Vec<BadRegion>,
    /// Bytes after the last valid record that hold no valid record (a torn
    /// write, or garbage at the end).
    pub tail: Option<BadRegion>,
}

/// Walks the records of a whole segment file (`buf` includes the header),
/// calling `visit(offset, payload, total_len)` for each valid record.
pub(crate) fn scan(buf: &[u8], salt: u32, mut visit: impl FnMut(u64, &[u8], usize)) -> ScanOutcome {
    let mut out = ScanOutcome {
        valid_end: SEGMENT_HEADER_LEN as u64,
        ..Default::default()
    };
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < buf.len() {
        let reason = match check_record(&buf[pos..], salt) {
            Check::Valid { payload, total } => {
                visit(pos as u64, payload, total);
                pos += total;
                out.valid_end = pos as u64;
                continue;
            }
            Check::Invalid(reason) => reason,
            Check::Incomplete => "record runs past the end of the file",
        };
        match resync(buf, pos + 1, salt) {
            Some(next) => {
                out.corrupt.push(BadRegion {
                    offset: pos as u64,
                    len: (next - pos) as u64,
                    reason,
                });
                pos = next;
            }
            None => {
                out.tail = Some(BadRegion {
                    offset: pos as u64,
                    len: (buf.len() - pos) as u64,
                    reason,
                });
                break;
            }
        }
    }
    out
}

/// The offset of the next valid record at or after `from`, if any.
fn resync(buf: &[u8], from: usize, salt: u32) -> Option<usize> {
    let mut at = from;
    while at + RECORD_MAGIC.len() <= buf.len() {
        let rel = buf[at..]
            .windows(RECORD_MAGIC.len())
            .position(|w| w == RECORD_MAGIC)?;
        at += rel;
        if matches!(check_record(&buf[at..], salt), Check::Valid { .. }) {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{RECORD_HEADER_LEN, encode_remove};
    use crate::types::MessageId;

    fn segment(salt: u32, ids: &[u64]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = encode_header(1, salt).to_vec();
        let mut starts = Vec::new();
        for id in ids {
            let mut e = encode_remove(MessageId::from_u64(*id));
            e.seal(salt);
            starts.push(buf.len());
            buf.extend_from_slice(&e.head);
        }
        (buf, starts)
    }

    fn offsets(buf: &[u8], salt: u32) -> (Vec<u64>, ScanOutcome) {
        let mut seen = Vec::new();
        let out = scan(buf, salt, |off, _, _| seen.push(off));
        (seen, out)
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(0x2a), "000000000000002a.seg");
        assert_eq!(parse_file_name("000000000000002a.seg"), Some(0x2a));
        assert_eq!(parse_file_name("2a.seg"), None);
        assert_eq!(parse_file_name("000000000000002a.tmp"), None);
        assert_eq!(parse_file_name("00000000000000zz.seg"), None);
        assert_eq!(
            parse_file_name("3fffffffffffffff.seg"),
            Some(MAX_SEGMENT_ID)
        );
        assert_eq!(parse_file_name("ffffffffffffffff.seg"), None, "not ours");
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(7, 0xABCD);
        assert_eq!(decode_header(&h, 7), Ok(0xABCD));
        assert!(decode_header(&h, 8).is_err());
        assert!(decode_header(&h[..31], 7).is_err());
        let mut bad = h;
        bad[13] ^= 1;
        assert!(decode_header(&bad, 7).is_err());
    }

    #[test]
    fn clean_segment_has_no_findings() {
        let (buf, starts) = segment(5, &[1, 2, 3]);
        let (seen, out) = offsets(&buf, 5);
        assert_eq!(seen, starts.iter().map(|s| *s as u64).collect::<Vec<_>>());
        assert_eq!(out.valid_end, buf.len() as u64);
        assert!(out.corrupt.is_empty() && out.tail.is_none());
    }

    #[test]
    fn torn_tail_is_reported_not_skipped_over() {
        let (buf, starts) = segment(5, &[1, 2, 3]);
        let cut = &buf[..starts[2] + 5];
        let (seen, out) = offsets(cut, 5);
        assert_eq!(seen.len(), 2);
        assert_eq!(out.valid_end, starts[2] as u64);
        assert_eq!(out.tail.unwrap().offset, starts[2] as u64);
    }

    #[test]
    fn flipped_middle_record_is_skipped_and_the_rest_kept() {
        let (mut buf, starts) = segment(5, &[1, 2, 3]);
        buf[starts[1] + RECORD_HEADER_LEN + 2] ^= 0xFF;
        let (seen, out) = offsets(&buf, 5);
        assert_eq!(seen, vec![starts[0] as u64, starts[2] as u64]);
        assert_eq!(out.corrupt.len(), 1);
        assert_eq!(out.corrupt[0].offset, starts[1] as u64);
        assert!(out.tail.is_none());
    }

    #[test]
    fn corrupt_length_field_does_not_swallow_later_records() {
        let (mut buf, starts) = segment(5, &[1, 2, 3]);
        buf[starts[0] + 6] = 0x30; // claims a payload far past the end of the file
        let (seen, out) = offsets(&buf, 5);
        assert_eq!(seen, vec![starts[1] as u64, starts[2] as u64]);
        assert_eq!(out.corrupt.len(), 1);
    }

    #[test]
    fn records_sealed_with_another_salt_are_not_resynced() {
        let (mut buf, _) = segment(5, &[1]);
        let (other, starts) = segment(6, &[2]);
        buf.extend_from_slice(&other[starts[0]..]);
        let (seen, out) = offsets(&buf, 5);
        assert_eq!(seen.len(), 1);
        assert!(out.tail.is_some());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 12345;
        for len in [0usize, 1, 31, 32, 33, 50, 500, 5000] {
            let mut buf = encode_header(1, 9).to_vec();
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                buf.push((x >> 16) as u8);
            }
            // Sprinkle magics so the resync path runs too.
            if buf.len() > 100 {
                buf[60..64].copy_from_slice(&RECORD_MAGIC);
            }
            let _ = offsets(&buf, 9);
        }
    }
}
