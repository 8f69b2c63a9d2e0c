//! The HTTP injection API's work: a `POST /v1/messages` request checked
//! field by field, its content compiled once (inline, or a stored
//! template's cached version), rendered and built as MIME per recipient
//! on a blocking thread, then each recipient's message handed to the
//! intake, which DKIM-signs and queues it exactly as it does SMTP mail.
//! The answer comes only once every message of the request is durable.
//! Owns the request's checks, the rendering pipeline and idempotency;
//! never speaks HTTP (the admin handlers map [`InjectError`] to statuses)
//! and never writes the spool but through the intake and the queue's
//! state records.

pub mod api;
mod idempotency;
mod mime;
mod precompile;
pub mod render;
pub mod templates;
mod text;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;

use crate::config::{ApiConfig, Priority};
use crate::intake::{ApiFields, Intake, IntakeError, IntakeRouting, Origin, Submission};
use crate::swap::Swap;
use api::{FieldError, RecipientResult, SendRequest, SendResponse};
pub use idempotency::{Begin, Idempotency, InFlight};
use mime::Mailbox;
use render::{Compiled, Parts};
pub use templates::{TemplateError, Templates};

/// Messages of one request handed to the intake at once.
const ENQUEUE_AT_ONCE: usize = 16;

/// Largest `custom_id`, and largest `metadata` as JSON.
const MAX_CUSTOM_ID: usize = 255;
const MAX_METADATA: usize = 8192;

/// Why a request queued nothing.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Fields in error (each named); nothing was queued.
    #[error("the request has errors")]
    Invalid(Vec<FieldError>),
    /// New mail is not taken now (draining, spool full or failing, queue
    /// at its limit): try again after `retry_after` seconds.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// Seconds to wait.
        retry_after: u64,
        /// A limit of the queue (429) rather than the node (503).
        limit: bool,
    },
}

/// The injection API.
pub struct Injector {
    intake: Arc<Intake>,
    templates: Arc<Templates>,
    idempotency: Idempotency,
    config: ApiConfig,
    hostname: String,
    routing: Arc<Swap<IntakeRouting>>,
    clock: crate::clock::Clock,
}

/// A request's fields, checked.
struct Checked {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    attachments: Vec<(String, String, Vec<u8>)>,
    api: ApiFields,
}

impl Injector {
    /// An injector queuing through `intake` (its settings: the API's),
    /// with its template store and its idempotency keys in the spool.
    pub fn new(
        intake: Intake,
        templates: Arc<Templates>,
        idempotency: Idempotency,
        config: ApiConfig,
        hostname: String,
        routing: Arc<Swap<IntakeRouting>>,
        clock: crate::clock::Clock,
    ) -> Self {
        Self {
            intake: Arc::new(intake),
            templates,
            idempotency,
            config,
            hostname,
            routing,
            clock,
        }
    }

    /// The largest request body.
    pub fn max_request_size(&self) -> usize {
        usize::try_from(self.config.max_request_size.0).unwrap_or(usize::MAX)
    }

    /// The template store.
    pub fn templates(&self) -> &Arc<Templates> {
        &self.templates
    }

    /// The idempotency keys.
    pub fn idempotency(&self) -> &Idempotency {
        &self.idempotency
    }

    /// Tern's clock (for the handlers' timestamps).
    pub fn now(&self) -> std::time::SystemTime {
        self.clock.system_time()
    }

    /// Serves one request from `client`: every recipient's message queued
    /// durably (or its error in its row), or nothing at all.
    pub async fn send(
        &self,
        req: SendRequest,
        client: IpAddr,
    ) -> Result<SendResponse, InjectError> {
        let checked = self.check(&req).map_err(InjectError::Invalid)?;
        self.door()?;
        let compiled = self.compile(&req)?;
        let origin = Origin {
            peer: client,
            helo: "api".into(),
            esmtp: true,
            tls: false,
            user: None,
            http: true,
        };
        let checked = Arc::new(checked);
        let (intake, hostname, now) = (self.intake.clone(), self.hostname.clone(), self.now());
        let (c, o) = (checked.clone(), origin.clone());
        let built = tokio::task::spawn_blocking(move || {
            build_all(&req, &compiled, &c, &intake, &o, &hostname, now)
        })
        .await
        .map_err(|e| unavailable(format!("rendering failed: {e}"), 5, false))?;
        self.queue_all(built, &origin).await
    }

