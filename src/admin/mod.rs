//! The admin API: versioned JSON endpoints over HTTP on its own listener
//! (`[admin]`, loopback by default; a bearer token when configured), one
//! file per endpoint group, with the bodies in [`types`] shared by the
//! CLI and the tests. It reads the queue and the shaping state and ends
//! automatic actions; it never sends mail or changes the spool's format.

pub mod client;
mod client_tls;
pub mod types;

mod access;
mod actions;
mod bounce;
mod cluster;
mod drain;
mod health;
mod hold;
mod https;
pub mod inject;
mod jobs;
mod known;
mod log_level;
mod messages;
mod purge;
mod queue;
mod rebind;
pub mod reload;
mod retry;
mod shaping;
mod status;
mod suspend;
pub mod tls;
mod trace;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::shaping::Shaper;

pub use bounce::JOURNAL_PREFIX as BOUNCE_JOURNALS;

/// Takes up the jobs kept in the spool that a stop interrupted (bounces),
/// once the admin state exists.
pub fn resume_jobs(s: &Arc<AdminState>) {
    bounce::resume(s);
}

/// What the endpoints read and act on.
pub struct AdminState {
    /// The queue.
    pub queue: Arc<::queue::Queue>,
    /// Shaping: rules, actions, plans.
    pub shaper: Arc<Shaper>,
    /// The metrics, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Tern's clock.
    pub clock: crate::clock::Clock,
    /// Wakes delivery (mail made due now).
    pub wake: Arc<tokio::sync::Notify>,
    /// The delivery log (purges are recorded there).
    pub log: Arc<crate::log::DeliveryLog>,
    /// Background jobs (purges, bounces) and their progress.
    pub jobs: jobs::Jobs,
    /// Delivery (bounces, rebinds, the paths' state).
    pub delivery: Arc<crate::delivery::Delivery>,
    /// Reloads the config file.
    pub reloader: Option<Arc<reload::Reloader>>,
    /// When the daemon started.
    pub started: SystemTime,
    /// The bearer token requests must carry, if any.
    pub token: Option<String>,
    /// The fleet this node belongs to, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Whether the node takes new mail.
    pub node: Arc<crate::node::NodeState>,
    /// Hands this node's queue to its peers.
    pub drainer: Arc<crate::cluster::drain::Drainer>,
    /// Takes over the queues of draining peers.
    pub receiver: Arc<crate::cluster::drain::Receiver>,
    /// The fleet's token, which peers present to hand mail over.
    pub fleet_token: Option<String>,
    /// The injection API (messages, templates).
    pub injector: Arc<crate::inject::Injector>,
    /// A token that may only read (GET), if any.
    pub read_token: Option<String>,
    /// Browser sessions opened at `/login` (read-only).
    pub sessions: access::Sessions,
    /// Served over HTTPS (session cookies are `Secure`).
    pub https: bool,
    /// Live SMTP dialogues (`/v1/trace`).
    pub tracer: Arc<crate::trace::Tracer>,
    /// Sends TLS reports (`POST /v1/tls/reports`).
    pub tls_reports: Option<Arc<crate::tlspolicy::send::Sender>>,
    /// This node's host name (`[server] hostname`), shown on the status
    /// page.
    pub hostname: String,
    /// The diagnostic log's filter (`/v1/log-level`), when Tern installed
    /// the log itself.
    pub log_filter: Option<Arc<crate::logging::LogFilter>>,
}

impl AdminState {
    /// What an operator's filter is matched in now: `default_pool` (the
    /// config's, from `delivery.default_pool()`), the time, and where
    /// delivery routed each domain.
    pub(super) fn scope<'a>(&'a self, default_pool: &'a str) -> crate::delivery::filter::Scope<'a> {
        crate::delivery::filter::Scope {
            default_pool,
            now: ::queue::Timestamp::from_system_time(self.clock.system_time()),
            routes: Some(&self.delivery),
        }
    }
}

