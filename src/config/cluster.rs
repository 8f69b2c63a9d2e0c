//! `[cluster]`: the fleet this node belongs to. Without the section a node
//! shapes alone and needs no Redis.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::Duration;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis server the fleet shares limits, push-back and membership
    /// through: `redis://host:port/db` or, with TLS, `rediss://...`
    /// (a password goes in the URL: `redis://:secret@host:6379`).
    pub redis: String,
    /// This node's name, unique in the fleet (default: `server.hostname`):
    /// letters, digits, dots, hyphens and underscores.
    pub node: Option<String>,
    /// The address peers reach this node's admin API at, for drains
    /// (default: `admin.address`, which must then not be a wildcard).
    pub advertise: Option<SocketAddr>,
    /// The secret nodes present to each other when one hands its queue to
    /// another (`Authorization: Bearer ...` on `/v1/cluster/*`); the same
    /// on every node. Needed when the admin API listens beyond loopback.
    pub token: Option<String>,
    /// Keys and channels in Redis start with this, so several fleets can
    /// share one server.
    pub prefix: String,
    /// How often a node says it is alive (and reads who else is).
    pub heartbeat: Duration,
    /// A node not heard from for this long counts as down: its share of
    /// the limits goes to the others.
    pub node_timeout: Duration,
    /// A connection slot taken in Redis lasts this long unless its node
    /// renews it (it does, every third of it, while the connection
    /// lives): the longest a crashed node keeps its slots.
    pub lease_ttl: Duration,
    /// A node asks for this much of a shared rate at once (for example,
    /// "20ms" of a 1000/s limit is 20 messages), so that a busy path costs
    /// one Redis round trip per batch rather than per message.
    pub rate_batch: Duration,
    /// Messages per transfer request when a node is drained.
    pub drain_batch: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: "redis://127.0.0.1:6379".into(),
            node: None,
            advertise: None,
            token: None,
            prefix: "tern".into(),
            heartbeat: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(15),
            rate_batch: Duration::from_millis(20),
            drain_batch: 200,
        }
    }
}

impl ClusterConfig {
    pub(super) fn validate(&self, admin: &super::AdminConfig, issues: &mut Vec<Issue>) {
        let key = |k: &str| at("cluster").field(k);
        if !(self.redis.starts_with("redis://") || self.redis.starts_with("rediss://")) {
            issues.push(Issue::new(
                key("redis"),
                format!(
                    "{:?} is not a Redis URL (redis://host:port or rediss://host:port)",
                    self.redis
                ),
            ));
        }
        // A node's name goes into Redis keys (matched with glob patterns),
        // headers, metric labels and log lines: a host name's characters.
        let name_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
        if let Some(n) = &self.node
            && (n.is_empty() || n.len() > 200 || !n.bytes().all(name_char))
        {
            issues.push(Issue::new(
                key("node"),
                format!("{n:?} is not 1 to 200 letters, digits, dots, hyphens or underscores"),
            ));
        }
        if self.prefix.is_empty() || !self.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            issues.push(Issue::new(
                key("prefix"),
                "must be printable, without spaces",
            ));
        }
        if let Some(t) = &self.token
            && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            issues.push(Issue::new(
                key("token"),
                "must be at least 16 printable characters",
            ));
        }
        if admin.enabled && !admin.address.ip().is_loopback() && self.token.is_none() {
            issues.push(Issue::new(
                key("token"),
                "the admin API listens beyond loopback: peers need a token to hand over mail",
            ));
        }
        let advertised = self.advertise.unwrap_or(admin.address);
        if admin.enabled && advertised.ip().is_unspecified() {
            issues.push(Issue::new(
                key("advertise"),
                format!(
                    "the admin API listens on {}: say where peers reach it",
                    admin.address
                ),
            ));
        }
        let positive = [
            ("heartbeat", self.heartbeat),
            ("node_timeout", self.node_timeout),
            ("lease_ttl", self.lease_ttl),
            ("rate_batch", self.rate_batch),
        ];
        for (name, d) in positive {
            if d.get().is_zero() {
                issues.push(Issue::new(key(name), "must be more than 0s"));
            }
        }
        if self.node_timeout.get() < self.heartbeat.get() * 2 {
            issues.push(Issue::new(
                key("node_timeout"),
                "must be at least twice the heartbeat",
            ));
        }
        if self.lease_ttl.get() < std::time::Duration::from_secs(1) {
            issues.push(Issue::new(key("lease_ttl"), "must be at least 1s"));
        }
        if !(1..=10_000).contains(&self.drain_batch) {
            issues.push(Issue::new(key("drain_batch"), "must be 1 to 10000"));
        }
    }

    /// This node's name in the fleet.
    pub fn node_name(&self, hostname: &str) -> String {
        self.node.clone().unwrap_or_else(|| hostname.to_owned())
    }
}
