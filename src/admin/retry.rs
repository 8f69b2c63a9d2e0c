//! `POST /v1/retry`: make deferred mail due now ("retry now"), for every
//! message or those with a pending recipient at one domain, and lift the
//! dead-site pauses of that domain's site (or all of them), so that mail
//! waiting for them goes at once. Walks the queue a page at a time
//! (bounded memory), the writes of a page together so that they share the
//! queue's group commits; a message being delivered or waiting for its
//! turn is left alone; attempts are not counted.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::types::{Retried, Retry};

const PAGE: usize = 1000;

#[utoipa::path(operation_id = "retry_post", post, path = "/v1/retry", tag = "control", request_body = super::types::Retry, responses((status = 200, description = "Made due now", body = super::types::Retried), (status = 503, description = "The queue refused a write", body = super::types::ApiError)))]
pub(super) async fn post(State(s): State<Arc<AdminState>>, Json(req): Json<Retry>) -> Response {
    let filter = crate::delivery::filter::Filter {
        domain: req.domain.map(|d| d.to_ascii_lowercase()),
        id: req.id,
        ..Default::default()
    };
    let default_pool = s.delivery.default_pool();
    let scope = s.scope(&default_pool);
    let now = scope.now;
    if let Some(why) = filter.invalid() {
        return super::error(axum::http::StatusCode::BAD_REQUEST, &why);
    }
    s.queue.recovered().await; // every queued message, not only new mail
    let pauses = s.delivery.retry_now(filter.domain.as_deref()).await as u64;
    let (mut messages, mut recipients, mut after) = (0u64, 0u64, None);
    loop {
        let page = s.queue.page(after, PAGE);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        // A hand-over not yet committed is due at its commit, not before.
        let ready = |m: &&::queue::MessageInfo| {
            !m.in_flight && !m.scheduled && !crate::cluster::drain::receive::held(m)
        };
        let mut writes = tokio::task::JoinSet::new();
        for m in page.iter().filter(ready) {
            let meta = crate::message::MessageMeta::decode(&m.envelope.meta);
            if filter.matches(m, &meta, &scope) {
                let (q, id) = (s.queue.clone(), m.id);
                writes.spawn(async move { (id, q.reschedule(id, now).await) });
            }
        }
        // The page's writes share the queue's group commits.
        while let Some(done) = writes.join_next().await {
            match done {
                Ok((_, Ok(0))) => {}
                Ok((_, Ok(n))) => {
                    messages += 1;
                    recipients += n as u64;
                }
                Ok((id, Err(e))) => {
                    let msg = format!("rescheduling {id}: {e}");
                    return super::error(StatusCode::SERVICE_UNAVAILABLE, &msg);
                }
                Err(e) => {
                    return super::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
                }
            }
        }
    }
    if messages > 0 {
        s.wake.notify_one();
    }
    tracing::info!(
        domain = filter.domain.as_deref().unwrap_or("(all)"),
        messages,
        recipients,
        pauses,
        "retry now, by an operator"
    );
    Json(Retried {
        messages,
        recipients,
        pauses,
    })
    .into_response()
}
