//! Queue views. `GET /v1/queue/summary?top=N`: queued messages and
//! recipients, in all and for the N domains with the most recipients
//! (default 50), from the queue's counters. `GET
//! /v1/queue/by/{dimension}?top=N`: the whole queue by domain or site
//! (counted from the queue's kept per-domain counts; ages and last errors
//! from the 20,000 oldest messages; a domain's site is the one its mail
//! was last routed to), by pool, tenant or priority (a walk over the
//! queue a page at a time), or the mail at the egress paths now by source; site and source rows carry the paths'
//! connections and rates. `GET /v1/paths`: each egress path. `GET
//! /v1/sources`: each egress source (address, proxy, usable now).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AdminState;
use super::types::{
    DestRow, DomainRow, PathRow, QueueBreakdown, QueueRow, QueueSummary, SourceRow,
};
use crate::config::Priority;
use crate::message::MessageMeta;

const PAGE: usize = 1000;

#[derive(Deserialize)]
pub(super) struct Params {
    top: Option<usize>,
}

#[utoipa::path(operation_id = "queue_summary", get, path = "/v1/queue/summary", tag = "queue", params(("top" = Option<usize>, Query, description = "At most this many domains (default 50)")), responses((status = 200, description = "The queue in all and its busiest domains", body = super::types::QueueSummary)))]
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
        held: stats.held,
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
        recovering: s.queue.is_recovering(),
    })
}

#[utoipa::path(operation_id = "queue_paths", get, path = "/v1/paths", tag = "queue", responses((status = 200, description = "Every egress path now, busiest first", body = Vec<super::types::PathRow>)))]
pub(super) async fn paths(State(s): State<Arc<AdminState>>) -> Json<Vec<PathRow>> {
    Json(s.delivery.paths())
}

#[utoipa::path(operation_id = "queue_destinations", get, path = "/v1/destinations", tag = "queue", responses((status = 200, description = "Every destination with mail, most waiting first", body = Vec<super::types::DestRow>)))]
pub(super) async fn destinations(State(s): State<Arc<AdminState>>) -> Json<Vec<DestRow>> {
    Json(s.delivery.destinations())
}

#[utoipa::path(operation_id = "queue_sources", get, path = "/v1/sources", tag = "queue", responses((status = 200, description = "Every egress source: the address receivers see, its proxy, whether it can send now, its proxy's failures", body = Vec<super::types::SourceRow>)))]
pub(super) async fn sources(State(s): State<Arc<AdminState>>) -> Json<Vec<SourceRow>> {
    Json(s.delivery.sources())
}

