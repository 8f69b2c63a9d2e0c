//! The compactor thread: keeps disk use proportional to the live queue.
//!
//! Segments whose messages are all finished are deleted by the writer as
//! soon as nothing depends on them. What stays are segments pinned by a few
//! long-deferred messages. When the spool holds more than `RATIO` times the
//! bytes of its live records, the compactor takes the oldest segment, reads
//! back each live message that has a record in it, and asks the writer to
//! relocate it (write a full copy with its current statuses at the head of
//! the log). The oldest segment then has no references and no older
//! segments to wait for, so the writer deletes it.
//!
//! Cleaning oldest-first rewrites each long-lived message about once per
//! pass over the log; with the threshold at twice the live size, that costs
//! at most one byte rewritten per byte freed.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::body::read_body;
use crate::error::QueueError;
use crate::options::QueueOptions;
use crate::segment::SegId;
use crate::shared::Shared;
use crate::writer::{Cmd, Op, Request};

/// Compact when the files hold more than this many times the live bytes.
const RATIO: u64 = 2;
/// Relocations submitted before waiting for their commit.
const CHUNK: usize = 256;
/// How often the compactor looks even when not woken.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// True when the spool is big enough, and wasteful enough, to compact.
pub(crate) fn worth_compacting(opts: &QueueOptions, total: u64, live: u64) -> bool {
    total > opts.segment_size.saturating_mul(2) && total > live.saturating_mul(RATIO)
}

/// Runs until the queue stops.
pub(crate) fn run(shared: Arc<Shared>, tx: Sender<Cmd>) {
    use std::sync::atomic::Ordering;
    while !shared.stopping.load(Ordering::Acquire) {
        shared.compactor_wake.wait(IDLE_CHECK);
        while !shared.stopping.load(Ordering::Acquire) {
            let Some(victim) = next_victim(&shared) else {
                break;
            };
            match compact(&shared, &tx, victim) {
                Ok(()) if still_there(&shared, victim) => break, // wait for the next wake-up
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(segment = %format!("{victim:016x}"), error = %e, "spool compaction stopped");
                    break;
                }
            }
        }
    }
}

fn next_victim(shared: &Shared) -> Option<SegId> {
    let ix = shared.index();
    let (total, live) = ix.footprint();
    if !worth_compacting(&shared.opts, total, live) {
        return None;
    }
    ix.compaction_victim()
}

fn still_there(shared: &Shared, seg: SegId) -> bool {
    shared.index().segments.contains_key(&seg)
}

/// Relocates every live message, and every state value, with a record in
/// `victim`.
fn compact(shared: &Shared, tx: &Sender<Cmd>, victim: SegId) -> Result<(), QueueError> {
    let keys = shared.index().states_in(victim);
    let states = keys
        .into_iter()
        .map(|key| Op::RelocateState { key, from: victim });
    relocate(tx, states)?;
    let movers = shared.index().referencing(victim);
    tracing::debug!(segment = %format!("{victim:016x}"), messages = movers.len(), "compacting spool segment");
    for chunk in movers.chunks(CHUNK) {
        let ops = chunk.iter().filter_map(|(id, home)| match read_body(shared, *home) {
            Ok(body) => Some(Op::Relocate {
                id: *id,
                from: *home,
                body,
            }),
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read message for compaction; it stays where it is");
                None
            }
        });
        relocate(tx, ops)?;
    }
    Ok(())
}

/// Hands relocations to the writer, then waits for all of them.
fn relocate(tx: &Sender<Cmd>, ops: impl Iterator<Item = Op>) -> Result<(), QueueError> {
    let mut waits = Vec::new();
    for op in ops {
        let (reply, wait) = oneshot::channel();
        let req = Request {
            op,
            rec: None,
            reply,
        };
        tx.send(Cmd::Write(req)).map_err(|_| QueueError::Closed)?;
        waits.push(wait);
    }
    for w in waits {
        w.blocking_recv().map_err(|_| QueueError::Closed)??;
    }
    Ok(())
}
