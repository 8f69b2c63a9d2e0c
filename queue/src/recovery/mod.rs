//! Opening a spool: scan every segment, replay the records into a fresh
//! index, repair what a crash left behind, and report what was found.
//!
//! Whatever the directory holds, recovery does not fail on content: a bad
//! segment header sends that segment to `quarantine/`; a bad record is
//! skipped (its bytes are copied to `quarantine/` for inspection); a torn
//! tail of the last segment is truncated; files that are not segments are
//! listed and left alone. Only I/O errors (unreadable directory or file)
//! stop the open. In read-only mode nothing on disk is changed.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{self, Record, ReplyInterner};
use crate::error::QueueError;
use crate::index::{Index, Loc, SegInfo};
use crate::segment::{self, BadRegion, SEGMENT_HEADER_LEN, SegId};

mod glance;
pub(crate) use glance::{Glance, glance, release_plan};

/// Name of the quarantine directory inside the spool.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Name of the lock file inside the spool.
pub const LOCK_FILE: &str = "LOCK";
/// Corrupt regions listed one by one in the report (the count is always exact).
const MAX_LISTED: usize = 100;

/// One region of a segment that held no valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRegion {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Messages with pending recipients after recovery.
    pub messages: u64,
    /// Pending recipients after recovery.
    pub recipients: u64,
    /// Body bytes of the recovered messages.
    pub body_bytes: u64,
    /// Segment files read.
    pub segments: u64,
    /// Bytes read from segment files.
    pub bytes_read: u64,
    /// Valid records replayed.
    pub records: u64,
    /// Corrupt records skipped: damaged regions between valid records,
    /// damaged tails of sealed segments, and records that failed to decode.
    pub corrupt_records: u64,
    /// Corrupt regions (the first 100).
    pub corrupt: Vec<CorruptRegion>,
    /// Bytes cut off the end of the last segment (an interrupted write).
    pub torn_tail_bytes: u64,
    /// Records of a kind this version does not know, skipped.
    pub unknown_records: u64,
    /// Status or remove records for messages not in the spool (their
    /// message was finished, or its record was corrupt), ignored.
    pub orphan_records: u64,
    /// Segment files too short to hold a header (removed when writable).
    pub empty_segments: u64,
    /// Segments with an unreadable header, moved to `quarantine/`.
    pub quarantined_segments: Vec<PathBuf>,
    /// Files in the spool directory that are not Tern's, left alone.
    pub ignored_files: Vec<PathBuf>,
    /// Segments deleted because nothing in them was needed any more.
    pub deleted_segments: u64,
    /// Time the whole recovery took.
    pub elapsed: Duration,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages, {} recipients, {} body bytes from {} segments ({} records, {} bytes read) in {} ms; \
             {} corrupt records, {} torn-tail bytes truncated, {} unknown records, {} orphan records, \
             {} quarantined segments, {} ignored files",
            self.messages,
            self.recipients,
            self.body_bytes,
            self.segments,
            self.records,
            self.bytes_read,
            self.elapsed.as_millis(),
            self.corrupt_records,
            self.torn_tail_bytes,
            self.unknown_records,
            self.orphan_records,
            self.quarantined_segments.len(),
            self.ignored_files.len(),
        )
    }
}

/// Where the recovery of a spool opened in the background stands.
#[derive(Clone, Debug)]
pub enum Recovery {
    /// The old segments are being read: a message joins the queue once
    /// the last segment holding a record of it has been read; `released`
    /// have so far.
    Running {
        /// Messages of the spool back in the queue so far.
        released: u64,
    },
    /// Every message is in the queue; what recovery found.
    Done(Arc<RecoveryReport>),
    /// Recovery stopped (an I/O error, or the queue closed): the old
    /// messages stay on disk, untouched, for the next open.
    Failed(Arc<str>),
}

impl Recovery {
    pub(crate) fn done(report: &RecoveryReport) -> Self {
        Recovery::Done(Arc::new(report.clone()))
    }
}

/// The result of loading a spool.
pub(crate) struct Loaded {
    pub index: Index,
    pub report: RecoveryReport,
    pub max_id: u64,
    pub last_segment: Option<SegId>,
}

