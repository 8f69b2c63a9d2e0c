//! Request and response bodies of the admin API, shared by the server,
//! the `tern` CLI and the tests, so that the three cannot drift apart.

use serde::{Deserialize, Serialize};

pub use crate::delivery::filter::Filter;
pub use crate::delivery::rebind::Rebind as RebindRule;
pub use crate::shaping::rules::{Action, Target};
pub use crate::views::{DestRow, PathRow, SourceRow};

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// The spool: `healthy`; `full` (new mail refused, outcomes still
    /// written); `unwritable` (nothing can be written now: delivery waits,
    /// and the spool heals by itself when the cause clears).
    pub queue: String,
    /// Why, when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when it is in this state (RFC 3339), if it changed since the
    /// start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Messages held because their delivery outcomes could not be written
    /// yet (a restart before they are may deliver them twice).
    #[serde(default)]
    pub unrecorded: u64,
    /// When this daemon started (RFC 3339).
    pub started: String,
    /// Tern's version.
    pub version: String,
    /// `accepting`, or `draining` (new mail refused while the queue moves
    /// to the fleet's other nodes).
    #[serde(default = "accepting")]
    pub mode: crate::node::Mode,
}

fn accepting() -> crate::node::Mode {
    crate::node::Mode::Accepting
}

/// `GET /v1/queue/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSummary {
    /// Messages with a pending or held recipient.
    pub messages: u64,
    /// Pending recipients.
    pub recipients: u64,
    /// Recipients held by an operator (`tern hold`).
    #[serde(default)]
    pub held: u64,
    /// Bytes of queued bodies.
    pub body_bytes: u64,
    /// Bytes of spool files.
    pub disk_bytes: u64,
    /// Per recipient domain, most recipients first (at most `top`).
    pub domains: Vec<DomainRow>,
    /// The spool is being recovered after a restart: the mail queued
    /// before it is counted as it comes back (`[queue]
    /// recover_in_background`), not all of it yet.
    #[serde(default)]
    pub recovering: bool,
}

/// One domain of a [`QueueSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainRow {
    /// The recipient domain.
    pub domain: String,
    /// Messages with a pending recipient there.
    pub messages: u64,
    /// Pending recipients there.
    pub recipients: u64,
}

/// `DELETE /v1/shaping/actions`: which action to end now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelAction {
    /// The suspended target.
    pub target: Target,
}

/// `POST /v1/suspensions`: stop mail for a target for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suspend {
    /// What to suspend.
    pub target: Target,
    /// For how long, such as `"30m"`.
    pub duration: String,
    /// Why (shown in the deferral replies and the list of actions).
    pub reason: String,
}

/// `POST /v1/retry`: make deferred mail due now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retry {
    /// Only messages with a pending recipient at this domain (all when
    /// unset).
    #[serde(default)]
    pub domain: Option<String>,
    /// Only this message (its queue id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The answer to a [`Retry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retried {
    /// Messages made due now.
    pub messages: u64,
    /// Their recipients that were waiting.
    pub recipients: u64,
    /// Dead-site pauses lifted (their mail goes at once).
    #[serde(default)]
    pub pauses: u64,
}

/// `POST /v1/purge`: remove queued mail matching every filter given.
pub type Purge = Filter;

/// `POST /v1/bounce`: fail the queued mail a filter selects, with DSNs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bounce {
    /// The messages (at least one criterion).
    #[serde(flatten)]
    pub filter: Filter,
    /// Why (in the bounce reply and the DSN).
    pub reason: String,
}

/// A bounce under way, kept in the spool until it ends so that a restart
/// takes it up again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceJournal {
    /// What the operator asked.
    pub request: Bounce,
    /// When it started (ms since the epoch): a resumed bounce takes only
    /// the messages that had arrived by then.
    pub started_ms: u64,
}

/// `POST /v1/rebinds`: move the queued mail a filter selects to another
/// pool, another route, or both (at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rebind {
    /// The messages (at least one criterion).
    #[serde(flatten)]
    pub filter: Filter,
    /// The pool they leave from from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_pool: Option<String>,
    /// The hosts ("host:port" or "host") they are relayed through from
    /// now on, instead of their domains' MX hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// Why (kept with the rebind).
    #[serde(default)]
    pub reason: String,
    /// Make the moved mail due now (default true).
    #[serde(default = "yes")]
    pub retry: bool,
}

