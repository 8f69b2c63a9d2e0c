//! `POST /v1/hold` and `POST /v1/release`: an operator holds the queued
//! mail a filter selects (like `postsuper -h`): its pending recipients are
//! kept, durably, and never tried or expired until released
//! (`postsuper -H`), when they are due at once. An empty filter takes the
//! whole queue (a hold is undone by a release, unlike a purge). Both run
//! as background jobs (`GET /v1/jobs/{id}`), a page of messages per
//! group-committed write; a message being delivered is held once its
//! attempt is over.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::jobs::{Acted, sweep};
use super::types::{Filter, JobStarted};

/// Which way a job moves recipients.
#[derive(Clone, Copy, Debug)]
pub(super) enum Way {
    Hold,
    Release,
}

#[utoipa::path(operation_id = "hold_start", post, path = "/v1/hold", tag = "control", request_body = super::types::Filter, responses((status = 202, description = "Started: follow /v1/jobs/{job}", body = super::types::JobStarted), (status = 400, description = "A criterion is malformed", body = super::types::ApiError)))]
pub(super) async fn hold(State(s): State<Arc<AdminState>>, Json(req): Json<Filter>) -> Response {
    start(s, req, Way::Hold)
}

#[utoipa::path(operation_id = "release_start", post, path = "/v1/release", tag = "control", request_body = super::types::Filter, responses((status = 202, description = "Started: follow /v1/jobs/{job}", body = super::types::JobStarted), (status = 400, description = "A criterion is malformed", body = super::types::ApiError)))]
pub(super) async fn release(State(s): State<Arc<AdminState>>, Json(req): Json<Filter>) -> Response {
    start(s, req, Way::Release)
}

fn start(s: Arc<AdminState>, req: Filter, way: Way) -> Response {
    if let Some(why) = req.invalid() {
        return super::error(StatusCode::BAD_REQUEST, &why);
    }
    if let Err(unknown) = super::known::filter(&s, &req) {
        return super::error(StatusCode::NOT_FOUND, &unknown);
    }
    let kind = match way {
        Way::Hold => "hold",
        Way::Release => "release",
    };
    let id = s.jobs.start(kind);
    tracing::warn!(job = id, filter = ?req, "{kind} started by an operator");
    tokio::spawn(run(s, id, req, way));
    (StatusCode::ACCEPTED, Json(JobStarted { job: id })).into_response()
}

async fn run(s: Arc<AdminState>, id: u64, req: Filter, way: Way) {
    sweep(&s, id, &req, |m| mark(s.clone(), m, way)).await;
    if matches!(way, Way::Release) {
        s.wake.notify_one();
    }
    let p = s.jobs.get(id).unwrap_or_default();
    tracing::warn!(
        job = id,
        messages = p.done_items,
        skipped = p.skipped,
        failed = p.failed,
        "{way:?} finished"
    );
}

/// Holds or releases one message (a sweep's action; a bounce holds with
/// it first).
pub(super) async fn mark(s: Arc<AdminState>, m: ::queue::MessageInfo, way: Way) -> Acted {
    let wanted = match way {
        Way::Hold => m.pending().next().is_some(),
        Way::Release => m.is_held(),
    };
    if !wanted {
        return Acted::Unchanged;
    }
    let now = ::queue::Timestamp::from_system_time(s.clock.system_time());
    let done = match way {
        Way::Hold => s.queue.hold(m.id).await,
        Way::Release => s.queue.release_held(m.id, now).await,
    };
    match done {
        Ok(0) => Acted::Skipped,
        Ok(n) => {
            tracing::debug!(queue_id = %m.id, recipients = n, "{way:?} by an operator");
            Acted::Done
        }
        Err(e) => {
            tracing::warn!(queue_id = %m.id, error = %e, "{way:?}: cannot write");
            Acted::Failed
        }
    }
}
