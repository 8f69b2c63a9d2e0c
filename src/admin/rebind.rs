//! `POST /v1/rebinds` moves the queued mail a filter selects to another
//! pool (see [`crate::delivery::rebind`]): from then on each of its
//! attempts leaves from that pool's sources, and (unless `retry` is false)
//! it is made due now, in a background job followed at `/v1/jobs/{id}`.
//! `GET /v1/rebinds` lists the rebinds in force; `DELETE
//! /v1/rebinds/{id}` ends one (its mail goes back to its own pool).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::jobs::{Acted, sweep};
use super::types::{Cancelled, Rebind, RebindMade};

#[utoipa::path(operation_id = "rebind_create", post, path = "/v1/rebinds", tag = "control", request_body = super::types::Rebind, responses((status = 201, description = "In force, and kept in the spool", body = super::types::RebindMade), (status = 400, description = "No criterion given", body = super::types::ApiError), (status = 422, description = "No such pool", body = super::types::ApiError), (status = 503, description = "The spool cannot keep it now", body = super::types::ApiError)))]
pub(super) async fn create(State(s): State<Arc<AdminState>>, Json(req): Json<Rebind>) -> Response {
    if let Some(why) = req.filter.invalid() {
        return super::error(StatusCode::BAD_REQUEST, &why);
    }
    if let Some(field) = req.filter.durable_only() {
        let msg = format!(
            "a rebind is kept and matched as mail is delivered, so it cannot select by {field} (which changes as mail waits): select by domain, sender, tenant, pool or message id"
        );
        return super::error(StatusCode::BAD_REQUEST, &msg);
    }
    if req.filter.is_empty() {
        let msg = "name what moves: a domain, a sender, a tenant, a pool or a message id (--pool P moves all of P's mail)";
        return super::error(StatusCode::BAD_REQUEST, msg);
    }
    if let Err(why) = check_destination(&s, &req) {
        return super::error(StatusCode::UNPROCESSABLE_ENTITY, &why);
    }
    let rule = crate::delivery::rebind::Rebind {
        id: 0,
        filter: req.filter.clone(),
        to_pool: req.to_pool.clone(),
        via: req.via.clone(),
        made_ms: 0,
        reason: req.reason.clone(),
    };
    let rebind = s
        .delivery
        .settings()
        .rebinds
        .add(rule, s.clock.system_time());
    if let Err(e) = s.delivery.keep_rebinds().await {
        s.delivery.settings().rebinds.cancel(rebind.id);
        let msg = format!("cannot keep the rebind in the spool: {e}");
        return super::error(StatusCode::SERVICE_UNAVAILABLE, &msg);
    }
    tracing::warn!(rebind = rebind.id, filter = ?req.filter, to = %rebind.destination(), reason = %req.reason,
        "queued mail rebound by an operator");
    let job = req.retry.then(|| {
        let id = s.jobs.start("rebind");
        tokio::spawn(retry(s.clone(), id, req));
        id
    });
    let made = RebindMade { rebind, job };
    (StatusCode::CREATED, Json(made)).into_response()
}

/// A pool of the config in force, relay hosts that parse, at least one.
fn check_destination(s: &AdminState, req: &Rebind) -> Result<(), String> {
    if req.to_pool.is_none() && req.via.is_empty() {
        return Err("name where the mail goes: to_pool, via, or both".into());
    }
    if let Some(p) = req.to_pool.as_deref().filter(|p| !s.delivery.has_pool(p)) {
        return Err(format!("no pool is named {p:?} in the config in force"));
    }
    match req
        .via
        .iter()
        .find(|h| crate::config::names::parse_host_port(h).is_none())
    {
        Some(h) => Err(format!("{h:?} is not a host or host:port")),
        None => Ok(()),
    }
}

/// Makes the rebound mail due now, so that it leaves from its new pool
/// without waiting for its retry time; mail waiting in its old pool's
/// scheduled queues moves to the new pool's.
async fn retry(s: Arc<AdminState>, id: u64, req: Rebind) {
    let now = ::queue::Timestamp::from_system_time(s.clock.system_time());
    sweep(&s, id, &req.filter, |m| {
        let q = s.queue.clone();
        let delivery = s.delivery.clone();
        async move {
            if crate::cluster::drain::receive::held(&m) {
                // A hand-over not yet committed: due at its commit.
                return Acted::Done;
            }
            if m.scheduled {
                // Waiting in its old pool's queue: admitted again, from
                // the new pool.
                delivery.readmit(m.id);
                return Acted::Done;
            }
            match q.reschedule(m.id, now).await {
                Ok(_) => Acted::Done,
                Err(e) => {
                    tracing::warn!(queue_id = %m.id, error = %e, "rebind: cannot make the message due now");
                    Acted::Failed
                }
            }
        }
    })
    .await;
    s.wake.notify_one();
}

#[utoipa::path(operation_id = "rebind_list", get, path = "/v1/rebinds", tag = "control", responses((status = 200, description = "The rebinds in force", body = Vec<super::types::RebindRule>)))]
pub(super) async fn list(State(s): State<Arc<AdminState>>) -> Response {
    let now = s.clock.system_time();
    Json(s.delivery.settings().rebinds.list(now)).into_response()
}

#[utoipa::path(operation_id = "rebind_cancel", delete, path = "/v1/rebinds/{id}", tag = "control", params(("id" = u64, Path, description = "The rebind")), responses((status = 200, description = "Whether it was in force", body = super::types::Cancelled), (status = 503, description = "The spool cannot keep the change now", body = super::types::ApiError)))]
pub(super) async fn cancel(State(s): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    let cancelled = s.delivery.settings().rebinds.cancel(id);
    if cancelled && let Err(e) = s.delivery.keep_rebinds().await {
        let msg = format!(
            "ended, but not yet kept in the spool (a restart before it is may bring it back): {e}"
        );
        return super::error(StatusCode::SERVICE_UNAVAILABLE, &msg);
    }
    if cancelled {
        tracing::warn!(
            rebind = id,
            "rebind ended by an operator; its mail goes back to its own pool"
        );
    }
    Json(Cancelled { cancelled }).into_response()
}