    /// Hands each built message to the intake, all at once (one group
    /// commit), and makes the answer.
    async fn queue_all(
        &self,
        built: Vec<Built>,
        origin: &Origin,
    ) -> Result<SendResponse, InjectError> {
        let tasks = built.into_iter().map(|b| async {
            match b {
                Built::Failed(row) => row,
                Built::Message { sub, row } => {
                    let mut row = row;
                    match self.intake.accept(*sub, origin).await {
                        Ok(id) => row.queue_id = Some(id.to_string()),
                        Err(e) => {
                            row.message_id = None;
                            row.error = Some(FieldError::new("", queue_refusal(&e)));
                        }
                    }
                    row
                }
            }
        });
        // A few at a time: each group commit stays a modest write (one
        // of hundreds of large messages costs the kernel far more per
        // byte to copy), and the queue still batches their fsyncs.
        use futures_util::StreamExt;
        let results: Vec<RecipientResult> = futures_util::stream::iter(tasks)
            .buffered(ENQUEUE_AT_ONCE)
            .collect()
            .await;
        let queued = results.iter().filter(|r| r.queue_id.is_some()).count();
        let queue_refused = results
            .iter()
            .filter(|r| r.error.as_ref().is_some_and(|e| e.field.is_empty()))
            .count();
        if queued == 0 && queue_refused > 0 {
            let why = results
                .iter()
                .find_map(|r| r.error.as_ref())
                .map(|e| e.reason.clone());
            return Err(unavailable(why.unwrap_or_default(), 10, false));
        }
        Ok(SendResponse {
            queued,
            rejected: results.len() - queued,
            results,
        })
    }

    /// New mail is taken now, or why not.
    fn door(&self) -> Result<(), InjectError> {
        if self.intake.draining() {
            self.intake.refused(crate::metrics::Refusal::Draining);
            return Err(unavailable(
                "this node is draining; send to another",
                60,
                false,
            ));
        }
        match self.intake.health() {
            queue::Health::Healthy => {}
            queue::Health::Full(why) | queue::Health::Unhealthy(why) => {
                self.intake.refused(crate::metrics::Refusal::Spool);
                return Err(unavailable(
                    format!("the spool cannot take mail now: {why}"),
                    30,
                    false,
                ));
            }
        }
        if self.intake.over_limit() {
            self.intake.refused(crate::metrics::Refusal::Backlog);
            return Err(unavailable("the queue is at its limit", 10, true));
        }
        Ok(())
    }

    /// The request's content, compiled: a stored template's cached
    /// version, or the inline parts.
    fn compile(&self, req: &SendRequest) -> Result<Arc<Compiled>, InjectError> {
        let invalid = |e: Vec<FieldError>| InjectError::Invalid(e);
        let headers: Vec<(String, String)> = req.headers.clone().into_iter().collect();
        match &req.template {
            Some(name) => {
                let (c, _) = (self.templates)
                    .compiled(name, req.template_version)
                    .map_err(|e| match e {
                        TemplateError::Invalid(errors) => invalid(errors),
                        other => invalid(vec![FieldError::new("template", other.to_string())]),
                    })?;
                if headers.is_empty() && req.subject.is_none() {
                    return Ok(c);
                }
                // Headers and a subject given with a template apply over it.
                let mut parts = c.parts().clone();
                parts.headers = headers;
                if req.subject.is_some() {
                    parts.subject = req.subject.clone();
                }
                Ok(Arc::new(Compiled::new(parts, "").map_err(invalid)?))
            }
            None => {
                let parts = Parts {
                    subject: req.subject.clone(),
                    text: req.text.clone(),
                    html: req.html.clone(),
                    mjml: req.mjml.clone(),
                    headers,
                    defaults: Default::default(),
                };
                Ok(Arc::new(Compiled::new(parts, "").map_err(invalid)?))
            }
        }
    }

