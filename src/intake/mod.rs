//! Intake: turns a completed SMTP transaction into a queued message.
//!
//! It owns what happens between the end of the data and the `250`: the
//! Received header (written before the data arrives, so the body is never
//! copied), the loop check, Date and Message-ID when missing, the envelope
//! metadata, and `queue.enqueue()`, which returns only once the message is
//! durable. Between the two it has the message DKIM-signed ([`crate::dkim`],
//! on the signing threads), after every header Tern adds or removes, so the
//! signature covers the bytes that will be delivered. It never speaks
//! SMTP: the server maps its errors to replies (`smtp::reply::intake_refusal`).

mod body;
pub mod headers;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{OnSignError, Priority};
use crate::dkim::Dkim;
use crate::log::{DeliveryLog, Kind, Record};
use crate::swap::Swap;

use queue::{
    Envelope, EnvelopeRecipient, Health, MessageId, NewMessage, Queue, QueueError, Timestamp,
};

use crate::message::{MessageMeta, RecipientParams, Ret};

/// Why a complete message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The queue refused or failed the write; nothing was acknowledged.
    #[error("the queue did not take the message: {0}")]
    Queue(#[from] QueueError),
    /// More Received headers than allowed: a mail loop.
    #[error("mail loop: {received} Received headers (limit {limit})")]
    Loop {
        /// Received headers seen, ours included.
        received: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The queue holds as many messages as it may.
    #[error("the queue is at its message limit")]
    QueueFull,
    /// The message's tenant declares its domains and this is not one of
    /// them (`sender_mismatch = "reject"`).
    #[error("tenant {tenant} does not send as {domain}")]
    SenderMismatch {
        /// The From (or sender) domain.
        domain: String,
        /// The tenant.
        tenant: String,
    },
    /// DKIM signing failed and the config says to refuse (`on_error =
    /// "defer"`), or the signing threads are gone.
    #[error("DKIM signing failed: {0}")]
    Signing(String),
}

/// Settings of one listener's intake.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// This MTA's name, for Received and Message-ID.
    pub hostname: String,
    /// More Received headers than this is a loop.
    pub max_received_headers: usize,
    /// Add Message-ID when missing.
    pub add_message_id: bool,
    /// Add Date when missing.
    pub add_date: bool,
    /// Refuse new mail while this many messages are queued (0: no limit).
    pub max_messages: u64,
    /// Refuse new mail while queued bodies take more bytes than this (0:
    /// no limit).
    pub max_spool_size: u64,
    /// The listener's pool and tenant (used when the user has none).
    pub pool: Option<String>,
    /// See `pool`.
    pub tenant: Option<String>,
    /// Per AUTH user: its pool and tenant.
    pub users: Arc<HashMap<String, UserRouting>>,
    /// A header naming the pool (removed from the message), if configured.
    pub pool_header: Option<String>,
    /// Pools, tenants and DKIM keys as the config in force has them.
    pub routing: Arc<Swap<IntakeRouting>>,
    /// The listener's priority class, if it has one.
    pub priority: Option<Priority>,
    /// A header naming the priority class (removed from the message).
    pub priority_header: Option<String>,
    /// Where receptions are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the node takes new mail (a draining node refuses it).
    pub node: Arc<crate::node::NodeState>,
}

/// The parts of intake a config reload replaces, shared by every
/// listener: a message reads them once, so it is handled by one config
/// from start to end.
#[derive(Debug, Default)]
pub struct IntakeRouting {
    /// The pools that exist (a header naming another is ignored).
    pub pools: HashSet<String>,
    /// The tenants that exist.
    pub tenants: HashSet<String>,
    /// Per tenant with a pool of its own: that pool.
    pub tenant_pools: HashMap<String, String>,
    /// Per tenant with a priority class of its own: that class.
    pub tenant_priorities: HashMap<String, Priority>,
    /// The DKIM signer, when any key is configured.
    pub dkim: Option<Arc<Dkim>>,
    /// Which tenant owns which sending domains.
    pub tenant_domains: Arc<crate::tenants::TenantDomains>,
    /// The pool of mail that names none (for metrics).
    pub default_pool: String,
}