fn yes() -> bool {
    true
}

/// The answer to a [`Rebind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RebindMade {
    /// The rebind in force.
    pub rebind: RebindRule,
    /// The job making the moved mail due now, if `retry`.
    pub job: Option<u64>,
}

/// A background job was started: follow it at `/v1/jobs/{job}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStarted {
    /// Its id.
    pub job: u64,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// Its id.
    pub job: u64,
    /// What it does (`purge`, `bounce`, `hold`, `release`, `retry`).
    pub kind: String,
    /// Messages looked at so far.
    pub scanned: u64,
    /// Messages it acted on so far.
    pub done_items: u64,
    /// Matching messages left alone because they were still being
    /// delivered two minutes after the job came to them.
    pub skipped: u64,
    /// Matching messages it could not act on (see the log).
    #[serde(default)]
    pub failed: u64,
    /// A bounce: messages held so far. A bounce holds every matching
    /// message first (within seconds, so none is tried again), then
    /// bounces them at the spool's pace.
    #[serde(default)]
    pub held: u64,
    /// Where a job of several steps is (`holding`, then `bouncing`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
    /// True once it is over.
    pub finished: bool,
}

/// One applied config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigVersion {
    /// Its id: the start of the SHA-256 of its files.
    pub id: String,
    /// When it was put in force (RFC 3339).
    pub applied: String,
}

/// `POST /v1/reload` succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReloadRefused {
    /// Every error, as `tern check-config` prints them.
    pub errors: Vec<String>,
}

/// `GET /v1/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigState {
    /// The config in force.
    pub running: Option<ConfigVersion>,
    /// The recent ones, oldest first (the last is in force).
    pub history: Vec<ConfigVersion>,
    /// Reloads refused since the start.
    pub failed_reloads: u64,
}

/// The answer to a [`CancelAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelled {
    /// False when no action was in force for the target.
    pub cancelled: bool,
}

/// Any error: an HTTP status with this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// `GET /v1/queue/messages`: one page of queued messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// The matching messages of this page, in queue id order.
    pub messages: Vec<MessageRow>,
    /// Pass as `after` for the next page; `None` at the end of the queue.
    pub next: Option<String>,
}

/// One queued message in a [`MessagePage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageRow {
    /// Its queue id.
    pub id: String,
    /// The envelope sender.
    pub sender: String,
    /// When it was queued (RFC 3339).
    pub arrival: String,
    /// Recipients in all.
    pub recipients: usize,
    /// Recipients still waiting.
    pub pending: usize,
    /// When the next waiting recipient is due (RFC 3339).
    pub next_attempt: Option<String>,
    /// The last reply a waiting recipient got.
    pub last_reply: Option<String>,
    /// Its pool (`None`: the default pool).
    pub pool: Option<String>,
    /// Its tenant.
    pub tenant: Option<String>,
    /// Its priority class.
    pub priority: String,
    /// Body size in bytes.
    pub size: u64,
    /// Being delivered now.
    pub in_flight: bool,
    /// Where it stands: held, sending, waiting (for its turn at its
    /// destination), deferred or new.
    #[serde(default)]
    pub state: String,
    /// Recipients held by an operator.
    #[serde(default)]
    pub held: usize,
}

/// `GET /v1/queue/messages/{id}`: one message in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageDetail {
    /// The summary line.
    pub message: MessageRow,
    /// Its Message-ID header.
    pub message_id: Option<String>,
    /// The client that submitted it.
    pub client: Option<String>,
    /// The AUTH user that submitted it.
    pub auth_user: Option<String>,
    /// Each recipient, in envelope order.
    pub recipients: Vec<RecipientRow>,
    /// The stored message (header and body, as UTF-8 with invalid bytes
    /// replaced), only when asked for with `?body=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// One recipient of a [`MessageDetail`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientRow {
    /// Its address.
    pub address: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u16,
    /// When it is next due, while pending (RFC 3339).
    pub next_attempt: Option<String>,
    /// The last reply it got.
    pub last_reply: Option<String>,
}

