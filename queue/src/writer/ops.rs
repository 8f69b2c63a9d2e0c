//! What the writer does with each kind of request once it is committed
//! (applied to the index), and the helpers its admission uses.

use std::fs::File;

use std::sync::Arc;

use super::files::create_segment;
use super::{Active, Done, Mark, Op, RESERVE_FILE, Request};
use crate::codec;
use crate::error::QueueError;
use crate::index::{Index, Loc};
use crate::segment::SegId;
use crate::shared::Shared;
use crate::types::{MessageId, RecipientStatus};

/// Free space as a batch is admitted: what is left of it (estimated),
/// the reserve, and why new mail is refused, if it is.
pub(super) struct Room {
    pub left: u64,
    pub min: u64,
    pub low: Option<Arc<str>>,
    /// Messages with an update admitted into this batch.
    pub touched: std::collections::HashSet<MessageId>,
}

/// Admits one request against committed state: returns it to be written
/// (its record encoded, for relocations and reschedules), or answers it
/// here (refused, nothing to do, or a deferral kept in memory below the
/// reserve) and returns `None`.
pub(super) fn judge(ix: &mut Index, r: Request, room: &mut Room) -> Option<Request> {
    let verdict = match &r.op {
        Op::Insert { notice: true, .. } | Op::PutState { .. } => Ok(()),
        Op::Insert { .. } => {
            room.left = room
                .left
                .saturating_sub(r.rec.as_ref().map_or(0, |e| e.len() as u64));
            let min = room.min;
            match &room.low {
                Some(reason) => Err(QueueError::Full(reason.clone())),
                None if min > 0 && room.left < min => Err(QueueError::Full(
                    format!("this message would take free space under the reserve of {min} bytes")
                        .into(),
                )),
                None => Ok(()),
            }
        }
        Op::Update { id, changes, .. } => match ix.entry(*id) {
            None => Err(QueueError::NotFound(*id)),
            Some(e) if changes.iter().any(|(i, _)| *i as usize >= e.statuses.len()) => {
                Err(QueueError::Invalid("recipient index out of range"))
            }
            Some(_) if room.low.is_some() && is_deferral(changes) => {
                let Op::Update {
                    id,
                    changes,
                    release,
                } = r.op
                else {
                    unreachable!("matched above")
                };
                let done = ix.apply_in_memory(id, &changes, release);
                let _ = r
                    .reply
                    .send(done.map(Done::Updated).ok_or(QueueError::NotFound(id)));
                return None;
            }
            Some(_) => {
                room.touched.insert(*id);
                Ok(())
            }
        },
        Op::Remove { id } if !ix.contains(*id) => Err(QueueError::NotFound(*id)),
        Op::Remove { .. } => Ok(()),
        Op::Mark { id, .. } if room.touched.contains(id) => {
            // An outcome of the message is in this batch, not yet applied:
            // a snapshot now could overwrite it. The caller may try again.
            let _ = r.reply.send(Ok(Done::Marked(0)));
            return None;
        }
        Op::Mark { .. } | Op::Relocate { .. } | Op::RelocateState { .. } => {
            return encode_snapshot(ix, r);
        }
    };
    match verdict {
        Ok(()) => Some(r),
        Err(e) => {
            let _ = r.reply.send(Err(e));
            None
        }
    }
}

/// Requests whose record is a snapshot of committed state, encoded now:
/// an operator's mark, a message's or a state value's relocation. Answered
/// here (and `None`) when there is nothing to write.
fn encode_snapshot(ix: &Index, mut r: Request) -> Option<Request> {
    let (rec, skipped) = match &r.op {
        Op::Mark { id, mark, .. } => match marked(ix, *id, *mark) {
            Some(c) => {
                let rec = codec::encode_status(*id, &c);
                if let Op::Mark { changes, .. } = &mut r.op {
                    *changes = c;
                }
                (Some(rec), Done::Marked(0))
            }
            None => (None, Done::Marked(0)),
        },
        Op::Relocate { id, from, body } => match ix.entry(*id) {
            Some(e) if e.home == *from => {
                let at = (e.arrival, e.priority);
                let rec =
                    codec::encode_message(*id, at, &e.env.unpack(), &e.statuses, body.clone());
                (Some(rec), Done::Relocated)
            }
            _ => (None, Done::Relocated),
        },
        Op::RelocateState { key, from } if ix.state_seg(key) == Some(*from) => {
            let value = ix.state(key).unwrap_or_default();
            let rec = codec::encode_state(key, &value);
            r.op = Op::PutState {
                key: key.clone(),
                value,
            };
            (Some(rec), Done::State)
        }
        _ => (None, Done::State),
    };
    match rec {
        Some(rec) => {
            r.rec = Some(rec);
            Some(r)
        }
        None => {
            let _ = r.reply.send(Ok(skipped));
            None
        }
    }
}

/// True when an update only defers: every recipient it changes stays
/// pending.
fn is_deferral(changes: &[(u32, RecipientStatus)]) -> bool {
    changes
        .iter()
        .all(|(_, s)| s.state == crate::types::RecipientState::Pending)
}

