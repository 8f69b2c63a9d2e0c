//! `GET /v1/health`: is the daemon up, is its spool taking mail and
//! writing outcomes (`healthy`, `full` or `unwritable`, why, and since
//! when), how many messages wait for their outcomes to be written, and
//! whether the node takes new mail (`/v1/ready`, for load balancers).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::AdminState;
use super::types::Health;

#[utoipa::path(operation_id = "health_get", get, path = "/v1/health", tag = "daemon", responses((status = 200, description = "The daemon and its queue", body = super::types::Health)))]
pub(super) async fn get(State(s): State<Arc<AdminState>>) -> Json<Health> {
    let (queue, reason) = crate::views::spool_state(&s.queue.health());
    Json(Health {
        queue: queue.into(),
        reason,
        since: s.queue.health_since().map(crate::clock::rfc3339),
        unrecorded: s.delivery.unrecorded() as u64,
        started: crate::clock::rfc3339(s.started),
        version: env!("CARGO_PKG_VERSION").into(),
        mode: s.node.mode(),
    })
}

/// `GET /v1/ready`: for a load balancer: 200 while the node takes new
/// mail, 503 while it drains (or its spool cannot take mail).
#[utoipa::path(operation_id = "health_ready", get, path = "/v1/ready", tag = "daemon", responses(
    (status = 200, description = "Taking new mail", body = String),
    (status = 503, description = "Draining, or the spool takes no new mail", body = String)))]
pub(super) async fn ready(
    State(s): State<Arc<AdminState>>,
) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    if s.node.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match s.queue.health() {
        queue::Health::Healthy => (StatusCode::OK, "accepting\n"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the spool takes no new mail\n",
        ),
    }
}