impl IntakeRouting {
    /// From a validated config, with its DKIM signer (built apart, as
    /// loading keys can fail).
    pub fn new(config: &crate::config::Config, dkim: Option<Arc<Dkim>>) -> Self {
        let tenants = &config.tenants;
        Self {
            pools: config.pools.iter().map(|p| p.name.clone()).collect(),
            tenants: tenants.iter().map(|t| t.name.clone()).collect(),
            tenant_pools: tenants
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.pool.clone()?)))
                .collect(),
            tenant_priorities: tenants
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.priority?)))
                .collect(),
            dkim,
            tenant_domains: Arc::new(crate::tenants::TenantDomains::new(config)),
            default_pool: config.delivery.default_pool.clone(),
        }
    }
}

/// Where an AUTH user's mail goes, from its `[[auth.user]]` entry.
#[derive(Debug, Clone, Default)]
pub struct UserRouting {
    /// Its pool, if it has one of its own.
    pub pool: Option<String>,
    /// Its tenant, if it has one.
    pub tenant: Option<String>,
    /// Its priority class, if it has one.
    pub priority: Option<Priority>,
}

/// Facts about the SMTP session a message came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub peer: IpAddr,
    /// Its EHLO/HELO name.
    pub helo: String,
    /// It said EHLO.
    pub esmtp: bool,
    /// The session is encrypted.
    pub tls: bool,
    /// The AUTH user, if any.
    pub user: Option<Arc<str>>,
    /// It came over the HTTP API, not SMTP.
    pub http: bool,
}

/// One recipient of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedRecipient {
    /// `local@domain`.
    pub address: String,
    /// DSN parameters.
    pub params: RecipientParams,
}

/// A message whose data is complete, as the SMTP session hands it over.
#[derive(Debug)]
pub struct Submission {
    /// The id taken by [`Intake::begin`].
    pub id: MessageId,
    /// The reverse path (empty for `<>`).
    pub sender: String,
    /// The accepted recipients.
    pub recipients: Vec<SubmittedRecipient>,
    /// DSN ENVID.
    pub envid: Option<String>,
    /// DSN RET.
    pub ret: Option<Ret>,
    /// BODY=8BITMIME was declared.
    pub body_8bitmime: bool,
    /// SMTPUTF8 was declared.
    pub smtputf8: bool,
    /// The content has bytes above 127.
    pub content_8bit: bool,
    /// Tern's Received header, then the client's data.
    pub data: Vec<u8>,
    /// Where the client's data starts in `data`.
    pub data_start: usize,
    /// What the HTTP API says of the message (SMTP: `None`).
    pub api: Option<ApiFields>,
}

/// What a message injected over the HTTP API brings besides its content:
/// its routing, chosen by the request (checked against the config), and
/// the caller's own id and data, kept for its events.
#[derive(Debug, Clone, Default)]
pub struct ApiFields {
    /// The pool (`None`: the tenant's, else the default).
    pub pool: Option<String>,
    /// The tenant.
    pub tenant: Option<String>,
    /// The priority (`None`: the tenant's, else normal).
    pub priority: Option<Priority>,
    /// The caller's id.
    pub custom_id: Option<String>,
    /// The caller's data (JSON text).
    pub metadata: Option<String>,
}

/// The intake of one listener.
pub struct Intake {
    queue: Arc<Queue>,
    settings: IntakeSettings,
    log: Arc<DeliveryLog>,
    clock: Clock,
    wake: Arc<Notify>,
}

