//! `GET /v1/trace?domain=&source=&client=&secs=`: the SMTP dialogues of
//! matching sessions as they happen, one JSON object per line (a
//! [`TraceEvent`](crate::trace::TraceEvent)), for up to `secs` seconds
//! (default 600, at most 3600). An empty line every 10 s keeps an idle
//! stream open; a line `{"missed": N}` says the watcher fell behind. Needs
//! the full admin token: traces show addresses.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::AdminState;
use crate::trace::{TraceFilter, Watch};

/// Longest trace, and the default.
const MAX_SECS: u64 = 3600;
const DEFAULT_SECS: u64 = 600;
/// An empty line after this long without events.
const KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub(super) struct Params {
    domain: Option<String>,
    source: Option<String>,
    client: Option<String>,
    secs: Option<u64>,
}

#[utoipa::path(operation_id = "trace_stream", get, path = "/v1/trace", tag = "queue", params(("domain" = Option<String>, Query, description = "Outbound connections opened for mail to this domain"), ("source" = Option<String>, Query, description = "Outbound connections from this source"), ("client" = Option<String>, Query, description = "Inbound sessions from this client IP address"), ("secs" = Option<u64>, Query, description = "Stop after this many seconds (default 600, at most 3600)")), responses((status = 200, description = "JSON lines, one per SMTP command or reply, as they happen", content_type = "application/x-ndjson", body = crate::trace::TraceEvent), (status = 400, description = "A bad client address", body = super::types::ApiError)))]
pub(super) async fn stream(State(s): State<Arc<AdminState>>, Query(p): Query<Params>) -> Response {
    let client = match p.client.as_deref().map(str::parse) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            let msg = format!(
                "client {:?} is not an IP address",
                p.client.unwrap_or_default()
            );
            return super::error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    if let Some(source) = &p.source
        && let Err(unknown) =
            super::known::target(&s, &crate::shaping::rules::Target::Source(source.clone()))
    {
        return super::error(StatusCode::NOT_FOUND, &unknown);
    }
    let filter = TraceFilter {
        domain: p.domain,
        source: p.source,
        client,
    };
    let secs = p.secs.unwrap_or(DEFAULT_SECS).clamp(1, MAX_SECS);
    let end = Instant::now() + Duration::from_secs(secs);
    tracing::info!(?filter, secs, "trace started by an operator");
    let watch = s.tracer.watch();
    let lines = futures_util::stream::unfold((watch, filter), move |(mut w, f)| async move {
        let line = next_line(&mut w, &f, end).await?;
        Some((Ok::<_, std::io::Error>(line), (w, f)))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The next line to send: a matching event, a keep-alive or a count of
/// missed events; `None` at the end.
async fn next_line(w: &mut Watch, f: &TraceFilter, end: Instant) -> Option<String> {
    loop {
        let wait = (Instant::now() + KEEPALIVE).min(end);
        match tokio::time::timeout_at(wait, w.rx.recv()).await {
            Err(_) if Instant::now() >= end => return None,
            Err(_) => return Some("\n".into()),
            Ok(Ok(e)) if f.matches(&e) => {
                let mut line = serde_json::to_string(&*e).unwrap_or_default();
                line.push('\n');
                return Some(line);
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => return Some(format!("{{\"missed\":{n}}}\n")),
            Ok(Err(RecvError::Closed)) => return None,
        }
    }
}
