//! A glance over a spool before its recovery: what must be known before
//! the queue takes a single write, found without building the index.
//!
//! Opening in the background ([`crate::QueueOptions::recover_in_background`])
//! needs two things at once: the highest message id in the spool (new ids
//! must be above it) and the state values (the application reads them as
//! it starts: its operators' suspensions, whether it was draining). Both
//! come from every valid record of every segment, so the glance reads and
//! checks each segment as recovery does (the same scan, the same
//! checksums: a record the glance trusts is exactly a record recovery
//! will replay) but decodes only state records and the ids of the others.
//! It changes nothing on disk; the full recovery repairs afterwards.
//!
//! It also notes which messages each segment holds a record of, so that
//! the recovery can hand a message to the queue as soon as the last
//! segment holding one of its records has been read ([`release_plan`]):
//! delivery of recovered mail starts before the recovery ends.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;

use crate::codec::{
    self, KIND_MESSAGE, KIND_MESSAGE_PRIORITY, KIND_REMOVE, KIND_STATE, KIND_STATUS, Record,
};
use crate::error::QueueError;
use crate::segment::{self, SEGMENT_HEADER_LEN, SegId};
use crate::types::MessageId;

use super::Interner;

/// What the glance found.
#[derive(Debug, Default)]
pub(crate) struct Glance {
    /// The latest value of every state key (keys whose latest record
    /// removed them are absent).
    pub states: BTreeMap<Box<str>, Bytes>,
    /// The highest message id in any message or status record.
    pub max_id: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The last segment's torn tail, if it has one: (segment, where its
    /// valid records end, bytes after them). The open cuts it before the
    /// fresh segment starts, so that only ever the last segment on disk
    /// can end in a torn write.
    pub torn_tail: Option<(SegId, u64, u64)>,
    /// Each segment with a usable header, in log order, and the ids of
    /// the messages it holds a record of (a message, a status, a removal),
    /// with repeats.
    pub mentions: Vec<(SegId, Vec<u64>)>,
}

/// Glances over segments `ids` of the spool at `dir`, in log order: one
/// thread reads a segment ahead while this one checks the last read (the
/// two take about as long; a million 1 KB messages, 1.4 GB, in about a
/// third of a second each from the page cache).
pub(crate) fn glance(dir: &Path, ids: &[SegId]) -> Result<Glance, QueueError> {
    let mut g = Glance::default();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(SegId, Vec<u8>), QueueError>>(1);
        let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("tern-queue-glance".into())
            .spawn_scoped(scope, move || {
                for &seg in ids {
                    let mut buf = spare.try_recv().unwrap_or_default();
                    buf.clear();
                    let path = dir.join(segment::file_name(seg));
                    let read = match File::open(&path).and_then(|mut f| f.read_to_end(&mut buf)) {
                        Ok(_) => Ok((seg, buf)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => Err(QueueError::io(format!("read {}", path.display()), e)),
                    };
                    if tx.send(read).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| QueueError::io("start the glance thread", e))?;
        let mut interner = Interner::default();
        let last = ids.last().copied();
        for read in rx {
            let (seg, buf) = read?;
            g.segment(seg, &buf, &mut interner, Some(seg) == last);
            let _ = back.send(buf); // reused for a later segment
        }
        Ok::<(), QueueError>(())
    })?;
    Ok(g)
}

impl Glance {
    /// Takes what matters from every valid record of one segment's bytes.
    fn segment(&mut self, seg: SegId, buf: &[u8], interner: &mut Interner, last: bool) {
        self.bytes += buf.len() as u64;
        if buf.len() < SEGMENT_HEADER_LEN {
            return; // removed by recovery
        }
        let Ok(salt) = segment::decode_header(buf, seg) else {
            return; // quarantined by recovery: nothing in it is replayed
        };
        self.mentions.push((seg, Vec::new()));
        let outcome = segment::scan(buf, salt, |_, payload, _| self.note(payload, interner));
        if let Some(tail) = outcome.tail.filter(|_| last) {
            self.torn_tail = Some((seg, outcome.valid_end, tail.len));
        }
    }

    /// Takes what matters from one valid record's payload.
    fn note(&mut self, payload: &[u8], interner: &mut Interner) {
        match payload.first().copied() {
            Some(kind @ (KIND_MESSAGE | KIND_MESSAGE_PRIORITY | KIND_STATUS | KIND_REMOVE)) => {
                if let Some(id) = payload.get(1..9) {
                    let id = u64::from_le_bytes(id.try_into().expect("8 bytes"));
                    if kind != KIND_REMOVE {
                        self.max_id = self.max_id.max(id);
                    }
                    if let Some((_, ids)) = self.mentions.last_mut() {
                        ids.push(id);
                    }
                }
            }
            Some(KIND_STATE) => {
                // A record that does not decode is skipped by recovery too.
                if let Ok(Record::State(key, value)) = codec::decode(payload, interner) {
                    if value.is_empty() {
                        self.states.remove(&key);
                    } else {
                        self.states.insert(key, value);
                    }
                }
            }
            _ => {}
        }
    }
}

/// For each segment, the messages whose last record is in it: once the
/// recovery has read that segment, no segment still to read holds a
/// record of theirs (an outcome, a later retry time, a removal), so they
/// can join the queue. Ids in ascending order within a segment.
pub(crate) fn release_plan(mentions: Vec<(SegId, Vec<u64>)>) -> HashMap<SegId, Vec<MessageId>> {
    let total: usize = mentions.iter().map(|(_, ids)| ids.len()).sum();
    // About one record a message besides its own (a deferral): sized for
    // that, it grows once for a fresh spool.
    let mut last: HashMap<u64, SegId> = HashMap::with_capacity(total / 2);
    for (seg, ids) in mentions {
        for id in ids {
            last.insert(id, seg);
        }
    }
    let mut plan: HashMap<SegId, Vec<MessageId>> = HashMap::new();
    for (id, seg) in last {
        plan.entry(seg).or_default().push(MessageId::from_u64(id));
    }
    for ids in plan.values_mut() {
        ids.sort_unstable();
    }
    plan
}