/// Shares one `Arc` per distinct reply text while records are decoded.
#[derive(Default)]
pub(crate) struct Interner(HashMap<Box<str>, Arc<str>>);

impl ReplyInterner for Interner {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(a) = self.0.get(text) {
            return a.clone();
        }
        let a: Arc<str> = text.into();
        self.0.insert(text.into(), a.clone());
        a
    }
}

/// Everything replay builds up while scanning.
struct Replay {
    index: Index,
    report: RecoveryReport,
    max_id: u64,
}

/// One segment as the reading thread prepared it: read, and (when its
/// header is good) its records checked and decoded.
struct Prepared {
    seg: SegId,
    path: PathBuf,
    file: File,
    len: u64,
    /// The bytes, kept only when something must be done with them (an
    /// unusable header, corrupt regions, a torn tail).
    buf: Option<Vec<u8>>,
    /// The salt, the decoded records (offset, length, record) and what the
    /// scan found, when the header is good.
    scanned: Option<(u32, Vec<Decoded>, segment::ScanOutcome)>,
}

type Decoded = (u64, usize, Result<Record, codec::DecodeError>);

/// Reads and decodes a segment (no side effects: repairs are the main
/// thread's).
fn prepare(
    seg: SegId,
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    interner: &mut Interner,
) -> Prepared {
    let len = buf.len() as u64;
    let salt = (buf.len() >= SEGMENT_HEADER_LEN)
        .then(|| segment::decode_header(&buf, seg).ok())
        .flatten();
    let Some(salt) = salt else {
        let buf = Some(buf);
        return Prepared {
            seg,
            path,
            file,
            len,
            buf,
            scanned: None,
        };
    };
    let mut records = Vec::new();
    let outcome = segment::scan(&buf, salt, |offset, payload, total| {
        records.push((offset, total, codec::decode(payload, interner)));
    });
    let keep = !outcome.corrupt.is_empty() || outcome.tail.is_some();
    let buf = keep.then_some(buf);
    Prepared {
        seg,
        path,
        file,
        len,
        buf,
        scanned: Some((salt, records, outcome)),
    }
}

/// Loads the spool at `dir`. With `writable`, repairs as it goes.
pub(crate) fn load(dir: &Path, writable: bool, cache_budget: u64) -> Result<Loaded, QueueError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let ids = list_segments(dir, &mut report)?;
    load_segments(dir, &ids, writable, cache_budget, (report, started), None)
}

/// What a recovery in the background adds to a load.
pub(crate) struct Background<'a> {
    /// Set when the queue closes: the load gives up between segments.
    pub stop: &'a std::sync::atomic::AtomicBool,
    /// Called after each segment is applied, in log order, with the index
    /// built so far (to release the messages it completed).
    pub after_segment: &'a mut dyn FnMut(SegId, &mut Index),
}

/// Loads segments `ids` (ascending, as listed) of the spool at `dir` into
/// a fresh index, adding to `report`; the last of them is the one whose
/// torn tail is cut. In the `background`, gives up between segments once
/// asked to stop, and says when each segment has been applied.
///
/// Two threads share the work: one reads each segment and checks and
/// decodes its records, a segment ahead; this one applies them to the
/// index in log order and makes the repairs.
pub(crate) fn load_segments(
    dir: &Path,
    ids: &[SegId],
    writable: bool,
    cache_budget: u64,
    (report, started): (RecoveryReport, Instant),
    mut background: Option<Background<'_>>,
) -> Result<Loaded, QueueError> {
    let mut st = Replay {
        index: Index::new(cache_budget),
        report,
        max_id: 0,
    };
    let last = ids.last().copied();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Prepared, QueueError>>(1);
        let reader_ids = ids.to_vec();
        std::thread::Builder::new()
            .name("tern-queue-read".into())
            .spawn_scoped(scope, move || {
                let mut interner = Interner::default();
                for seg in reader_ids {
                    let path = dir.join(segment::file_name(seg));
                    let next = match read_segment(&path, writable) {
                        Ok(None) => continue, // vanished (read-only inspection of a live spool)
                        Ok(Some((file, buf))) => Ok(prepare(seg, path, file, buf, &mut interner)),
                        Err(e) => Err(e),
                    };
                    if tx.send(next).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| QueueError::io("start the recovery thread", e))?;
        for prepared in rx {
            let prepared = prepared?;
            let seg = prepared.seg;
            let stop = background.as_ref().map(|bg| bg.stop);
            if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Acquire)) {
                return Err(QueueError::Closed);
            }
            apply_segment(dir, writable, last, &mut st, prepared)?;
            if let Some(bg) = &mut background {
                (bg.after_segment)(seg, &mut st.index);
            }
        }
        Ok::<(), QueueError>(())
    })?;
    st.index.repack();
    let stats = st.index.stats();
    st.report.messages = stats.messages;
    st.report.recipients = stats.recipients;
    st.report.body_bytes = stats.body_bytes;
    st.report.elapsed = started.elapsed();
    Ok(Loaded {
        index: st.index,
        report: st.report,
        max_id: st.max_id,
        last_segment: last,
    })
}