/// The API's description, generated from the handlers' annotations and
/// the request and response types, served at `/v1/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tern admin API",
        description = "Queue views, control (suspend, retry, purge, bounce, rebind), reload and status of a running Tern. Send `Authorization: Bearer <token>` when a token is configured."
    ),
    paths(
        health::get,
        health::ready,
        cluster::nodes,
        drain::start,
        drain::status,
        drain::cancel,
        drain::transfer,
        drain::commit,
        status::page,
        queue::summary,
        queue::breakdown,
        queue::paths,
        queue::destinations,
        queue::sources,
        messages::list,
        messages::one,
        actions::list,
        actions::cancel,
        shaping::effective,
        suspend::create,
        suspend::resume,
        retry::post,
        purge::start,
        bounce::start,
        hold::hold,
        hold::release,
        jobs::progress,
        rebind::create,
        rebind::list,
        rebind::cancel,
        reload::post,
        reload::get,
        log_level::get,
        log_level::put,
        inject::send,
        inject::put_template,
        inject::list_templates,
        inject::get_template,
        inject::preview,
        tls::policy,
        tls::send,
        trace::stream,
    )
)]
pub struct ApiDoc;

/// The API's routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/health", get(health::get))
        .route("/v1/ready", get(health::ready))
        .route("/v1/cluster", get(cluster::nodes))
        .route(
            "/v1/drain",
            get(drain::status).post(drain::start).delete(drain::cancel),
        )
        .route(
            "/v1/cluster/transfer",
            axum::routing::post(drain::transfer)
                .layer(axum::extract::DefaultBodyLimit::max(TRANSFER_LIMIT)),
        )
        .route("/v1/cluster/commit", axum::routing::post(drain::commit))
        .route("/v1/messages", axum::routing::post(inject::send))
        .route("/v1/templates", get(inject::list_templates))
        .route(
            "/v1/templates/{name}",
            get(inject::get_template).put(inject::put_template),
        )
        .route(
            "/v1/templates/{name}/preview",
            axum::routing::post(inject::preview),
        )
        .route("/metrics", get(metrics))
        .route("/status", get(status::page))
        .route("/v1/queue/summary", get(queue::summary))
        .route("/v1/queue/by/{dimension}", get(queue::breakdown))
        .route("/v1/queue/messages", get(messages::list))
        .route("/v1/queue/messages/{id}", get(messages::one))
        .route("/v1/paths", get(queue::paths))
        .route("/v1/destinations", get(queue::destinations))
        .route("/v1/sources", get(queue::sources))
        .route(
            "/v1/shaping/actions",
            get(actions::list).delete(actions::cancel),
        )
        .route("/v1/shaping/effective", get(shaping::effective))
        .route("/v1/tls/reports", axum::routing::post(tls::send))
        .route("/v1/tls/{domain}", get(tls::policy))
        .route("/v1/retry", axum::routing::post(retry::post))
        .route("/v1/trace", get(trace::stream))
        .route("/v1/reload", axum::routing::post(reload::post))
        .route("/v1/config", get(reload::get))
        .route("/v1/log-level", get(log_level::get).put(log_level::put))
        .route("/v1/purge", axum::routing::post(purge::start))
        .route("/v1/bounce", axum::routing::post(bounce::start))
        .route("/v1/hold", axum::routing::post(hold::hold))
        .route("/v1/release", axum::routing::post(hold::release))
        .route("/v1/jobs/{id}", get(jobs::progress))
        .route("/v1/rebinds", get(rebind::list).post(rebind::create))
        .route("/v1/rebinds/{id}", axum::routing::delete(rebind::cancel))
        .route(
            "/v1/suspensions",
            axum::routing::post(suspend::create).delete(suspend::resume),
        )
        .route("/login", get(access::form).post(access::login))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::auth,
        ))
        .with_state(state)
}

/// `GET /v1/openapi.json`.
async fn openapi() -> Response {
    use utoipa::OpenApi;
    match ApiDoc::openapi().to_json() {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    s.metrics.set_log_dropped(s.log.dropped());
    let fleet = s.cluster.as_ref().map(|c| c.state());
    let text = (s.metrics).render(&s.queue, &s.delivery.state(), (s.node.draining(), fleet));
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response()
}

/// The largest transfer batch a peer may send.
const TRANSFER_LIMIT: usize = 256 << 20;

/// An error response with a JSON body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = types::ApiError {
        error: message.to_owned(),
    };
    (status, axum::Json(body)).into_response()
}

/// Serves `app` (the admin API's [`router`], or the injection API's own)
/// on `listener` until `stop` resolves: over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Some(tls) = tls {
        return https::serve(listener, app, tls, stop).await;
    }
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the admin API stopped");
    }
}
