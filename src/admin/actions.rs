//! `/v1/shaping/actions`: `GET` lists the automatic actions in force
//! (suspensions and slow-downs started by reply rules, dead-site pauses);
//! `DELETE` with a [`CancelAction`] body ends one now, and the mail it
//! held flows at once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::AdminState;
use super::types::{Action, CancelAction, Cancelled};

#[utoipa::path(operation_id = "actions_list", get, path = "/v1/shaping/actions", tag = "control", responses((status = 200, description = "Suspensions and slow-downs in force", body = Vec<super::types::Action>)))]
pub(super) async fn list(State(s): State<Arc<AdminState>>) -> Json<Vec<Action>> {
    Json(s.shaper.actions.list())
}

#[utoipa::path(operation_id = "actions_cancel", delete, path = "/v1/shaping/actions", tag = "control", request_body = super::types::CancelAction, responses((status = 200, description = "Whether one was in force", body = super::types::Cancelled)))]
pub(super) async fn cancel(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<CancelAction>,
) -> Json<Cancelled> {
    let cancelled = s.shaper.actions.cancel(&req.target);
    if cancelled {
        tracing::warn!(target = %req.target, "automatic action cancelled by an operator");
        s.delivery.holds_changed();
    }
    Json(Cancelled { cancelled })
}
