//! `GET /v1/health`: is the daemon up, and is its queue taking mail.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::AdminState;
use super::types::Health;

#[utoipa::path(get, path = "/v1/health", tag = "daemon", responses((status = 200, description = "The daemon and its queue", body = super::types::Health)))]
pub(super) async fn get(State(s): State<Arc<AdminState>>) -> Json<Health> {
    let (queue, reason) = match s.queue.health() {
        ::queue::Health::Healthy => ("healthy", None),
        ::queue::Health::Full(r) => ("full", Some(r.to_string())),
        ::queue::Health::Unhealthy(r) => ("unhealthy", Some(r.to_string())),
    };
    Json(Health {
        queue: queue.into(),
        reason,
        started: crate::clock::rfc3339(s.started),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
