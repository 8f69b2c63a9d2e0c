//! `GET /v1/shaping/effective?domain=D[&source=S][&mx=a,b]`: the limits
//! mail to a domain gets from a source under the config in force, each
//! with the layer it came from. The domain is routed as delivery routes it
//! (or `mx` names its hosts); the source defaults to the first of the
//! default pool.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AdminState;
use super::types::EffectiveShaping;

#[derive(Deserialize)]
pub(super) struct Params {
    domain: String,
    source: Option<String>,
    mx: Option<String>,
}

#[utoipa::path(operation_id = "shaping_effective", get, path = "/v1/shaping/effective", tag = "control",
    params(("domain" = String, Query, description = "The recipient domain"),
        ("source" = Option<String>, Query, description = "The source, by name or by its (public) address (default: the first of the default pool)"),
        ("mx" = Option<String>, Query, description = "The domain's MX hosts, comma-separated, instead of routing it")),
    responses((status = 200, description = "The limits and their layers", body = super::types::EffectiveShaping),
        (status = 404, description = "No such source", body = super::types::ApiError),
        (status = 502, description = "The domain cannot be routed", body = super::types::ApiError)))]
pub(super) async fn effective(
    State(s): State<Arc<AdminState>>,
    Query(p): Query<Params>,
) -> Response {
    let domain = p.domain.to_ascii_lowercase();
    let Some(source) = p
        .source
        .map(Arc::from)
        .or_else(|| s.delivery.first_source())
    else {
        return super::error(StatusCode::NOT_FOUND, "the default pool has no source");
    };
    let Some(source) = s.delivery.find_source(&source) else {
        let msg =
            format!("no source is named {source:?} or has that address in the config in force");
        return super::error(StatusCode::NOT_FOUND, &msg);
    };
    let site = match p.mx {
        Some(list) => crate::dns::route::site_name(list.split(',')),
        None => match s.delivery.site_of(&domain).await {
            Ok(site) => site,
            Err(why) => {
                return super::error(
                    StatusCode::BAD_GATEWAY,
                    &format!("cannot route {domain}: {why}"),
                );
            }
        },
    };
    let plan = s.shaper.plan(&source.name, &site, &domain);
    Json(EffectiveShaping::new(domain, site, &source, &plan)).into_response()
}
