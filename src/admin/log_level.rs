//! `/v1/log-level`: the diagnostic log's filter, read (`GET`) and changed
//! while Tern runs (`PUT`, with the same strict syntax as `[log] level`),
//! for a closer look at one module without a restart. A change lasts until
//! the next one or the restart; a reload does not touch it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::types::LogLevel;

#[utoipa::path(operation_id = "log_level_get", get, path = "/v1/log-level", tag = "config", responses((status = 200, description = "The filter in force", body = super::types::LogLevel), (status = 503, description = "This Tern did not install its log itself", body = super::types::ApiError)))]
pub(super) async fn get(State(s): State<Arc<AdminState>>) -> Response {
    match &s.log_filter {
        Some(f) => Json(LogLevel {
            filter: f.current(),
        })
        .into_response(),
        None => unavailable(),
    }
}

#[utoipa::path(operation_id = "log_level_put", put, path = "/v1/log-level", tag = "config", request_body = super::types::LogLevel, responses((status = 200, description = "In force", body = super::types::LogLevel), (status = 400, description = "Not a filter", body = super::types::ApiError), (status = 503, description = "This Tern did not install its log itself", body = super::types::ApiError)))]
pub(super) async fn put(State(s): State<Arc<AdminState>>, Json(req): Json<LogLevel>) -> Response {
    let Some(f) = &s.log_filter else {
        return unavailable();
    };
    match f.set(&req.filter) {
        Ok(()) => Json(LogLevel {
            filter: f.current(),
        })
        .into_response(),
        Err(e) => super::error(
            StatusCode::BAD_REQUEST,
            &format!("filter {:?}: {e}", req.filter),
        ),
    }
}

fn unavailable() -> Response {
    super::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this Tern runs inside another program, whose log it does not own",
    )
}