impl Intake {
    /// An intake that queues into `queue`, logs receptions to `log` and
    /// wakes delivery through `wake`.
    pub fn new(
        queue: Arc<Queue>,
        settings: IntakeSettings,
        log: Arc<DeliveryLog>,
        clock: Clock,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            queue,
            settings,
            log,
            clock,
            wake,
        }
    }

    /// The queue's health (cheap).
    pub fn health(&self) -> Health {
        self.queue.health()
    }

    /// Counts a refusal of new mail at the door.
    pub fn refused(&self, why: crate::metrics::Refusal) {
        self.settings.metrics.refused(why);
    }

    /// True while the node drains: new mail goes to its peers.
    pub fn draining(&self) -> bool {
        self.settings.node.draining()
    }

    /// True when the queue is at its message or spool-size limit (cheap).
    pub fn over_limit(&self) -> bool {
        let s = &self.settings;
        (s.max_messages > 0 && self.queue.message_count() >= s.max_messages)
            || (s.max_spool_size > 0 && self.queue.body_bytes() >= s.max_spool_size)
    }

    /// Starts a message: takes its queue id and writes the Received header
    /// into a buffer sized for the expected data, which the session then
    /// appends to. `only_rcpt` is the single recipient, if there is one.
    pub fn begin(
        &self,
        origin: &Origin,
        only_rcpt: Option<&str>,
        expected: usize,
    ) -> (MessageId, Vec<u8>) {
        let id = self.queue.allocate_id();
        let info = headers::ReceivedInfo {
            helo: &origin.helo,
            peer: origin.peer,
            hostname: &self.settings.hostname,
            esmtp: origin.esmtp,
            tls: origin.tls,
            authenticated: origin.user.is_some(),
            http: origin.http,
        };
        let received = headers::received(&info, id, only_rcpt, self.clock.system_time());
        // Without a SIZE hint, start at 16 KiB: typical messages then never
        // grow (and copy) the buffer while their data arrives.
        let expected = if expected == 0 {
            16 << 10
        } else {
            expected.clamp(1024, 1 << 20)
        };
        // Room for the DKIM signatures, so that inserting them does not
        // reallocate.
        let room = if self.settings.routing.get().dkim.is_some() {
            1024
        } else {
            0
        };
        let mut buf = Vec::with_capacity(room + received.len() + expected + 2);
        buf.extend_from_slice(received.as_bytes());
        (id, buf)
    }

    /// Queues a complete message; returns once it is durable.
    pub async fn accept(&self, sub: Submission, origin: &Origin) -> Result<MessageId, IntakeError> {
        let started = std::time::Instant::now();
        if self.over_limit() {
            self.refused(crate::metrics::Refusal::Backlog);
            return Err(IntakeError::QueueFull);
        }
        let now = self.clock.system_time();
        let (id, start) = (sub.id, sub.data_start);
        let mut data = sub.data;
        let facts = headers::scan(&data[start..]);
        self.check_hops(&facts)?;
        // The author's domain, read before any header is removed (which
        // moves the offsets).
        let routing = self.settings.routing.get();
        let checks = routing.dkim.is_some() || !routing.tenant_domains.is_empty();
        let author = match (checks, &facts.from) {
            (true, Some(range)) => crate::dkim::author::domain(&data[start..][range.clone()]),
            _ => None,
        };
        let api = sub.api;
        let (pool, tenant, priority) = match &api {
            Some(a) => {
                let tenant_pool = (a.tenant.as_ref()).and_then(|t| routing.tenant_pools.get(t));
                let tenant_priority =
                    (a.tenant.as_ref()).and_then(|t| routing.tenant_priorities.get(t));
                (
                    a.pool.clone().or_else(|| tenant_pool.cloned()),
                    a.tenant.clone(),
                    (a.priority.or(tenant_priority.copied())).unwrap_or_default(),
                )
            }
            None => {
                let (pool, tenant) = self.pool_and_tenant(&routing, id, &mut data, start, origin);
                let priority =
                    self.priority(&routing, id, &mut data, start, origin, tenant.as_deref());
                (pool, tenant, priority)
            }
        };
        let message_id = facts.message_id_value.clone().or_else(|| {
            self.settings
                .add_message_id
                .then(|| headers::message_id_value(id, &self.settings.hostname, now))
        });
        let data = body::add_missing_headers(&self.settings, data, start, (id, &facts, now));
        let (data, dkim) = self
            .sign(
                &routing,
                (id, tenant.as_deref(), origin.user.as_deref()),
                data,
                author.as_deref(),
                &sub.sender,
            )
            .await?;
        let meta = MessageMeta {
            client_ip: Some(origin.peer),
            helo: origin.helo.clone(),
            auth_user: origin.user.as_deref().map(str::to_owned),
            envid: sub.envid,
            ret: sub.ret,
            body_8bitmime: sub.body_8bitmime,
            smtputf8: sub.smtputf8,
            content_8bit: sub.content_8bit,
            pool,
            tenant,
            message_id,
            origin: None,
            custom_id: api.as_ref().and_then(|a| a.custom_id.clone()),
            metadata: api.and_then(|a| a.metadata),
        };
        let recipients: Box<[EnvelopeRecipient]> = sub
            .recipients
            .into_iter()
            .map(|r| EnvelopeRecipient {
                address: r.address.into(),
                params: r.params.encode().into(),
            })
            .collect();
        let arrival = Timestamp::from_system_time(now);
        let (rcpts, size) = (recipients.len(), data.len() as u64);
        let mut record = self.reception_record(now, id, &sub.sender, &meta, origin, rcpts, size);
        record.dkim = dkim.map(Into::into);
        let msg = NewMessage {
            id: Some(id),
            envelope: Envelope {
                sender: sub.sender.into(),
                meta: meta.encode().into(),
                recipients,
            },
            arrival,
            first_attempt: arrival,
            priority: priority.rank(),
            body: body::exact(data),
        };
        self.queue.enqueue(msg).await?;
        let pool = meta.pool.as_deref().unwrap_or(&routing.default_pool);
        let tenant = meta.tenant.as_deref().unwrap_or("");
        self.settings.metrics.received(pool, tenant);
        (self.settings.metrics).accepted(started.elapsed().as_secs_f64());
        self.log.write(&record);
        self.wake.notify_one();
        Ok(id)
    }

    /// Refuses a message that has passed more hops than a loop allows
    /// (its Received headers, plus ours).
    fn check_hops(&self, facts: &headers::HeaderFacts) -> Result<(), IntakeError> {
        let hops = facts.received + 1;
        match hops > self.settings.max_received_headers {
            true => Err(IntakeError::Loop {
                received: hops,
                limit: self.settings.max_received_headers,
            }),
            false => Ok(()),
        }
    }

    /// Has the message DKIM-signed when signing is configured; returns it
    /// with what the delivery log says of its signatures (`None`: signing
    /// is off).
    ///
    /// A tenant that declares its domains sends only as them (or as its
    /// `sender_mismatch` says), and no tenant's key signs another's mail.
    async fn sign(
        &self,
        routing: &IntakeRouting,
        (id, tenant, origin_user): (MessageId, Option<&str>, Option<&str>),
        data: Vec<u8>,
        author: Option<&str>,
        sender: &str,
    ) -> Result<(Vec<u8>, Option<String>), IntakeError> {
        use crate::tenants::Signing;
        let owners = &routing.tenant_domains;
        let checked = match &routing.dkim {
            Some(d) => d.checked_domain(author, sender),
            None => author.map(str::to_owned),
        };
        let user = origin_user;
        let sender_domain = sender.rsplit_once('@').map(|(_, d)| d);
        let platform_only = match owners.signing(tenant, user, checked.as_deref(), sender_domain) {
            Signing::Own => false,
            Signing::PlatformOnly => true,
            Signing::Refuse { domain, tenant } => {
                tracing::info!(queue_id = %id, %domain, %tenant, "refused: the tenant does not send as this domain");
                return Err(IntakeError::SenderMismatch { domain, tenant });
            }
        };
        let Some(dkim) = &routing.dkim else {
            return Ok((data, None));
        };
        let choice = {
            let may_sign = |k: &str| owners.may_sign(tenant, k);
            let allowed = crate::dkim::Allowed {
                key: &may_sign,
                platform_only,
            };
            dkim.choose_allowed(author, sender, &allowed)
        };
        if choice.domains.is_empty() {
            tracing::info!(queue_id = %id, author = author.unwrap_or(""), sender,
                "no DKIM key for the message's domains; queued unsigned");
            return Ok((data, Some("none".into())));
        }
        let signed_by = choice.describe(dkim);
        match dkim.sign(data, choice).await {
            Err(stopped) => Err(IntakeError::Signing(stopped.to_string())),
            Ok((data, Ok(()))) => Ok((data, Some(signed_by))),
            Ok((_, Err(e))) if dkim.on_error() == OnSignError::Defer => {
                tracing::warn!(queue_id = %id, error = %e, "DKIM signing failed; refused (on_error = defer)");
                Err(IntakeError::Signing(e.to_string()))
            }
            Ok((data, Err(e))) => {
                tracing::warn!(queue_id = %id, error = %e, "DKIM signing failed; queued unsigned");
                Ok((data, Some("failed".into())))
            }
        }
    }

    /// The message's priority class: its priority header, if configured and
    /// naming a class (the header is removed either way); else the user's;
    /// else the tenant's; else the listener's; else normal.
    fn priority(
        &self,
        routing: &IntakeRouting,
        id: MessageId,
        data: &mut Vec<u8>,
        start: usize,
        origin: &Origin,
        tenant: Option<&str>,
    ) -> Priority {
        let s = &self.settings;
        let header = s
            .priority_header
            .as_deref()
            .and_then(|h| headers::remove_field(data, start, h))
            .and_then(|v| {
                let p = Priority::parse(&v);
                if p.is_none() {
                    tracing::warn!(queue_id = %id, value = %v, "the priority header names no class (high, normal, low, bulk); ignored");
                }
                p
            });
        let user = origin
            .user
            .as_deref()
            .and_then(|u| s.users.get(u))
            .and_then(|u| u.priority);
        let tenant = tenant
            .and_then(|t| routing.tenant_priorities.get(t))
            .copied();
        header
            .or(user)
            .or(tenant)
            .or(s.priority)
            .unwrap_or_default()
    }

    /// The message's tenant (the user's, else the listener's) and pool:
    /// its pool header, if configured and naming a pool (the header is
    /// removed either way); else the user's; else the tenant's; else the
    /// listener's. `None` is the default pool.
    fn pool_and_tenant(
        &self,
        routing: &IntakeRouting,
        id: MessageId,
        data: &mut Vec<u8>,
        start: usize,
        origin: &Origin,
    ) -> (Option<String>, Option<String>) {
        let s = &self.settings;
        let header = s
            .pool_header
            .as_deref()
            .and_then(|h| headers::remove_field(data, start, h));
        let header = header.filter(|p| {
            let known = routing.pools.contains(p);
            if !known {
                tracing::warn!(queue_id = %id, pool = %p, "the pool header names no configured pool; ignored");
            }
            known
        });
        let UserRouting {
            pool: user_pool,
            tenant: user_tenant,
            ..
        } = origin
            .user
            .as_deref()
            .and_then(|u| s.users.get(u))
            .cloned()
            .unwrap_or_default();
        let tenant = user_tenant.or_else(|| s.tenant.clone());
        let tenant_pool = tenant
            .as_ref()
            .and_then(|t| routing.tenant_pools.get(t))
            .cloned();
        (
            header
                .or(user_pool)
                .or(tenant_pool)
                .or_else(|| s.pool.clone()),
            tenant,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn reception_record(
        &self,
        now: SystemTime,
        id: MessageId,
        sender: &str,
        meta: &MessageMeta,
        origin: &Origin,
        rcpts: usize,
        size: u64,
    ) -> Record<'static> {
        let mut r = Record::new(Kind::Reception, now, id.to_string(), sender.to_owned());
        r.message_id = meta.message_id.clone().map(Into::into);
        r.recipients = Some(rcpts);
        r.size = Some(size);
        r.client = Some(origin.peer.to_string().into());
        r
    }
}