#[utoipa::path(operation_id = "queue_breakdown", get, path = "/v1/queue/by/{dimension}", tag = "queue", params(("dimension" = String, Path, description = "domain, site, pool, tenant or priority (the whole queue); source (the mail at the paths now)"), ("top" = Option<usize>, Query, description = "At most this many rows (default 50)")), responses((status = 200, description = "Rows, most recipients first", body = super::types::QueueBreakdown), (status = 404, description = "No such dimension", body = super::types::ApiError)))]
pub(super) async fn breakdown(
    State(s): State<Arc<AdminState>>,
    Path(by): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let mut rows = match by.as_str() {
        "source" => by_path(&s.delivery.paths(), |p| p.source.clone()),
        "domain" | "site" | "pool" | "tenant" | "priority" => {
            let s2 = s.clone();
            let by2 = by.clone();
            // Domains and sites count from the queue's kept counts; only
            // the oldest messages are walked, for ages and last errors.
            let limit = matches!(by.as_str(), "domain" | "site").then_some(OLDEST_WALK);
            let walked = tokio::task::spawn_blocking(move || walk(&s2, &by2, limit)).await;
            let mut rows = match walked {
                Ok(rows) if limit.is_some() => kept(&s, &by, rows),
                Ok(rows) => rows,
                Err(e) => return super::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            if by == "site" {
                add_path_rates(&mut rows, by_path(&s.delivery.paths(), |p| p.site.clone()));
                add_destinations(&mut rows, &s.delivery.destinations());
            }
            rows
        }
        _ => {
            let msg = "break the queue down by domain, site, source, pool, tenant or priority";
            return super::error(StatusCode::NOT_FOUND, msg);
        }
    };
    rows.sort_by(|a, b| b.recipients.cmp(&a.recipients).then(a.key.cmp(&b.key)));
    rows.truncate(p.top.unwrap_or(50));
    Json(QueueBreakdown { by, rows }).into_response()
}

/// Adds the paths' connections and rates to the sites' rows of the
/// whole queue.
fn add_path_rates(rows: &mut Vec<QueueRow>, paths: Vec<QueueRow>) {
    for p in paths {
        match rows.iter_mut().find(|r| r.key == p.key) {
            Some(r) => {
                r.connections = p.connections;
                r.sent_last_minute = p.sent_last_minute;
            }
            None => rows.push(QueueRow {
                messages: 0,
                recipients: 0,
                ..p
            }),
        }
    }
}

/// Adds what waits in the sites' scheduled queues, is ready at their
/// paths and is being sent, and why it waits.
fn add_destinations(rows: &mut [QueueRow], dests: &[DestRow]) {
    for d in dests {
        let site = d.site.split('|').next().unwrap_or(&d.site);
        if let Some(r) = rows.iter_mut().find(|r| r.key == site) {
            r.scheduled += d.scheduled;
            r.ready += d.ready;
            r.sending += d.sending;
            r.oldest_secs = r.oldest_secs.max(d.oldest_secs);
            if r.held.is_none() {
                r.held = d.held.clone();
            }
        }
    }
}

/// The paths' mail and rates, summed by `key`.
pub(super) fn by_path(paths: &[PathRow], key: impl Fn(&PathRow) -> String) -> Vec<QueueRow> {
    let mut rows: HashMap<String, QueueRow> = HashMap::new();
    for p in paths {
        let r = rows.entry(key(p)).or_insert_with(|| QueueRow {
            key: key(p),
            ..QueueRow::default()
        });
        r.messages += p.waiting;
        r.recipients += p.waiting_recipients;
        r.oldest_secs = r.oldest_secs.max(p.oldest_secs);
        r.connections += p.connections;
        r.sent_last_minute += p.sent_last_minute;
    }
    rows.into_values().collect()
}

/// Messages walked (oldest first) for the ages and last errors of the
/// domain and site views, whose counts come from the queue's kept counts.
const OLDEST_WALK: usize = 20_000;

/// The domain or site rows from the queue's kept per-domain counts (a
/// domain's site is the one its mail was last routed to), with the ages
/// and last errors `walked` found among the oldest messages.
fn kept(s: &AdminState, by: &str, walked: Vec<QueueRow>) -> Vec<QueueRow> {
    let mut rows: HashMap<String, QueueRow> = HashMap::new();
    for d in s.queue.domains() {
        let key = match by {
            "site" => s
                .delivery
                .known_site(&d.domain)
                .map_or_else(|| "(not routed yet)".to_owned(), |site| site.to_string()),
            _ => d.domain,
        };
        let r = rows.entry(key.clone()).or_insert_with(|| QueueRow {
            key,
            ..QueueRow::default()
        });
        r.messages += d.messages;
        r.recipients += d.recipients;
    }
    for w in walked {
        if let Some(r) = rows.get_mut(&w.key) {
            r.oldest_secs = w.oldest_secs;
            r.last_error = w.last_error;
        }
    }
    rows.into_values().collect()
}

/// The queue by domain, site, pool, tenant or priority: one pass, a page
/// at a time (the first `limit` messages, oldest first, if given),
/// holding one row per key.
fn walk(s: &AdminState, by: &str, limit: Option<usize>) -> Vec<QueueRow> {
    let default_pool = s.delivery.default_pool();
    let now = s.clock.now();
    let mut rows: HashMap<String, QueueRow> = HashMap::new();
    let (mut after, mut walked) = (None, 0);
    loop {
        if limit.is_some_and(|l| walked >= l) {
            break;
        }
        let page = s.queue.page(after, PAGE);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        walked += page.len();
        for m in &page {
            let meta = MessageMeta::decode(&m.envelope.meta);
            let age = now.saturating_since(m.arrival).as_secs();
            let mut count = |key: &str, rcpts: u64, reply: Option<&Arc<str>>| {
                let r = rows.entry(key.to_owned()).or_insert_with(|| QueueRow {
                    key: key.to_owned(),
                    ..QueueRow::default()
                });
                r.messages += 1;
                r.recipients += rcpts;
                r.oldest_secs = r.oldest_secs.max(age);
                if let Some(reply) = reply {
                    r.last_error = Some(reply.to_string());
                }
            };
            let pending: Vec<_> = m.pending().collect();
            let reply = m
                .pending()
                .find_map(|(i, _)| m.statuses[i].last_reply.as_ref());
            match by {
                "domain" | "site" => {
                    let mut domains: HashMap<String, (u64, Option<&Arc<str>>)> = HashMap::new();
                    for (i, r) in &pending {
                        let domain = r.domain().to_ascii_lowercase();
                        let key = match by {
                            "site" => s.delivery.known_site(&domain).map_or_else(
                                || "(not routed yet)".to_owned(),
                                |site| site.to_string(),
                            ),
                            _ => domain,
                        };
                        let d = domains.entry(key).or_default();
                        d.0 += 1;
                        d.1 = d.1.or(m.statuses[*i].last_reply.as_ref());
                    }
                    for (d, (n, reply)) in domains {
                        count(&d, n, reply);
                    }
                }
                "pool" => count(
                    meta.pool.as_deref().unwrap_or(&default_pool),
                    pending.len() as u64,
                    reply,
                ),
                "tenant" => count(
                    meta.tenant.as_deref().unwrap_or("-"),
                    pending.len() as u64,
                    reply,
                ),
                _ => count(
                    Priority::from_rank(m.priority).name(),
                    pending.len() as u64,
                    reply,
                ),
            }
        }
    }
    rows.into_values().collect()
}
