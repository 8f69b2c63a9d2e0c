//! `GET /v1/queue/summary?top=N`: queued messages and recipients, in all
//! and for the N domains with the most recipients (default 50).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::AdminState;
use super::types::{DomainRow, QueueSummary};

#[derive(Deserialize)]
pub(super) struct Params {
    top: Option<usize>,
}

pub(super) async fn summary(
    State(s): State<Arc<AdminState>>,
    Query(p): Query<Params>,
) -> Json<QueueSummary> {
    let stats = s.queue.stats();
    let mut domains = s.queue.domains();
    domains.sort_by(|a, b| {
        b.recipients
            .cmp(&a.recipients)
            .then(a.domain.cmp(&b.domain))
    });
    domains.truncate(p.top.unwrap_or(50));
    Json(QueueSummary {
        messages: stats.messages,
        recipients: stats.recipients,
        body_bytes: stats.body_bytes,
        disk_bytes: stats.disk_bytes,
        domains: domains
            .into_iter()
            .map(|d| DomainRow {
                domain: d.domain,
                messages: d.messages,
                recipients: d.recipients,
            })
            .collect(),
    })
}
