//! `POST /v1/purge` starts removing the queued mail a filter selects
//! (a recipient domain, a sender, a tenant, a pool: all given must match)
//! without delivering or bouncing it; follow it at `GET /v1/jobs/{id}`.
//! Each purged message is a `purged` line in the delivery log.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::jobs::{Acted, sweep};
use super::types::{JobStarted, Purge};
use crate::log::{Kind, Record};

#[utoipa::path(operation_id = "purge_start", post, path = "/v1/purge", tag = "control", request_body = super::types::Purge, responses((status = 202, description = "Started: follow /v1/jobs/{job}", body = super::types::JobStarted), (status = 400, description = "No criterion given", body = super::types::ApiError)))]
pub(super) async fn start(State(s): State<Arc<AdminState>>, Json(req): Json<Purge>) -> Response {
    if let Some(why) = req.invalid() {
        return super::error(StatusCode::BAD_REQUEST, &why);
    }
    if let Err(unknown) = super::known::filter(&s, &req) {
        return super::error(StatusCode::NOT_FOUND, &unknown);
    }
    if req.is_empty() {
        let msg = "name a domain, a sender, a tenant, a pool or a message id: a purge never takes the whole queue";
        return super::error(StatusCode::BAD_REQUEST, msg);
    }
    let id = s.jobs.start("purge");
    tracing::warn!(job = id, filter = ?req, "purge started by an operator");
    tokio::spawn(run(s.clone(), id, req));
    (StatusCode::ACCEPTED, Json(JobStarted { job: id })).into_response()
}

async fn run(s: Arc<AdminState>, id: u64, req: Purge) {
    sweep(&s, id, &req, |m| {
        let s = s.clone();
        async move {
            match s.queue.remove(m.id).await {
                Ok(()) => {
                    let now = s.clock.system_time();
                    let (qid, sender) = (m.id.to_string(), m.envelope.sender.to_string());
                    let mut r = Record::new(Kind::Purged, now, qid, sender);
                    r.recipients = Some(m.envelope.recipients.len());
                    r.reply = Some("purged by an operator".into());
                    s.log.write(&r);
                    Acted::Done
                }
                Err(e) => {
                    tracing::warn!(queue_id = %m.id, error = %e, "purge: cannot remove");
                    Acted::Failed
                }
            }
        }
    })
    .await;
    let p = s.jobs.get(id);
    tracing::warn!(
        job = id,
        purged = p.as_ref().map_or(0, |p| p.done_items),
        "purge finished"
    );
}
