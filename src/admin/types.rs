//! Request and response bodies of the admin API, shared by the server,
//! the `tern` CLI and the tests, so that the three cannot drift apart.

use serde::{Deserialize, Serialize};

pub use crate::shaping::rules::{Action, Target};

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy`, `full` or `unhealthy` (the queue's health).
    pub queue: String,
    /// Why, when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When this daemon started (RFC 3339).
    pub started: String,
    /// Tern's version.
    pub version: String,
}

/// `GET /v1/queue/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    /// Messages with a pending recipient.
    pub messages: u64,
    /// Pending recipients.
    pub recipients: u64,
    /// Bytes of queued bodies.
    pub body_bytes: u64,
    /// Bytes of spool files.
    pub disk_bytes: u64,
    /// Per recipient domain, most recipients first (at most `top`).
    pub domains: Vec<DomainRow>,
}

/// One domain of a [`QueueSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRow {
    /// The recipient domain.
    pub domain: String,
    /// Messages with a pending recipient there.
    pub messages: u64,
    /// Pending recipients there.
    pub recipients: u64,
}

/// `DELETE /v1/shaping/actions`: which action to end now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAction {
    /// The suspended target.
    pub target: Target,
}

/// `POST /v1/suspensions`: stop mail for a target for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspend {
    /// What to suspend.
    pub target: Target,
    /// For how long, such as `"30m"`.
    pub duration: String,
    /// Why (shown in the deferral replies and the list of actions).
    pub reason: String,
}

/// `POST /v1/retry`: make deferred mail due now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Only messages with a pending recipient at this domain (all when
    /// unset).
    #[serde(default)]
    pub domain: Option<String>,
}

/// The answer to a [`Retry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retried {
    /// Messages made due now.
    pub messages: u64,
    /// Their recipients that were waiting.
    pub recipients: u64,
}

/// `POST /v1/purge`: remove queued mail matching every filter given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// Messages with a recipient waiting at this domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Messages from this envelope sender.
    #[serde(default)]
    pub sender: Option<String>,
    /// Messages of this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A background job was started: follow it at `/v1/jobs/{job}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    /// Its id.
    pub job: u64,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Its id.
    pub job: u64,
    /// What it does (`purge`).
    pub kind: String,
    /// Messages looked at so far.
    pub scanned: u64,
    /// Messages it acted on so far.
    pub done_items: u64,
    /// Matching messages left alone because they were being delivered.
    pub skipped: u64,
    /// True once it is over.
    pub finished: bool,
}

/// One applied config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// Its id: the start of the SHA-256 of its files.
    pub id: String,
    /// When it was put in force (RFC 3339).
    pub applied: String,
}

/// `POST /v1/reload` succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The new config's id.
    pub id: String,
    /// What took effect.
    pub applied: Vec<String>,
    /// Sections that changed but take effect only at a restart.
    pub needs_restart: Vec<String>,
}

/// `POST /v1/reload` refused the file (status 422): the running config
/// stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRefused {
    /// Every error, as `tern check-config` prints them.
    pub errors: Vec<String>,
}

/// `GET /v1/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    /// The config in force.
    pub running: Option<ConfigVersion>,
    /// The recent ones, oldest first (the last is in force).
    pub history: Vec<ConfigVersion>,
    /// Reloads refused since the start.
    pub failed_reloads: u64,
}

/// The answer to a [`CancelAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    /// False when no action was in force for the target.
    pub cancelled: bool,
}

/// Any error: an HTTP status with this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}
