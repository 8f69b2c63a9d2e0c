//! `POST /v1/purge` starts removing queued mail that matches a filter (a
//! recipient domain, a sender, a tenant: all given must match) without
//! delivering or bouncing it; `GET /v1/jobs/{id}` reports its progress.
//! The job walks the queue a page at a time, so its memory stays bounded
//! however many messages match; a message being delivered is skipped
//! (and counted). Each purged message is a `purged` line in the delivery
//! log.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::types::{JobProgress, JobStarted, Purge};
use crate::intake::meta::MessageMeta;
use crate::log::{Kind, Record};

const PAGE: usize = 1000;

pub(super) async fn start(State(s): State<Arc<AdminState>>, Json(req): Json<Purge>) -> Response {
    if req.domain.is_none() && req.sender.is_none() && req.tenant.is_none() {
        let msg = "name a domain, a sender or a tenant: a purge never takes the whole queue";
        return super::error(StatusCode::BAD_REQUEST, msg);
    }
    let id = s.jobs.start("purge");
    tracing::warn!(job = id, ?req.domain, ?req.sender, ?req.tenant, "purge started by an operator");
    tokio::spawn(run(s.clone(), id, req));
    (StatusCode::ACCEPTED, Json(JobStarted { job: id })).into_response()
}

pub(super) async fn progress(State(s): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    match s.jobs.get(id) {
        Some(p) => Json(p).into_response(),
        None => super::error(StatusCode::NOT_FOUND, "no such job"),
    }
}

fn matches(m: &::queue::MessageInfo, req: &Purge) -> bool {
    let domain = req.domain.as_deref().is_none_or(|d| {
        m.envelope
            .recipients
            .iter()
            .zip(&m.statuses)
            .any(|(r, st)| {
                st.state == ::queue::RecipientState::Pending && r.domain().eq_ignore_ascii_case(d)
            })
    });
    let sender = req
        .sender
        .as_deref()
        .is_none_or(|x| m.envelope.sender.eq_ignore_ascii_case(x));
    let tenant = req
        .tenant
        .as_deref()
        .is_none_or(|t| MessageMeta::decode(&m.envelope.meta).tenant.as_deref() == Some(t));
    domain && sender && tenant
}

async fn run(s: Arc<AdminState>, id: u64, req: Purge) {
    let mut after = None;
    loop {
        let page = s.queue.page(after, PAGE);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for m in page.iter().filter(|m| matches(m, &req)) {
            if m.in_flight {
                s.jobs.update(id, |p| p.skipped += 1);
                continue;
            }
            match s.queue.remove(m.id).await {
                Ok(()) => {
                    let now = s.clock.system_time();
                    let mut r = Record::new(
                        Kind::Purged,
                        now,
                        m.id.to_string(),
                        m.envelope.sender.to_string(),
                    );
                    r.recipients = Some(m.envelope.recipients.len());
                    r.reply = Some("purged by an operator".into());
                    s.log.write(&r);
                    s.jobs.update(id, |p| p.done_items += 1);
                }
                Err(e) => tracing::warn!(queue_id = %m.id, error = %e, "purge: cannot remove"),
            }
        }
        s.jobs.update(id, |p| p.scanned += page.len() as u64);
    }
    s.jobs.update(id, |p| p.finished = true);
    let p = s.jobs.get(id);
    tracing::warn!(
        job = id,
        purged = p.as_ref().map_or(0, |p| p.done_items),
        "purge finished"
    );
}

/// Background jobs of the API and their progress.
#[derive(Default)]
pub struct Jobs {
    next: std::sync::atomic::AtomicU64,
    all: std::sync::Mutex<std::collections::HashMap<u64, JobProgress>>,
}

impl Jobs {
    fn start(&self, kind: &str) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let p = JobProgress {
            job: id,
            kind: kind.into(),
            scanned: 0,
            done_items: 0,
            skipped: 0,
            finished: false,
        };
        self.lock().insert(id, p);
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, JobProgress>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut JobProgress)) {
        if let Some(p) = self.lock().get_mut(&id) {
            f(p);
        }
    }

    fn get(&self, id: u64) -> Option<JobProgress> {
        self.lock().get(&id).cloned()
    }
}
