//! `GET /v1/cluster`: the fleet's nodes as their heartbeats last said
//! (any node answers for all).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::ClusterStatus;
use super::{AdminState, error};

#[utoipa::path(operation_id = "cluster_nodes", get, path = "/v1/cluster", tag = "cluster", responses(
    (status = 200, description = "The fleet's nodes", body = ClusterStatus),
    (status = 404, description = "This node is in no fleet (no [cluster])", body = super::types::ApiError),
    (status = 503, description = "The fleet's Redis does not answer", body = super::types::ApiError)))]
pub(super) async fn nodes(State(s): State<Arc<AdminState>>) -> Response {
    let Some(c) = &s.cluster else {
        return error(
            StatusCode::NOT_FOUND,
            "this node is in no fleet ([cluster] is not set)",
        );
    };
    match c.nodes().await {
        Ok(nodes) => Json(ClusterStatus {
            node: c.node.clone(),
            redis: if c.redis_up() { "up" } else { "down" }.into(),
            nodes,
        })
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
