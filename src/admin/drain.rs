//! The drain, for operators (`POST|GET|DELETE /v1/drain`: start, follow,
//! cancel) and for peers (`POST /v1/cluster/transfer` and
//! `/v1/cluster/commit`, with the fleet's token): see
//! [`crate::cluster::drain`]. Handlers only: they decode, call, answer.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::DrainRequest;
use super::{AdminState, error};
use crate::cluster::drain::Progress;
use crate::cluster::drain::wire::{self, Commit, Committed};

/// `?from=NODE` on the peers' endpoints.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct From {
    /// The node handing its mail over.
    from: String,
}

#[utoipa::path(operation_id = "drain_start", post, path = "/v1/drain", tag = "cluster", request_body = DrainRequest, responses(
    (status = 202, description = "Draining: follow GET /v1/drain", body = Progress),
    (status = 503, description = "The drain could not be kept in the spool", body = super::types::ApiError)))]
pub(super) async fn start(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<DrainRequest>,
) -> Response {
    match s.drainer.start(req.to).await {
        Ok(p) => (StatusCode::ACCEPTED, Json(p)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[utoipa::path(operation_id = "drain_status", get, path = "/v1/drain", tag = "cluster", responses(
    (status = 200, description = "Where the drain stands", body = Progress)))]
pub(super) async fn status(State(s): State<Arc<AdminState>>) -> Json<Progress> {
    Json(s.drainer.status())
}

#[utoipa::path(operation_id = "drain_cancel", delete, path = "/v1/drain", tag = "cluster", responses(
    (status = 200, description = "Stopped after the batch under way: the node takes mail again", body = Progress),
    (status = 503, description = "The end of the drain could not be kept in the spool", body = super::types::ApiError)))]
pub(super) async fn cancel(State(s): State<Arc<AdminState>>) -> Response {
    match s.drainer.cancel().await {
        Ok(p) => Json(p).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[utoipa::path(operation_id = "drain_transfer", post, path = "/v1/cluster/transfer", tag = "cluster", params(From),
    request_body(content = Vec<u8>, content_type = "application/x-tern-transfer", description = "A batch of messages (see cluster::drain::wire)"),
    responses(
        (status = 200, description = "The messages now held here durably, and those refused", body = wire::Taken),
        (status = 400, description = "The batch is damaged", body = super::types::ApiError)))]
pub(super) async fn transfer(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<From>,
    body: Bytes,
) -> Response {
    match wire::decode(body) {
        Ok(batch) => Json(s.receiver.take(&q.from, batch).await).into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("transfer from {}: {e}", q.from),
        ),
    }
}

#[utoipa::path(operation_id = "drain_commit", post, path = "/v1/cluster/commit", tag = "cluster", params(From), request_body = Commit, responses(
    (status = 200, description = "The held messages are due now (at their due time)", body = Committed),
    (status = 503, description = "The spool refused the write; commit again", body = super::types::ApiError)))]
pub(super) async fn commit(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<From>,
    Json(c): Json<Commit>,
) -> Response {
    match s.receiver.commit(&q.from, &c.ids).await {
        Ok(released) => Json(Committed { released }).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