    /// Every field that can be checked before rendering.
    fn check(&self, req: &SendRequest) -> Result<Checked, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |f: &str, r: String| errors.push(FieldError::new(f, r));
        let from = mime::mailbox(&req.from).map_err(|e| err("from", e)).ok();
        let reply_to = match &req.reply_to {
            Some(r) => mime::mailbox(r).map_err(|e| err("reply_to", e)).ok(),
            None => None,
        };
        let n = req.recipients.len();
        if n == 0 || n > self.config.max_recipients as usize {
            let max = self.config.max_recipients;
            err("recipients", format!("give 1 to {max} recipients, not {n}"));
        }
        let inline = [&req.text, &req.html, &req.mjml]
            .iter()
            .any(|p| p.is_some());
        match (&req.template, inline) {
            (Some(_), true) => err(
                "template",
                "give a template or inline content, not both".into(),
            ),
            (None, false) => err("text", "give text, html, mjml or a template".into()),
            _ => {}
        }
        if req.html.is_some() && req.mjml.is_some() {
            err("html", "give html or mjml, not both".into());
        }
        for name in req.headers.keys() {
            if let Err(e) = mime::check_header_name(name) {
                err(&format!("headers.{name}"), e);
            }
        }
        let attachments = check_attachments(req, &mut err);
        let api = self.check_routing(req, &mut err);
        match (from, errors.is_empty()) {
            (Some(from), true) => Ok(Checked {
                from,
                reply_to,
                attachments,
                api,
            }),
            _ => Err(errors),
        }
    }

    /// Tenant, pool, priority, custom id and metadata, checked against the
    /// config in force.
    fn check_routing(&self, req: &SendRequest, err: &mut impl FnMut(&str, String)) -> ApiFields {
        let routing = self.routing.get();
        if let Some(p) = &req.pool
            && !routing.pools.contains(p)
        {
            err("pool", format!("no [[pool]] is named {p:?}"));
        }
        if let Some(t) = &req.tenant
            && !routing.tenants.contains(t)
        {
            err("tenant", format!("no [[tenant]] is named {t:?}"));
        }
        let priority = req.priority.as_deref().and_then(|p| {
            let parsed = Priority::parse(p);
            if parsed.is_none() {
                err(
                    "priority",
                    format!("{p:?} is not high, normal, low or bulk"),
                );
            }
            parsed
        });
        if req
            .custom_id
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CUSTOM_ID || c.chars().any(char::is_control))
        {
            err(
                "custom_id",
                format!("at most {MAX_CUSTOM_ID} bytes, no control characters"),
            );
        }
        let metadata = req.metadata.as_ref().map(|m| m.to_string());
        match &req.metadata {
            Some(m) if !m.is_object() => err("metadata", "must be a JSON object".into()),
            Some(_) if metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA) => {
                err("metadata", format!("at most {MAX_METADATA} bytes as JSON"))
            }
            _ => {}
        }
        ApiFields {
            pool: req.pool.clone(),
            tenant: req.tenant.clone(),
            priority,
            custom_id: req.custom_id.clone(),
            metadata,
        }
    }
}

fn unavailable(reason: impl Into<String>, retry_after: u64, limit: bool) -> InjectError {
    InjectError::Unavailable {
        reason: reason.into(),
        retry_after,
        limit,
    }
}

/// What the intake's refusal means to the caller of the API.
fn queue_refusal(e: &IntakeError) -> String {
    match e {
        IntakeError::QueueFull => "not queued: the queue is at its limit; retry later".into(),
        IntakeError::Loop { .. } => "not queued: too many Received headers".into(),
        IntakeError::SenderMismatch { domain, tenant } => {
            format!("not queued: tenant {tenant} does not send as {domain}")
        }
        IntakeError::Signing(_) => "not queued: DKIM signing failed; retry later".into(),
        IntakeError::Queue(q) => format!("not queued: the spool failed ({q}); retry later"),
    }
}