/// Applies one prepared segment to the index and repairs what it found.
fn apply_segment(
    dir: &Path,
    writable: bool,
    last: Option<SegId>,
    st: &mut Replay,
    p: Prepared,
) -> Result<(), QueueError> {
    let Prepared {
        seg,
        path,
        file,
        len,
        buf,
        scanned,
    } = p;
    st.report.bytes_read += len;
    let Some((salt, records, outcome)) = scanned else {
        let buf = buf.unwrap_or_default();
        check_header(dir, &path, seg, &buf, writable, &mut st.report)?;
        return Ok(());
    };
    st.report.segments += 1;
    st.index.segments.insert(
        seg,
        SegInfo {
            refs: 0,
            deps: Default::default(),
            size: len,
            live: 0,
            salt,
            file: Some(Arc::new(file)),
        },
    );
    for (offset, total, record) in records {
        st.replay(&path, seg, offset, total, record);
    }
    let buf = buf.unwrap_or_default();
    for region in &outcome.corrupt {
        note_corrupt(dir, &path, seg, region, &buf, writable, &mut st.report);
    }
    let Some(tail) = &outcome.tail else {
        return Ok(());
    };
    if Some(seg) != last {
        note_corrupt(dir, &path, seg, tail, &buf, writable, &mut st.report);
        return Ok(());
    }
    tracing::warn!(path = %path.display(), offset = tail.offset, bytes = tail.len, "truncating torn tail of the last spool segment");
    st.report.torn_tail_bytes += tail.len;
    if writable {
        truncate(&path, outcome.valid_end)?;
        if let Some(s) = st.index.segments.get_mut(&seg) {
            s.size = outcome.valid_end;
        }
    }
    Ok(())
}

/// The segment's salt, or `None` if it has no usable header (then it is
/// removed when empty, or quarantined).
fn check_header(
    dir: &Path,
    path: &Path,
    seg: SegId,
    buf: &[u8],
    writable: bool,
    report: &mut RecoveryReport,
) -> Result<Option<u32>, QueueError> {
    if buf.len() < SEGMENT_HEADER_LEN {
        report.empty_segments += 1;
        if writable {
            remove(path)?;
        }
        return Ok(None);
    }
    let reason = match segment::decode_header(buf, seg) {
        Ok(salt) => return Ok(Some(salt)),
        Err(reason) => reason,
    };
    tracing::error!(path = %path.display(), reason, "unreadable spool segment header; quarantined");
    report.corrupt_records += 1;
    if writable {
        let to = quarantine_dir(dir)?.join(segment::file_name(seg));
        fs::rename(path, &to)
            .map_err(|e| QueueError::io(format!("quarantine {}", path.display()), e))?;
        report.quarantined_segments.push(to);
    } else {
        report.quarantined_segments.push(path.to_owned());
    }
    Ok(None)
}