/// The changes `mark` makes to message `id` (see [`Mark`]); `None` when
/// there are none.
fn marked(ix: &Index, id: MessageId, mark: Mark) -> Option<Vec<(u32, RecipientStatus)>> {
    use crate::types::RecipientState::{Held, Pending};
    let e = ix.entry(id)?;
    let movable = match mark {
        Mark::Hold => e.busy == 0,
        Mark::Due(_) | Mark::Release(_) => !e.taken,
    };
    if !movable {
        return None;
    }
    let change = |s: &RecipientStatus| match mark {
        Mark::Due(at) if s.state == Pending && s.next_attempt > at => Some(RecipientStatus {
            next_attempt: at,
            ..s.clone()
        }),
        Mark::Hold if s.state == Pending => Some(RecipientStatus {
            state: Held,
            ..s.clone()
        }),
        Mark::Release(at) if s.state == Held => Some(RecipientStatus {
            state: Pending,
            next_attempt: at,
            ..s.clone()
        }),
        _ => None,
    };
    let changes: Vec<(u32, RecipientStatus)> = (e.statuses.iter().enumerate())
        .filter_map(|(i, s)| Some((i as u32, change(s)?)))
        .collect();
    (!changes.is_empty()).then_some(changes)
}

/// The first segment to write to: a fresh one; if it cannot be made (a
/// full disk at start), the reserve is released and it is tried again;
/// failing that, the last segment recovered is appended to, so that Tern
/// starts on a full spool and delivers (the door stays shut until there
/// is room).
pub(super) fn first_segment(shared: &Shared, dir: &File, id: SegId) -> Result<Active, QueueError> {
    let create = || {
        #[cfg(any(test, feature = "fault-injection"))]
        shared.faults.before_write()?;
        create_segment(&shared.dir, dir, id)
    };
    let err = match create() {
        Ok(a) => return Ok(a),
        Err(e) => e,
    };
    if std::fs::remove_file(shared.dir.join(RESERVE_FILE)).is_ok() {
        tracing::warn!("no room for a new spool segment at start: released the reserve file");
        if let Ok(a) = create() {
            return Ok(a);
        }
    }
    let ix = shared.index();
    let last = ix.segments.iter().next_back();
    match last.and_then(|(id, s)| Some((*id, s.file.clone()?, s.salt, s.size))) {
        Some((id, file, salt, size)) => {
            tracing::warn!(segment = %format!("{id:016x}"), error = %err, "no room for a new spool segment at start: appending to the last one");
            Ok(Active {
                id,
                file,
                salt,
                size,
            })
        }
        None => Err(QueueError::io(format!("create segment {id:016x}"), err)),
    }
}

/// Applies one committed operation to the index.
pub(super) fn apply_op(ix: &mut Index, op: Op, loc: Loc) -> Result<Done, QueueError> {
    match op {
        Op::Insert {
            id,
            env,
            statuses,
            arrival,
            body,
            ..
        } => {
            ix.apply_full(id, env, statuses, arrival, loc, Some(body));
            Ok(Done::Inserted)
        }
        Op::Update {
            id,
            changes,
            release,
        } => ix
            .apply_status(id, &changes, loc.seg, release)
            .map(Done::Updated)
            .ok_or(QueueError::NotFound(id)),
        Op::Remove { id } => {
            if ix.apply_remove(id, loc.seg) {
                Ok(Done::Removed)
            } else {
                Err(QueueError::NotFound(id))
            }
        }
        Op::Mark { id, mark, changes } => {
            let n = changes.len();
            if mark == Mark::Hold {
                ix.take_from_holder(id);
            }
            ix.apply_status(id, &changes, loc.seg, false)
                .map(|_| Done::Marked(n))
                .ok_or(QueueError::NotFound(id))
        }
        Op::PutState { key, value } => {
            ix.apply_state(key, value, loc.seg, loc.len);
            Ok(Done::State)
        }
        Op::RelocateState { .. } => Ok(Done::State), // admitted as a PutState
        Op::Relocate { id, .. } => {
            // Same content as committed state (only this thread changes it).
            if let Some(e) = ix.entry(id) {
                let (env, statuses) = (e.env.clone(), e.statuses.clone());
                let arrival = (e.arrival, e.priority);
                ix.apply_full(id, env, statuses, arrival, loc, None);
            }
            Ok(Done::Relocated)
        }
    }
}

pub(super) fn fail_all(staged: Vec<Request>, err: &QueueError) {
    for r in staged {
        let _ = r.reply.send(Err(clone_err(err)));
    }
}

/// Errors sent to several callers at once (the variants the writer produces).
pub(super) fn clone_err(e: &QueueError) -> QueueError {
    match e {
        QueueError::Full(r) => QueueError::Full(r.clone()),
        QueueError::Unhealthy(r) => QueueError::Unhealthy(r.clone()),
        other => QueueError::Unhealthy(other.to_string().into()),
    }
}
