//! Shared rates and counts in Redis: one task takes every request for
//! slots (and every refund of unused ones, and every request for a part
//! of a warm-up count) made since its last round trip and sends them
//! together, one pipelined round trip for all the paths that asked, then
//! hands each answer back. Never blocks the scheduler:
//! rates ask through a channel and learn the answer when it comes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::link::Link;
use crate::shaping::shared::{Ask, SharedCount, SharedRate};

/// A request for the task.
pub(super) enum Req {
    /// Slots for a rate.
    Refill(Arc<SharedRate>, Ask),
    /// Unused slots of a rate handed back: key, interval, count.
    Refund(Arc<str>, Duration, u32),
    /// A part of a capped count: the count, its cap, how much.
    Count(Arc<SharedCount>, u32, u32),
}

/// How long a day's count is kept in Redis.
const COUNT_TTL_MS: u64 = 2 * 86_400_000;

/// Most requests sent in one round trip.
const MAX_BATCH: usize = 512;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs until every sender is gone.
pub(super) async fn run(link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<Req>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !link.up() {
            // Redis is away: the rates go on alone (their limiters fall
            // back to their share); nothing is sent.
            fail(&batch);
            batch.clear();
            continue;
        }
        let mut answer = send(&link, &batch).await;
        if answer.as_ref().is_err_and(no_script) && link.load_scripts().await.is_ok() {
            answer = send(&link, &batch).await;
        }
        match answer {
            Ok(values) => answer_all(&batch, values),
            Err(_) => fail(&batch),
        }
        batch.clear();
    }
}

fn no_script(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// One pipelined round trip for the whole batch.
async fn send(link: &Link, batch: &[Req]) -> redis::RedisResult<Vec<redis::Value>> {
    let mut pipe = redis::pipe();
    for req in batch {
        match req {
            Req::Refill(rate, ask) => {
                let mut inv = link.scripts.take.key(link.key(&rate.key));
                inv.arg(ask.want)
                    .arg(micros(ask.interval))
                    .arg(u64::try_from(ask.tolerance.as_micros()).unwrap_or(u64::MAX));
                pipe.invoke_script(&inv);
            }
            Req::Refund(key, interval, count) => {
                let mut inv = link.scripts.refund.key(link.key(key));
                inv.arg(micros(*interval)).arg(*count);
                pipe.invoke_script(&inv);
            }
            Req::Count(count, cap, want) => {
                let mut inv = link.scripts.count.key(link.key(&count.key));
                inv.arg(*cap).arg(*want).arg(COUNT_TTL_MS);
                pipe.invoke_script(&inv);
            }
        }
    }
    let mut conn = link.conn();
    link.note(pipe.query_async(&mut conn).await)
}

fn answer_all(batch: &[Req], values: Vec<redis::Value>) {
    let mut values = values.into_iter();
    for req in batch {
        let value = values.next().map(redis::from_redis_value::<(u32, u64)>);
        match (req, value) {
            (Req::Refill(rate, _), Some(Ok((0, wait)))) => rate.denied(Duration::from_micros(wait)),
            (Req::Refill(rate, _), Some(Ok((granted, _)))) => rate.granted(granted),
            (Req::Refill(rate, _), _) => rate.failed(),
            (Req::Count(count, ..), Some(Ok((granted, full)))) => count.granted(granted, full != 0),
            (Req::Count(count, ..), _) => count.failed(),
            (Req::Refund(..), _) => {}
        }
    }
}

fn fail(batch: &[Req]) {
    for req in batch {
        match req {
            Req::Refill(rate, _) => rate.failed(),
            Req::Count(count, ..) => count.failed(),
            Req::Refund(..) => {}
        }
    }
}
