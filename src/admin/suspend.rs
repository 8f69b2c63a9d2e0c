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
use crate::shaping::rules::Target;

#[utoipa::path(operation_id = "suspend_create", post, path = "/v1/suspensions", tag = "control", request_body = super::types::Suspend, responses((status = 201, description = "In force", body = super::types::Action), (status = 400, description = "A bad duration", body = super::types::ApiError), (status = 404, description = "No source, site, provider, pool or tenant has that name", body = super::types::ApiError)))]
pub(super) async fn create(State(s): State<Arc<AdminState>>, Json(req): Json<Suspend>) -> Response {
    let Ok(duration) = req.duration.parse::<crate::config::values::Duration>() else {
        let msg = format!("{:?} is not a duration such as \"30m\"", req.duration);
        return super::error(StatusCode::BAD_REQUEST, &msg);
    };
    if let Err(unknown) = known_target(&s, &req.target) {
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

/// Whether the names a target gives exist in the config in force (sites:
/// the sites delivery knows now, or a `[[shaping.site]]`); an error names
/// the closest known name. A domain may be any domain.
fn known_target(s: &AdminState, target: &Target) -> Result<(), String> {
    let Some(reloader) = &s.reloader else {
        return Ok(());
    };
    reloader.with_config(|c| {
        let sources = c.sources.iter().map(|x| x.name.as_str());
        let check = |kind: &str, name: &str, known: Vec<&str>| match known.contains(&name) {
            true => Ok(()),
            false => Err(match crate::config::names::closest(name, known) {
                Some(near) => format!("no {kind} is named {name:?} (did you mean {near:?}?)"),
                None => format!("no {kind} is named {name:?}"),
            }),
        };
        let site_known = |site: &str| {
            let configured = c.shaping.sites.iter().map(|x| x.mx.as_str());
            if site
                .split(',')
                .any(|h| configured.clone().any(|mx| mx.eq_ignore_ascii_case(h)))
            {
                return Ok(());
            }
            // The sites with mail now: read only when a site is named.
            let live: Vec<String> = s.delivery.paths().into_iter().map(|p| p.site).collect();
            let mut known: Vec<&str> = live.iter().map(String::as_str).collect();
            known.extend(configured);
            check("site", site, known)
        };
        match target {
            Target::Source(n) => check("source", n, sources.collect()),
            Target::Pool(n) => check("pool", n, c.pools.iter().map(|x| x.name.as_str()).collect()),
            Target::Tenant(n) => check(
                "tenant",
                n,
                c.tenants.iter().map(|x| x.name.as_str()).collect(),
            ),
            Target::Provider(n) => check(
                "provider",
                n,
                c.shaping
                    .providers
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect(),
            ),
            Target::Site(site) => site_known(site),
            Target::Path(source, site) | Target::Slowed(source, site) => {
                check("source", source, sources.collect())?;
                site_known(site)
            }
            Target::Domain(_) => Ok(()),
        }
    })
}
