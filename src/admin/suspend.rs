//! `/v1/suspensions`: `POST` with a [`Suspend`] body stops mail for a
//! target (path, source, site, provider, domain, pool or tenant) for a
//! duration, with a reason; `DELETE` with a [`CancelAction`] resumes it
//! (and, for a site or source, lifts the dead-site pauses of its paths).
//! Suspended mail waits in its scheduled queue (no attempt is counted,
//! nothing is written), never bounces, and flows again by itself at the
//! end.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::types::{Action, CancelAction, Cancelled, Suspend};

#[utoipa::path(operation_id = "suspend_create", post, path = "/v1/suspensions", tag = "control", request_body = super::types::Suspend, responses((status = 201, description = "In force", body = super::types::Action), (status = 400, description = "A bad duration", body = super::types::ApiError), (status = 404, description = "No source, site, provider, pool or tenant has that name", body = super::types::ApiError)))]
pub(super) async fn create(State(s): State<Arc<AdminState>>, Json(req): Json<Suspend>) -> Response {
    let Ok(duration) = req.duration.parse::<crate::config::values::Duration>() else {
        let msg = format!("{:?} is not a duration such as \"30m\"", req.duration);
        return super::error(StatusCode::BAD_REQUEST, &msg);
    };
    if let Err(unknown) = super::known::target(&s, &req.target) {
        return super::error(StatusCode::NOT_FOUND, &unknown);
    }
    let now = std::time::SystemTime::now();
    let action: Action =
        s.shaper
            .actions
            .suspend_by_operator(req.target, duration.get(), &req.reason, now);
    tracing::warn!(target = %action.target, until = %action.end, reason = %action.reply, "suspended by an operator");
    s.delivery.holds_changed();
    Json(action).into_response()
}

#[utoipa::path(operation_id = "suspend_resume", delete, path = "/v1/suspensions", tag = "control", request_body = super::types::CancelAction, responses((status = 200, description = "Whether one was in force", body = super::types::Cancelled)))]
pub(super) async fn resume(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<CancelAction>,
) -> Json<Cancelled> {
    let cancelled = s.shaper.actions.cancel(&req.target);
    if cancelled {
        tracing::warn!(target = %req.target, "resumed by an operator");
        s.delivery.holds_changed();
    }
    Json(Cancelled { cancelled })
}
