//! What operators see of delivery and the spool now, as rows: shared by
//! the delivery service (which fills them), the admin API and status page
//! (which serve them) and the metrics (which export them). A leaf: it
//! holds the types, and the names of the spool's states.

use serde::{Deserialize, Serialize};

/// `GET /v1/paths`: one egress path (a source to a site) now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathRow {
    /// The source.
    pub source: String,
    /// The destination site.
    pub site: String,
    /// Its provider, if one matches.
    pub provider: Option<String>,
    /// Jobs in its ready queue (moved from their destinations, waiting
    /// for a connection or a send slot).
    pub waiting: u64,
    /// Their recipients.
    pub waiting_recipients: u64,
    /// Seconds the oldest ready job's message has been queued.
    pub oldest_secs: u64,
    /// Jobs being sent now.
    #[serde(default)]
    pub sending: u64,
    /// Open connections.
    pub connections: u64,
    /// Connection workers.
    pub workers: u64,
    /// Messages sent in the last minute.
    pub sent_last_minute: u64,
    /// It cannot send now (suspended, paused after failed connections, its
    /// source unusable or over its warm-up share).
    pub paused: bool,
    /// Why, when it cannot send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// `GET /v1/sources`: one egress source now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceRow {
    /// Its name.
    pub name: String,
    /// The address receivers see (behind a proxy, the public address the
    /// proxy sends from); none when the kernel chooses.
    pub address: Option<String>,
    /// The egress proxy it leaves through (without password).
    pub proxy: Option<String>,
    /// Its EHLO name.
    pub ehlo: String,
    /// The fleet shares its limits and warm-up counts.
    pub shared: bool,
    /// It can send now (else it rests: see `held`).
    pub usable: bool,
    /// Why it rests and for how many more seconds, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Its proxy's failures since start, by reason (unreachable, slow,
    /// refused, destination).
    #[serde(default)]
    pub proxy_failures: Vec<(String, u64)>,
}

/// `GET /v1/destinations`: a destination's scheduled queue (one pool's
/// mail to one site) now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DestRow {
    /// The pool its mail is sent from.
    pub pool: String,
    /// The site (its MX hosts; `site|domain` for a domain shaped apart).
    pub site: String,
    /// Its provider, if one matches.
    pub provider: Option<String>,
    /// Jobs (a message's recipients at one domain) waiting for room at
    /// its paths: metadata only, no connection, no slot.
    pub scheduled: u64,
    /// Their recipients.
    pub scheduled_recipients: u64,
    /// Seconds the oldest waiting job's message has been queued.
    pub oldest_secs: u64,
    /// Jobs in the ready queues of its paths.
    pub ready: u64,
    /// Jobs being sent on its paths.
    pub sending: u64,
    /// Why it waits, when it does (a suspension, a pause, a warm-up share,
    /// or room at its paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Delivery now, for the metrics and the status page.
#[derive(Debug, Clone, Default)]
pub struct DeliveryState {
    /// Every egress source, by name.
    pub sources: Vec<SourceRow>,
    /// Every egress path, busiest first.
    pub paths: Vec<PathRow>,
    /// Every destination with mail, most waiting first.
    pub dests: Vec<DestRow>,
    /// Messages held because the spool could not write their outcomes.
    pub unrecorded: u64,
}

/// The spool's states as operators read them: `healthy`; `full` (new mail
/// refused, outcomes written); `unwritable` (nothing can be written now;
/// delivery waits; it heals by itself).
pub const SPOOL_STATES: [&str; 3] = ["healthy", "full", "unwritable"];

/// The name of the spool's state, and why when it is not healthy.
pub fn spool_state(h: &queue::Health) -> (&'static str, Option<String>) {
    match h {
        queue::Health::Healthy => (SPOOL_STATES[0], None),
        queue::Health::Full(r) => (SPOOL_STATES[1], Some(r.to_string())),
        queue::Health::Unhealthy(r) => (SPOOL_STATES[2], Some(r.to_string())),
    }
}

/// What a node in a fleet exports about it, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetState {
    /// Whether the fleet's Redis answers.
    pub redis_up: bool,
    /// Nodes alive when last counted.
    pub nodes: u32,
    /// Round trips to Redis since start.
    pub round_trips: u64,
    /// Fleet-wide connection slots this node holds.
    pub leases: u64,
}

/// `GET /v1/cluster`: one node of the fleet, as its heartbeat last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRow {
    /// Its name (`cluster.node`).
    pub node: String,
    /// `accepting`, `draining`, or `down` (not heard from for
    /// `cluster.node_timeout`).
    pub state: String,
    /// When it was last heard from (RFC 3339).
    pub last_seen: String,
    /// Seconds since then.
    pub seen_secs_ago: u64,
    /// Messages in its queue then.
    pub queued: u64,
    /// Where peers reach its admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// When it started (RFC 3339).
    #[serde(default)]
    pub started: String,
}

/// Age of the oldest message waiting at a destination or a path.
pub fn oldest_waiting_secs(dests: &[DestRow], paths: &[PathRow]) -> u64 {
    (dests.iter().map(|d| d.oldest_secs))
        .chain(paths.iter().map(|p| p.oldest_secs))
        .max()
        .unwrap_or(0)
}

/// `1234567` -> `"1.2 MB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod byte_tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_rounds() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
    }
}