/// `GET /v1/queue/by/{dimension}`: the queue broken down by domain, pool,
/// tenant or priority (the whole queue), or by site or source (the mail
/// at the egress paths now, with their connections and rates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueBreakdown {
    /// The dimension.
    pub by: String,
    /// Most recipients first (at most `top`).
    pub rows: Vec<QueueRow>,
}

/// One row of a [`QueueBreakdown`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueRow {
    /// The domain, pool, tenant, priority, site or source.
    pub key: String,
    /// Messages (for sites and sources: jobs waiting at their paths).
    pub messages: u64,
    /// Recipients waiting.
    pub recipients: u64,
    /// Age of the oldest, in seconds.
    pub oldest_secs: u64,
    /// The last reply a waiting recipient got (whole-queue views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Open connections (sites and sources).
    #[serde(default)]
    pub connections: u64,
    /// Messages sent in the last minute (sites and sources).
    #[serde(default)]
    pub sent_last_minute: u64,
    /// Jobs waiting in the site's scheduled queues (sites).
    #[serde(default)]
    pub scheduled: u64,
    /// Jobs in the ready queues of its paths (sites).
    #[serde(default)]
    pub ready: u64,
    /// Jobs being sent to it now (sites).
    #[serde(default)]
    pub sending: u64,
    /// Why its mail waits, when it does (sites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// `GET /v1/shaping/effective`: the limits mail to a domain gets from a
/// source under the config in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EffectiveShaping {
    /// The recipient domain.
    pub domain: String,
    /// Its site (its MX hosts).
    pub site: String,
    /// The provider matched, if any.
    pub provider: Option<String>,
    /// The source.
    pub source: String,
    /// The address receivers see from it (behind a proxy, the public one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// The egress proxy it leaves through (without password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The domain has paths of its own (`[[shaping.domain]]`).
    pub own_paths: bool,
    /// Each per-path limit and the layer it came from.
    pub per_path: Vec<LimitRow>,
    /// Limits shared with other paths, per scope.
    pub shared: Vec<LimitRow>,
}

impl EffectiveShaping {
    /// From a path's plan, from the source configured as `source`.
    pub fn new(
        domain: String,
        site: String,
        source: &crate::config::SourceConfig,
        plan: &crate::shaping::Plan,
    ) -> Self {
        let row = |(key, value, from): (&str, String, std::sync::Arc<str>)| LimitRow {
            key: key.into(),
            value,
            from: from.to_string(),
        };
        Self {
            domain,
            site,
            provider: plan.provider.as_deref().map(str::to_owned),
            source: source.name.clone(),
            source_address: source.address.map(|a| a.to_string()),
            proxy: source.proxy.as_ref().map(|p| p.public()),
            own_paths: plan.own_domain.is_some(),
            per_path: plan.rows().into_iter().map(row).collect(),
            shared: plan
                .shared()
                .into_iter()
                .map(|(key, value)| LimitRow {
                    key,
                    value,
                    from: String::new(),
                })
                .collect(),
        }
    }
}

/// One limit of an [`EffectiveShaping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitRow {
    /// The setting (or the shared scope).
    pub key: String,
    /// Its value.
    pub value: String,
    /// The layer it came from (empty for shared scopes).
    pub from: String,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: String,
    /// `up` or `down`: whether it reaches the fleet's Redis.
    pub redis: String,
    /// Every node heard from in the last week.
    pub nodes: Vec<crate::views::NodeRow>,
}

/// `POST /v1/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainRequest {
    /// The peers to hand the queue to: node names (looked up in the
    /// fleet) or `host:port` of their admin API; empty: every live peer.
    #[serde(default)]
    pub to: Vec<String>,
}

/// `PUT /v1/templates/{name}`: what was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateStored {
    /// The template.
    pub name: String,
    /// The version this content became.
    pub version: u32,
}

/// `GET` and `PUT /v1/log-level`: the diagnostic log's filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLevel {
    /// Comma-separated directives: a level (`info`) or `target=level`
    /// (`tern::delivery=debug`); levels off, error, warn, info, debug,
    /// trace.
    pub filter: String,
}
