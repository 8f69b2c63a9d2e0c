//! Background jobs of the API (purge, bounce, rebind's retry) and their
//! progress at `GET /v1/jobs/{id}`, and the sweep they share: a walk over
//! the queue a page at a time, so that memory stays bounded however many
//! messages match; a message being delivered is skipped and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::types::JobProgress;
use crate::delivery::filter::{Filter, Scope};
use crate::message::MessageMeta;

/// Messages looked at per page (one short hold of the queue's index).
const PAGE: usize = 1000;

/// How many finished jobs are remembered.
const KEEP: usize = 100;

/// What a sweep did with one matching message.
pub(super) enum Acted {
    /// Acted on it.
    Done,
    /// Left alone (being delivered).
    Skipped,
    /// Could not (logged by the action).
    Failed,
    /// Nothing to do for it (already so).
    Unchanged,
}

/// Background jobs and their progress.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    all: Mutex<HashMap<u64, JobProgress>>,
}

impl Jobs {
    /// Registers a job of `kind`; returns its id.
    pub(super) fn start(&self, kind: &str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let p = JobProgress {
            job: id,
            kind: kind.into(),
            scanned: 0,
            done_items: 0,
            skipped: 0,
            failed: 0,
            held: 0,
            stage: String::new(),
            finished: false,
        };
        let mut all = self.lock();
        if all.len() >= KEEP {
            let oldest = all.values().filter(|p| p.finished).map(|p| p.job).min();
            if let Some(o) = oldest {
                all.remove(&o);
            }
        }
        all.insert(id, p);
        id
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, JobProgress>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn update(&self, id: u64, f: impl FnOnce(&mut JobProgress)) {
        if let Some(p) = self.lock().get_mut(&id) {
            f(p);
        }
    }

    /// A job's progress.
    pub(super) fn get(&self, id: u64) -> Option<JobProgress> {
        self.lock().get(&id).cloned()
    }
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(operation_id = "jobs_progress", get, path = "/v1/jobs/{id}", tag = "control", params(("id" = u64, Path, description = "The job")), responses((status = 200, description = "Its progress", body = super::types::JobProgress), (status = 404, description = "No such job", body = super::types::ApiError)))]
pub(super) async fn progress(State(s): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    match s.jobs.get(id) {
        Some(p) => Json(p).into_response(),
        None => super::error(StatusCode::NOT_FOUND, "no such job"),
    }
}

/// How long a sweep waits for matching messages that were being delivered
/// when it came to them, trying them again every half second.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Most such messages a sweep remembers (in-flight mail is bounded by
/// `delivery.max_in_flight`, far below this).
const IN_FLIGHT_KEEP: usize = 100_000;

/// Runs `act` on every queued message `filter` matches, recording progress
/// in job `id`, and marks the job finished. The actions of one page run
/// together, so that their writes share the queue's group commits; the
/// next page waits for them. A message being delivered when the sweep
/// comes to it is tried again once its attempt is over (for up to two
/// minutes); those still being delivered then are counted as skipped.
pub(super) async fn sweep<F, Fut>(s: &AdminState, id: u64, filter: &Filter, act: F)
where
    F: FnMut(::queue::MessageInfo) -> Fut,
    Fut: std::future::Future<Output = Acted>,
{
    walk(s, id, filter, act).await;
    s.jobs.update(id, |p| p.finished = true);
}

/// [`sweep`] without marking the job finished: one step of a job of
/// several.
pub(super) async fn walk<F, Fut>(s: &AdminState, id: u64, filter: &Filter, mut act: F)
where
    F: FnMut(::queue::MessageInfo) -> Fut,
    Fut: std::future::Future<Output = Acted>,
{
    // A bulk action covers every queued message: wait until all are in.
    s.queue.recovered().await;
    let default_pool = s.delivery.default_pool();
    let scope = s.scope(&default_pool);
    let mut later = Vec::new();
    let mut after = None;
    loop {
        let page = s.queue.page(after, PAGE);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let scanned = page.len() as u64;
        run_page(s, id, page, filter, &scope, &mut act, &mut later).await;
        s.jobs.update(id, |p| p.scanned += scanned);
    }
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    while !later.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let ids = std::mem::take(&mut later);
        s.jobs.update(id, |p| p.skipped -= ids.len() as u64);
        let page: Vec<_> = ids.into_iter().filter_map(|m| s.queue.get(m)).collect();
        run_page(s, id, page, filter, &scope, &mut act, &mut later).await;
    }
}

/// Acts on the matching messages of one page at once; remembers those
/// being delivered in `later`. The actions are polled together by this
/// task (no task of their own: a million of them would cost a spawn, a
/// schedule and a join each) and the job's progress is updated once.
async fn run_page<F, Fut>(
    s: &AdminState,
    id: u64,
    page: Vec<::queue::MessageInfo>,
    filter: &Filter,
    scope: &Scope<'_>,
    act: &mut F,
    later: &mut Vec<::queue::MessageId>,
) where
    F: FnMut(::queue::MessageInfo) -> Fut,
    Fut: std::future::Future<Output = Acted>,
{
    use futures_util::StreamExt;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let (mut skipped, no_meta) = (0, MessageMeta::default());
    for m in page {
        let meta = filter
            .needs_meta()
            .then(|| MessageMeta::decode(&m.envelope.meta));
        if !filter.matches(&m, meta.as_ref().unwrap_or(&no_meta), scope) {
            continue;
        }
        if m.in_flight {
            skipped += 1;
            if later.len() < IN_FLIGHT_KEEP {
                later.push(m.id);
            }
            continue;
        }
        running.push(act(m));
    }
    let (mut done, mut failed) = (0, 0);
    while let Some(outcome) = running.next().await {
        match outcome {
            Acted::Done => done += 1,
            Acted::Skipped => skipped += 1,
            Acted::Unchanged => {}
            Acted::Failed => failed += 1,
        }
    }
    s.jobs.update(id, |p| {
        p.done_items += done;
        p.skipped += skipped;
        p.failed += failed;
    });
}
