//! The injection API over HTTP: `POST /v1/messages` (with an optional
//! `Idempotency-Key`), and stored templates: `PUT /v1/templates/{name}`
//! (a new version), `GET /v1/templates` and `/v1/templates/{name}`,
//! `POST /v1/templates/{name}/preview`. The one place that maps the
//! injector's errors to HTTP statuses: a body that is not the request's
//! JSON 400, fields in error 422 (each named), over the door's budgets
//! 429 or 503 with `Retry-After`, never a half-queued request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::AdminState;
use crate::inject::Injector;
use crate::inject::api::{
    FieldError, InvalidRequest, Preview, PreviewRequest, SendRequest, TemplateContent, TemplateInfo,
};
use crate::inject::{Begin, InjectError, TemplateError};

/// What the injection handlers need: the injector. Taken from the admin
/// API's state on the admin listener, or given to the API's own listener.
#[derive(Clone)]
pub struct InjectState(pub Arc<Injector>);

impl axum::extract::FromRef<Arc<AdminState>> for InjectState {
    fn from_ref(s: &Arc<AdminState>) -> Self {
        Self(s.injector.clone())
    }
}

/// The API's own listener (`[api] address`): the injection endpoints
/// only, behind `[api] token` when one is set.
pub fn router(injector: Arc<Injector>, token: Option<String>) -> axum::Router {
    use axum::routing::{get, post};
    let token = Arc::new(token);
    axum::Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/templates", get(list_templates))
        .route("/v1/templates/{name}", get(get_template).put(put_template))
        .route("/v1/templates/{name}/preview", post(preview))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    if let Some(t) = token.as_deref()
                        && super::access::bearer(&req) != Some(t)
                    {
                        return super::error(
                            StatusCode::UNAUTHORIZED,
                            "a valid bearer token is required",
                        );
                    }
                    next.run(req).await
                }
            },
        ))
        .with_state(InjectState(injector))
}

/// A body as `T`, or the 400 (or 413) that says where it is wrong.
async fn body<T: DeserializeOwned>(
    req: Request,
    limit: usize,
) -> Result<(T, bytes::Bytes), Response> {
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            let msg = format!("the body is over {limit} bytes (api.max_request_size)");
            super::error(StatusCode::PAYLOAD_TOO_LARGE, &msg)
        })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok((v, bytes)),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut fe = FieldError::new(
                if path == "." { String::new() } else { path },
                inner.to_string(),
            );
            if inner.line() > 0 {
                (fe.line, fe.column) = (Some(inner.line()), Some(inner.column()));
            }
            let body = InvalidRequest {
                error: "the body is not a valid request".into(),
                errors: vec![fe],
            };
            Err((StatusCode::BAD_REQUEST, Json(body)).into_response())
        }
    }
}

