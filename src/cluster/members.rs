//! Membership: each node says it is alive every `cluster.heartbeat` (a
//! key that lives `cluster.node_timeout`, holding its state, queue size
//! and admin address, and its name in a sorted set scored by when it was
//! last heard from), and counts the nodes heard from within the timeout:
//! the shared limits are split over that many while Redis is away.
//! Never moves mail (the drain does).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::link::Link;
use crate::views::NodeRow;

/// Nodes not heard from for this long leave the list.
const FORGET: Duration = Duration::from_secs(7 * 86_400);

/// What a heartbeat says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    /// `accepting` or `draining`.
    pub mode: String,
    /// Messages queued.
    pub queued: u64,
    /// Where peers reach its admin API.
    pub admin: Option<String>,
    /// When it started (RFC 3339).
    pub started: String,
}

/// This node's membership.
#[derive(Debug)]
pub(super) struct Members {
    node: String,
    timeout: Duration,
    /// Nodes alive when last counted (at least 1).
    alive: AtomicU32,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Members {
    pub(super) fn new(node: &str, timeout: Duration, alive: u32) -> Self {
        Self {
            node: node.to_owned(),
            timeout,
            alive: AtomicU32::new(alive.max(1)),
        }
    }

    /// Nodes alive when last counted.
    pub(super) fn alive(&self) -> u32 {
        self.alive.load(Ordering::Acquire).max(1)
    }

    /// Says this node is alive, and counts the nodes that are; returns
    /// the count when it changed.
    pub(super) async fn beat(
        &self,
        link: &Link,
        beat: &Beat,
        now: SystemTime,
    ) -> redis::RedisResult<Option<u32>> {
        let now = millis(now);
        let timeout = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let value = serde_json::to_string(beat).unwrap_or_default();
        let nodes = link.key("nodes");
        let mut pipe = redis::pipe();
        pipe.set_options(
            link.key(&format!("node:{}", self.node)),
            value,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(timeout)),
        )
        .ignore()
        .zadd(&nodes, &self.node, now)
        .ignore()
        .zrembyscore(
            &nodes,
            "-inf",
            now.saturating_sub(u64::try_from(FORGET.as_millis()).unwrap_or(0)),
        )
        .ignore()
        .zcount(&nodes, now.saturating_sub(timeout), "+inf");
        let mut conn = link.conn();
        let (count,): (u32,) = link.note(pipe.query_async(&mut conn).await)?;
        let count = count.max(1);
        let before = self.alive.swap(count, Ordering::AcqRel);
        Ok((before != count).then_some(count))
    }

    /// Every node heard from in the last week, as it last said, by name
    /// (a listing that does not reorder itself with each heartbeat).
    pub(super) async fn list(
        link: &Link,
        timeout: Duration,
        now: SystemTime,
    ) -> redis::RedisResult<Vec<NodeRow>> {
        let mut conn = link.conn();
        let names: Vec<(String, u64)> = link.note(
            redis::cmd("ZRANGE")
                .arg(link.key("nodes"))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await,
        )?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names
            .iter()
            .map(|(n, _)| link.key(&format!("node:{n}")))
            .collect();
        let beats: Vec<Option<String>> =
            link.note(redis::cmd("MGET").arg(&keys).query_async(&mut conn).await)?;
        let now_ms = millis(now);
        let mut rows: Vec<NodeRow> = names
            .into_iter()
            .zip(beats)
            .map(|((node, seen), beat)| {
                let beat: Option<Beat> = beat.and_then(|b| serde_json::from_str(&b).ok());
                let ago = Duration::from_millis(now_ms.saturating_sub(seen));
                let state = match &beat {
                    Some(b) if ago <= timeout => b.mode.clone(),
                    _ => "down".to_owned(),
                };
                NodeRow {
                    node,
                    state,
                    last_seen: crate::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(seen)),
                    seen_secs_ago: ago.as_secs(),
                    queued: beat.as_ref().map_or(0, |b| b.queued),
                    admin: beat.as_ref().and_then(|b| b.admin.clone()),
                    started: beat.map(|b| b.started).unwrap_or_default(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(rows)
    }
}
