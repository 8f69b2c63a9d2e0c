//! `[api]`: the HTTP injection API (`POST /v1/messages`, stored
//! templates), served on the admin listener with its token rules, and,
//! with `address`, on a listener of its own with a token of its own (so
//! that applications need no admin token).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::values::{ByteSize, Duration};

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Also serve the injection endpoints (only those) here; unset: on
    /// the admin listener only.
    pub address: Option<SocketAddr>,
    /// The bearer token requests to `address` must carry (at least 16
    /// printable characters; required beyond loopback).
    pub token: Option<String>,
    /// Recipients one request may name (each gets a message of its own).
    pub max_recipients: u32,
    /// The largest request body (JSON, attachments in base64 included).
    pub max_request_size: ByteSize,
    /// How long an `Idempotency-Key` is remembered: a request repeated
    /// with the same key within it gets the first answer and queues
    /// nothing.
    pub idempotency_ttl: Duration,
    /// At most this many keys are remembered (the oldest are forgotten
    /// first; each is kept in the spool with its answer).
    pub idempotency_max_keys: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            address: None,
            token: None,
            max_recipients: 1000,
            max_request_size: ByteSize(25 << 20),
            idempotency_ttl: Duration::from_secs(86_400),
            idempotency_max_keys: 100_000,
        }
    }
}

impl ApiConfig {
    pub(super) fn validate(&self, issues: &mut Vec<Issue>) {
        if let Some(a) = self.address
            && !a.ip().is_loopback()
            && self.token.is_none()
        {
            issues.push(Issue::new(
                at("api").field("token"),
                format!("the API listens on {a}, beyond loopback: set a token"),
            ));
        }
        super::admin::check_token(self.token.as_deref(), at("api").field("token"), issues);
        if !(1..=100_000).contains(&self.max_recipients) {
            issues.push(Issue::new(
                at("api").field("max_recipients"),
                "must be between 1 and 100000",
            ));
        }
        if self.max_request_size.0 < 1024 || self.max_request_size.0 > (1 << 30) {
            issues.push(Issue::new(
                at("api").field("max_request_size"),
                "must be between 1KiB and 1GiB",
            ));
        }
    }
}