fn invalid(errors: Vec<FieldError>) -> Response {
    let body = InvalidRequest {
        error: "the request has errors; nothing was queued".into(),
        errors,
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// The response for an injector's error.
fn inject_error(e: InjectError) -> Response {
    match e {
        InjectError::Invalid(errors) => invalid(errors),
        InjectError::Unavailable {
            reason,
            retry_after,
            limit,
        } => {
            let status = match limit {
                true => StatusCode::TOO_MANY_REQUESTS,
                false => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = super::error(status, &format!("{reason}; nothing was queued"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            r
        }
    }
}

#[utoipa::path(operation_id = "inject_send", post, path = "/v1/messages", tag = "inject", request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key (within api.idempotency_ttl) gets the first answer and queues nothing")),
    responses(
        (status = 202, description = "Every recipient's message is queued durably, or its row says why not", body = crate::inject::api::SendResponse),
        (status = 400, description = "The body is not a request (the field and position are named)", body = InvalidRequest),
        (status = 409, description = "A request with this Idempotency-Key is being served", body = super::types::ApiError),
        (status = 422, description = "Fields in error (each named); nothing was queued", body = InvalidRequest),
        (status = 429, description = "The queue is at its limit (Retry-After); nothing was queued", body = super::types::ApiError),
        (status = 503, description = "The node drains or its spool cannot take mail (Retry-After); nothing was queued", body = super::types::ApiError)))]
pub(super) async fn send(State(s): State<InjectState>, req: Request) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let inj = &s.0;
    let (request, raw) = match body::<SendRequest>(req, inj.max_request_size()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let held = match &key {
        None => None,
        Some(k) if k.is_empty() || k.len() > 255 => {
            return super::error(
                StatusCode::BAD_REQUEST,
                "an Idempotency-Key is 1 to 255 bytes",
            );
        }
        Some(k) => match inj.idempotency().begin(k, &raw, inj.now()) {
            Begin::Fresh(f) => Some(f),
            Begin::Replay(answer) => {
                let mut r = (StatusCode::ACCEPTED, Json(answer)).into_response();
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return r;
            }
            Begin::Mismatch => {
                return invalid(vec![FieldError::new(
                    "Idempotency-Key",
                    "already used with a different request",
                )]);
            }
            Begin::Busy => {
                return super::error(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is being served",
                );
            }
        },
    };
    let answer = match inj.send(request, client).await {
        Ok(a) => a,
        Err(e) => return inject_error(e),
    };
    if let Some(f) = held
        && let Err(e) = inj.idempotency().finish(f, &answer, inj.now()).await
    {
        tracing::warn!(error = %e, "cannot keep the Idempotency-Key's answer; a retry would queue again");
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

#[utoipa::path(operation_id = "inject_put_template", put, path = "/v1/templates/{name}", tag = "inject", request_body = TemplateContent,
    params(("name" = String, Path, description = "Letters, digits, '.', '_', '-'")),
    responses(
        (status = 201, description = "Stored durably as the next version", body = super::types::TemplateStored),
        (status = 422, description = "It does not compile (line and column named)", body = InvalidRequest),
        (status = 503, description = "The spool cannot keep it now", body = super::types::ApiError)))]
pub(super) async fn put_template(
    State(s): State<InjectState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (content, _) = match body::<TemplateContent>(req, s.0.max_request_size()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = s.0.now();
    match s.0.templates().put(&name, content, now).await {
        Ok(version) => {
            let stored = super::types::TemplateStored { name, version };
            (StatusCode::CREATED, Json(stored)).into_response()
        }
        Err(TemplateError::Invalid(errors)) => invalid(errors),
        Err(e @ TemplateError::NotFound(_)) => super::error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ TemplateError::Spool(_)) => {
            super::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

#[utoipa::path(operation_id = "inject_list_templates", get, path = "/v1/templates", tag = "inject", responses((status = 200, description = "Every template's name", body = Vec<String>)))]
pub(super) async fn list_templates(State(s): State<InjectState>) -> Json<Vec<String>> {
    Json(s.0.templates().names())
}

#[utoipa::path(operation_id = "inject_get_template", get, path = "/v1/templates/{name}", tag = "inject",
    params(("name" = String, Path, description = "The template")),
    responses((status = 200, description = "Its versions, oldest first", body = TemplateInfo), (status = 404, description = "No such template", body = super::types::ApiError)))]
pub(super) async fn get_template(
    State(s): State<InjectState>,
    Path(name): Path<String>,
) -> Response {
    match s.0.templates().get(&name) {
        Some(t) => Json(t).into_response(),
        None => super::error(
            StatusCode::NOT_FOUND,
            &format!("no template is named {name:?}"),
        ),
    }
}

#[utoipa::path(operation_id = "inject_preview", post, path = "/v1/templates/{name}/preview", tag = "inject", request_body = PreviewRequest,
    params(("name" = String, Path, description = "The template")),
    responses((status = 200, description = "What it renders to with these variables, or its errors (line and column); nothing is sent", body = Preview), (status = 404, description = "No such template or version", body = super::types::ApiError)))]
pub(super) async fn preview(
    State(s): State<InjectState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (p, _) = match body::<PreviewRequest>(req, s.0.max_request_size()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let compiled = match s.0.templates().compiled(&name, p.version) {
        Ok((c, _)) => c,
        Err(TemplateError::Invalid(errors)) => {
            return Json(Preview {
                errors,
                ..Preview::default()
            })
            .into_response();
        }
        Err(e) => return super::error(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let rendered =
        tokio::task::spawn_blocking(move || compiled.render(&p.variables, &mut None)).await;
    let preview = match rendered {
        Ok(Ok(r)) => Preview {
            subject: r.subject,
            html: r.html,
            text: r.text,
            errors: Vec::new(),
        },
        Ok(Err(errors)) => Preview {
            errors,
            ..Preview::default()
        },
        Err(e) => return super::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    Json(preview).into_response()
}
