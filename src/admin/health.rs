//! `GET /v1/health`: is the daemon up, is its spool taking mail and
//! writing outcomes (`healthy`, `full` or `unwritable`, why, and since
//! when), and how many messages wait for their outcomes to be written.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::AdminState;
use super::types::Health;

#[utoipa::path(get, path = "/v1/health", tag = "daemon", responses((status = 200, description = "The daemon and its queue", body = super::types::Health)))]
pub(super) async fn get(State(s): State<Arc<AdminState>>) -> Json<Health> {
    let (queue, reason) = crate::views::spool_state(&s.queue.health());
    Json(Health {
        queue: queue.into(),
        reason,
        since: s.queue.health_since().map(crate::clock::rfc3339),
        unrecorded: s.delivery.unrecorded() as u64,
        started: crate::clock::rfc3339(s.started),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
