//! `POST /v1/bounce` starts failing the queued mail a filter selects: every
//! pending recipient fails with the operator's reason (5.0.0), is logged
//! as a bounce, and each sender gets one DSN, as for any failure. Follow
//! it at `GET /v1/jobs/{id}`: it first holds every matching message (stage
//! `holding`: within seconds none is tried again, however many there are),
//! then bounces them (stage `bouncing`) at the pace their DSNs are built
//! and queued. A message being delivered is left alone and counted as
//! skipped. The bounce is kept in the spool (a [`BounceJournal`] under
//! `bounce/`) from before it starts until it ends: should Tern stop in
//! between, the next start takes it up again (as a new job) once the
//! spool is recovered, so no message is left held for a bounce that
//! never came.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::jobs::{Acted, sweep, walk};
use super::types::{Bounce, BounceJournal, JobStarted};

/// The spool state keys of the bounces under way.
pub const JOURNAL_PREFIX: &str = "bounce/";

#[utoipa::path(operation_id = "bounce_start", post, path = "/v1/bounce", tag = "control", request_body = super::types::Bounce, responses((status = 202, description = "Started: follow /v1/jobs/{job}", body = super::types::JobStarted), (status = 400, description = "No criterion given", body = super::types::ApiError), (status = 503, description = "The bounce cannot be kept in the spool (nothing bounced)", body = super::types::ApiError)))]
pub(super) async fn start(State(s): State<Arc<AdminState>>, Json(req): Json<Bounce>) -> Response {
    if let Some(why) = req.filter.invalid() {
        return super::error(StatusCode::BAD_REQUEST, &why);
    }
    if let Err(unknown) = super::known::filter(&s, &req.filter) {
        return super::error(StatusCode::NOT_FOUND, &unknown);
    }
    if req.filter.is_empty() {
        let msg = "name a domain, a sender, a tenant, a pool or a message id: a bounce never takes the whole queue";
        return super::error(StatusCode::BAD_REQUEST, msg);
    }
    let id = s.jobs.start("bounce");
    let started_ms = s.clock.now().as_millis();
    let key = format!("{JOURNAL_PREFIX}{started_ms}-{id}");
    let journal = BounceJournal {
        request: req.clone(),
        started_ms,
    };
    let kept = serde_json::to_vec(&journal).unwrap_or_default();
    if let Err(e) = s.queue.put_state(&key, kept.into()).await {
        s.jobs.update(id, |p| p.finished = true);
        let why = format!("cannot keep the bounce in the spool, nothing bounced: {e}");
        return super::error(StatusCode::SERVICE_UNAVAILABLE, &why);
    }
    tracing::warn!(job = id, filter = ?req.filter, reason = %req.reason, "bounce started by an operator");
    tokio::spawn(run(s.clone(), id, req, key));
    (StatusCode::ACCEPTED, Json(JobStarted { job: id })).into_response()
}

/// Takes up the bounces the spool says were under way at the last stop,
/// each as a new job, for the messages that had arrived when it started.
pub fn resume(s: &Arc<AdminState>) {
    for key in s.queue.state_keys(JOURNAL_PREFIX) {
        let kept = s.queue.state(&key);
        let Some(journal) = kept.and_then(|v| serde_json::from_slice::<BounceJournal>(&v).ok())
        else {
            tracing::error!(%key, "a bounce kept in the spool cannot be read; left as it is (its messages stay held: bounce or release them)");
            continue;
        };
        let mut req = journal.request;
        // Only what had arrived when it started: older by the time since.
        let since = s.clock.now().as_millis().saturating_sub(journal.started_ms) / 1000;
        req.filter.older_than_secs = Some(req.filter.older_than_secs.unwrap_or(0) + since);
        let id = s.jobs.start("bounce");
        tracing::warn!(job = id, %key, filter = ?req.filter, reason = %req.reason, "a bounce under way at the last stop goes on");
        tokio::spawn(run(s.clone(), id, req, key));
    }
}

async fn run(s: Arc<AdminState>, id: u64, req: Bounce, key: String) {
    // First stop delivery of every matching message (a page per group
    // commit: seconds for a million), then bounce them at the pace their
    // DSNs can be built and queued.
    s.jobs.update(id, |p| p.stage = "holding".into());
    let hold = |m| super::hold::mark(s.clone(), m, super::hold::Way::Hold);
    walk(&s, id, &req.filter, hold).await;
    s.jobs.update(id, |p| {
        p.held = std::mem::take(&mut p.done_items);
        (p.scanned, p.skipped, p.failed) = (0, 0, 0);
        p.stage = "bouncing".into();
    });
    let held = s.jobs.get(id).map_or(0, |p| p.held);
    tracing::warn!(job = id, held, "bounce: matching mail held; bouncing it");
    let reason: Arc<str> = req.reason.as_str().into();
    sweep(&s, id, &req.filter, |m| {
        let (delivery, reason) = (s.delivery.clone(), reason.clone());
        async move {
            match delivery.bounce(m.id, &reason).await {
                true => Acted::Done,
                false => Acted::Skipped,
            }
        }
    })
    .await;
    if let Err(e) = s.queue.put_state(&key, bytes::Bytes::new()).await {
        tracing::error!(job = id, %key, error = %e, "bounce finished but still kept in the spool: the next start runs it again (nothing is bounced twice)");
    }
    let p = s.jobs.get(id);
    tracing::warn!(
        job = id,
        bounced = p.as_ref().map_or(0, |p| p.done_items),
        "bounce finished"
    );
}
