//! `GET /v1/queue/messages?domain=&sender=&tenant=&pool=&site=&provider=&state=&older_than_secs=&after=&limit=`:
//! the queued messages a filter selects, a page at a time in queue id
//! order (pass `next` back as `after`), each with its state and the last
//! reply a waiting recipient got. `GET
//! /v1/queue/messages/{id}[?body=true]`: one message's envelope, its
//! recipients' states, attempts and last replies, and its stored text when
//! asked for.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use queue::{MessageId, MessageInfo, RecipientState};
use serde::Deserialize;

use super::AdminState;
use super::types::{MessageDetail, MessagePage, MessageRow, RecipientRow};
use crate::clock::rfc3339;
use crate::config::Priority;
use crate::delivery::filter::{Filter, MessageState};
use crate::message::MessageMeta;

/// Messages looked at per request at most: a page of a selective filter
/// over a large queue ends early, with `next` to go on from.
const SCAN: usize = 100_000;

#[derive(Deserialize)]
pub(super) struct ListParams {
    domain: Option<String>,
    sender: Option<String>,
    tenant: Option<String>,
    pool: Option<String>,
    id: Option<String>,
    site: Option<String>,
    provider: Option<String>,
    state: Option<MessageState>,
    older_than_secs: Option<u64>,
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(operation_id = "messages_list", get, path = "/v1/queue/messages", tag = "queue", params(("domain" = Option<String>, Query, description = "With a recipient waiting at this domain"), ("sender" = Option<String>, Query, description = "From this envelope sender"), ("tenant" = Option<String>, Query, description = "Of this tenant"), ("pool" = Option<String>, Query, description = "Of this pool"), ("id" = Option<String>, Query, description = "This message (its queue id)"), ("site" = Option<String>, Query, description = "With a recipient waiting at a domain routed to this site"), ("provider" = Option<String>, Query, description = "With a recipient waiting at a site of this provider"), ("state" = Option<MessageState>, Query, description = "In this state: held, sending, waiting, deferred or new"), ("older_than_secs" = Option<u64>, Query, description = "Queued at least this many seconds ago"), ("after" = Option<String>, Query, description = "Queue id to start after (the previous page's next)"), ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)")), responses((status = 200, description = "One page", body = super::types::MessagePage), (status = 400, description = "A bad queue id", body = super::types::ApiError)))]
pub(super) async fn list(
    State(s): State<Arc<AdminState>>,
    Query(p): Query<ListParams>,
) -> Response {
    let mut after = match p.after.as_deref().map(str::parse::<MessageId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return super::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let filter = Filter {
        domain: p.domain,
        sender: p.sender,
        tenant: p.tenant,
        pool: p.pool,
        id: p.id,
        site: p.site,
        provider: p.provider,
        state: p.state,
        older_than_secs: p.older_than_secs,
    };
    if let Some(why) = filter.invalid() {
        return super::error(StatusCode::BAD_REQUEST, &why);
    }
    if let Err(unknown) = super::known::filter(&s, &filter) {
        return super::error(StatusCode::NOT_FOUND, &unknown);
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let default_pool = s.delivery.default_pool();
    let scope = s.scope(&default_pool);
    let (mut messages, mut scanned) = (Vec::new(), 0);
    let next = loop {
        let page = s.queue.page(after, 1000);
        let Some(last) = page.last().map(|m| m.id) else {
            break None;
        };
        for m in page {
            scanned += 1;
            after = Some(m.id);
            let meta = MessageMeta::decode(&m.envelope.meta);
            if filter.matches(&m, &meta, &scope) {
                messages.push(row(&m, &meta));
            }
            if messages.len() == limit || scanned == SCAN {
                break;
            }
        }
        if messages.len() == limit || scanned == SCAN || after != Some(last) {
            break after.map(|a| a.to_string());
        }
    };
    Json(MessagePage { messages, next }).into_response()
}

#[derive(Deserialize)]
pub(super) struct OneParams {
    #[serde(default)]
    body: bool,
}

#[utoipa::path(operation_id = "messages_one", get, path = "/v1/queue/messages/{id}", tag = "queue", params(("id" = String, Path, description = "The queue id"), ("body" = Option<bool>, Query, description = "Include the stored message")), responses((status = 200, description = "The message", body = super::types::MessageDetail), (status = 404, description = "Not queued", body = super::types::ApiError)))]
pub(super) async fn one(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Query(p): Query<OneParams>,
) -> Response {
    let id = match id.parse::<MessageId>() {
        Ok(id) => id,
        Err(e) => return super::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(m) = s.queue.get(id) else {
        return super::error(StatusCode::NOT_FOUND, "no such message in the queue");
    };
    let body = if p.body {
        let q = s.queue.clone();
        match tokio::task::spawn_blocking(move || q.body(id)).await {
            Ok(Ok(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(Err(e)) => return super::error(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e) => return super::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    } else {
        None
    };
    let meta = MessageMeta::decode(&m.envelope.meta);
    let recipients = m
        .envelope
        .recipients
        .iter()
        .zip(&m.statuses)
        .map(|(r, st)| RecipientRow {
            address: r.address.to_string(),
            state: match st.state {
                RecipientState::Pending => "pending",
                RecipientState::Delivered => "delivered",
                RecipientState::Failed => "failed",
                RecipientState::Held => "held",
            }
            .into(),
            attempts: st.attempts,
            next_attempt: (st.state == RecipientState::Pending)
                .then(|| rfc3339(st.next_attempt.to_system_time())),
            last_reply: st.last_reply.as_deref().map(str::to_owned),
        })
        .collect();
    Json(MessageDetail {
        message: row(&m, &meta),
        message_id: meta.message_id.clone(),
        client: meta.client_ip.map(|ip| format!("{} ({})", meta.helo, ip)),
        auth_user: meta.auth_user.clone(),
        recipients,
        body,
    })
    .into_response()
}

/// The summary line of a message.
fn row(m: &MessageInfo, meta: &MessageMeta) -> MessageRow {
    let pending: Vec<_> = m.pending().map(|(i, _)| &m.statuses[i]).collect();
    let next = pending.iter().map(|st| st.next_attempt).min();
    let last_reply = pending.iter().find_map(|st| st.last_reply.as_deref());
    MessageRow {
        id: m.id.to_string(),
        sender: m.envelope.sender.to_string(),
        arrival: rfc3339(m.arrival.to_system_time()),
        recipients: m.envelope.recipients.len(),
        pending: pending.len(),
        next_attempt: next.map(|t| rfc3339(t.to_system_time())),
        last_reply: last_reply.map(str::to_owned),
        pool: meta.pool.clone(),
        tenant: meta.tenant.clone(),
        priority: Priority::from_rank(m.priority).name().into(),
        size: m.body_len,
        in_flight: m.in_flight,
        state: MessageState::of(m).name().into(),
        held: m
            .statuses
            .iter()
            .filter(|s| s.state == RecipientState::Held)
            .count(),
    }
}