/// Attachments decoded from base64, each checked.
fn check_attachments(
    req: &SendRequest,
    err: &mut impl FnMut(&str, String),
) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::with_capacity(req.attachments.len());
    for (i, a) in req.attachments.iter().enumerate() {
        let f = |k: &str| format!("attachments[{i}].{k}");
        let ct_ok = a.content_type.split_once('/').is_some_and(|(t, s)| {
            let tok = |x: &str| {
                !x.is_empty()
                    && x.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
            };
            tok(t) && tok(s)
        });
        if !ct_ok {
            err(
                &f("content_type"),
                format!("{:?} is not a MIME type (type/subtype)", a.content_type),
            );
        }
        if a.filename.is_empty()
            || a.filename.len() > 255
            || a.filename
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            err(
                &f("filename"),
                "1 to 255 bytes, no control characters or slashes".into(),
            );
        }
        let clean: String = a.content.chars().filter(|c| !c.is_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(clean) {
            Ok(bytes) => out.push((a.content_type.clone(), a.filename.clone(), bytes)),
            Err(e) => err(&f("content"), format!("not base64: {e}")),
        }
    }
    out
}

/// A recipient's message ready for the intake, or its row with an error.
enum Built {
    Message {
        sub: Box<Submission>,
        row: RecipientResult,
    },
    Failed(RecipientResult),
}

/// Renders and builds every recipient's message (blocking work).
fn build_all(
    req: &SendRequest,
    compiled: &Compiled,
    c: &Checked,
    intake: &Intake,
    origin: &Origin,
    hostname: &str,
    now: std::time::SystemTime,
) -> Vec<Built> {
    let date = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let common = mime::Common {
        from: &c.from,
        reply_to: c.reply_to.as_ref(),
        attachments: &c.attachments,
        date,
    };
    let mut memo = None;
    let mut out = Vec::with_capacity(req.recipients.len());
    for (i, r) in req.recipients.iter().enumerate() {
        let mut row = RecipientResult {
            email: r.email().to_owned(),
            ..RecipientResult::default()
        };
        let to = match recipient_mailbox(r) {
            Ok(m) => m,
            Err(e) => {
                row.error = Some(FieldError::new(format!("recipients[{i}]"), e));
                out.push(Built::Failed(row));
                continue;
            }
        };
        let mut vars = req.variables.clone();
        if let api::Recipient::Full(f) = r {
            vars.extend(f.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        vars.insert("email".into(), to.address.clone().into());
        vars.entry("name".into())
            .or_insert_with(|| to.name.clone().unwrap_or_default().into());
        let rendered = match compiled.render(&vars, &mut memo) {
            Ok(r) => r,
            Err(mut e) => {
                row.error = Some(e.remove(0));
                out.push(Built::Failed(row));
                continue;
            }
        };
        let (id, mut data) = intake.begin(origin, Some(&to.address), compiled.size_hint());
        let start = data.len();
        let message_id = crate::intake::headers::message_id_value(id, hostname, now);
        let bare = message_id.trim_start_matches('<').trim_end_matches('>');
        mime::build(&common, &to, bare, &rendered, &mut data);
        row.message_id = Some(message_id);
        let utf8 = !c.from.address.is_ascii() || !to.address.is_ascii();
        let sub = Submission {
            id,
            sender: c.from.address.clone(),
            recipients: vec![crate::intake::SubmittedRecipient {
                address: to.address.clone(),
                params: Default::default(),
            }],
            envid: None,
            ret: None,
            body_8bitmime: false,
            smtputf8: utf8,
            content_8bit: false,
            data,
            data_start: start,
            api: Some(c.api.clone()),
        };
        out.push(Built::Message {
            sub: Box::new(sub),
            row,
        });
    }
    out
}

/// A recipient's mailbox (its name from `name`, if any).
fn recipient_mailbox(r: &api::Recipient) -> Result<Mailbox, String> {
    match r {
        api::Recipient::Address(a) => mime::mailbox(a),
        api::Recipient::Full(f) => {
            mime::check_address(&f.email)?;
            Ok(Mailbox {
                name: f
                    .name
                    .clone()
                    .filter(|n| !n.is_empty() && !n.chars().any(char::is_control)),
                address: f.email.clone(),
            })
        }
    }
}