impl Replay {
    /// Applies one valid record (decoded) to the index.
    fn replay(
        &mut self,
        path: &Path,
        seg: SegId,
        offset: u64,
        total: usize,
        record: Result<Record, codec::DecodeError>,
    ) {
        self.report.records += 1;
        match record {
            Ok(Record::Message(m)) => {
                self.max_id = self.max_id.max(m.id.as_u64());
                let loc = Loc {
                    seg,
                    offset: offset as u32,
                    len: total as u32,
                    body_offset: m.body_offset,
                };
                self.index.apply_full(
                    m.id,
                    m.envelope,
                    m.statuses,
                    (m.arrival, m.priority),
                    loc,
                    None,
                );
            }
            Ok(Record::Status(s)) => {
                self.max_id = self.max_id.max(s.id.as_u64());
                if self
                    .index
                    .apply_status(s.id, &s.changes, seg, true)
                    .is_none()
                {
                    self.report.orphan_records += 1;
                }
            }
            Ok(Record::Remove(id)) => {
                if !self.index.apply_remove(id, seg) {
                    self.report.orphan_records += 1;
                }
            }
            Ok(Record::State(key, value)) => {
                self.index.apply_state(key, value, seg, total as u32);
            }
            Ok(Record::Unknown(kind)) => {
                tracing::warn!(path = %path.display(), offset, kind, "skipping spool record of unknown kind");
                self.report.unknown_records += 1;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), offset, reason = e.reason(), "skipping undecodable spool record");
                self.report.corrupt_records += 1;
                let region = CorruptRegion {
                    path: path.to_owned(),
                    offset,
                    len: total as u64,
                    reason: e.reason(),
                };
                push_region(&mut self.report, region);
            }
        }
    }
}

fn push_region(report: &mut RecoveryReport, region: CorruptRegion) {
    if report.corrupt.len() < MAX_LISTED {
        report.corrupt.push(region);
    }
}

/// Counts, logs and (when writable) copies a corrupt region to quarantine.
fn note_corrupt(
    dir: &Path,
    path: &Path,
    seg: SegId,
    region: &BadRegion,
    buf: &[u8],
    writable: bool,
    report: &mut RecoveryReport,
) {
    tracing::error!(path = %path.display(), offset = region.offset, len = region.len, reason = region.reason,
        "corrupt spool region skipped; the records after it were recovered");
    report.corrupt_records += 1;
    push_region(
        report,
        CorruptRegion {
            path: path.to_owned(),
            offset: region.offset,
            len: region.len,
            reason: region.reason,
        },
    );
    if writable {
        let start = region.offset as usize;
        let end = (start + region.len as usize).min(buf.len());
        let name = format!("{}-{:x}.bad", segment::file_name(seg), region.offset);
        let saved = quarantine_dir(dir).and_then(|q| {
            fs::write(q.join(&name), &buf[start..end])
                .map_err(|e| QueueError::io("write quarantine copy", e))
        });
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot keep a copy of the corrupt region");
        }
    }
}

/// Segment ids in the directory, ascending; notes files that are not ours.
pub(crate) fn list_segments(
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<Vec<SegId>, QueueError> {
    let entries = fs::read_dir(dir)
        .map_err(|e| QueueError::io(format!("read directory {}", dir.display()), e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| QueueError::io(format!("read directory {}", dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        match segment::parse_file_name(&name) {
            Some(id) if is_file => ids.push(id),
            _ if name == LOCK_FILE
                || name == QUARANTINE_DIR
                || name == crate::writer::RESERVE_FILE => {}
            _ => report.ignored_files.push(entry.path()),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Opens and reads a whole segment; `None` if it no longer exists.
fn read_segment(path: &Path, writable: bool) -> Result<Option<(File, Vec<u8>)>, QueueError> {
    let open = OpenOptions::new().read(true).append(writable).open(path);
    let file = match open {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !writable => return Ok(None),
        Err(e) => return Err(QueueError::io(format!("open {}", path.display()), e)),
    };
    let mut buf = Vec::new();
    match io::Read::read_to_end(&mut &file, &mut buf) {
        Ok(_) => Ok(Some((file, buf))),
        Err(e) => Err(QueueError::io(format!("read {}", path.display()), e)),
    }
}

pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), QueueError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| QueueError::io(format!("open {}", path.display()), e))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(|e| QueueError::io(format!("truncate torn tail of {}", path.display()), e))
}

fn remove(path: &Path) -> Result<(), QueueError> {
    fs::remove_file(path).map_err(|e| QueueError::io(format!("remove {}", path.display()), e))
}

fn quarantine_dir(dir: &Path) -> Result<PathBuf, QueueError> {
    let q = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&q).map_err(|e| QueueError::io(format!("create {}", q.display()), e))?;
    Ok(q)
}
