//! Who may do what on the admin API: the full token (`[admin] token`)
//! may do everything; the read-only token (`[admin] read_token`) and a
//! browser session opened with either token at `/login` may only read
//! (GET); the fleet's token may hand mail over (`/v1/cluster/...`).
//! Sessions live in memory (a restart logs browsers out), for 12 hours,
//! in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::AdminState;

/// How long a browser session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
const COOKIE: &str = "tern_session";

/// The browser sessions: id, and when each ends.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Instant>>);

impl Sessions {
    fn open(&self) -> String {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 32];
        let _ = ring::rand::SystemRandom::new().fill(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        m.retain(|_, end| *end > now);
        m.insert(id.clone(), now + SESSION);
        id
    }

    fn valid(&self, id: &str) -> bool {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).is_some_and(|end| *end > Instant::now())
    }
}

/// The bearer token a request carries.
pub(super) fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn cookie(req: &Request) -> Option<&str> {
    let all = req.headers().get(header::COOKIE)?.to_str().ok()?;
    all.split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The middleware: lets a request through or says why not.
pub(super) async fn auth(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let given = bearer(&req);
    let peers = path.starts_with("/v1/cluster/");
    let peer = peers && given.is_some() && given == s.fleet_token.as_deref();
    if s.token.is_none() {
        // No admin token (loopback only): open, but the peers' endpoints
        // still want the fleet's token when there is one.
        if peers && s.fleet_token.is_some() && !peer {
            return super::error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
        return next.run(req).await;
    }
    if path == "/login" {
        return next.run(req).await;
    }
    // A trace shows addresses as they pass: only the full token sees it.
    let reading = matches!(*req.method(), Method::GET | Method::HEAD) && path != "/v1/trace";
    let full = given.is_some() && given == s.token.as_deref();
    let read = (given.is_some() && given == s.read_token.as_deref())
        || cookie(&req).is_some_and(|c| s.sessions.valid(c));
    if full || peer || (read && reading) {
        return next.run(req).await;
    }
    if read {
        return super::error(
            StatusCode::FORBIDDEN,
            "a read-only token or session cannot change anything or trace sessions",
        );
    }
    if path == "/status" && reading {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    }
    super::error(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
}

const FORM: &str = "<!doctype html><meta charset=utf-8><title>Tern: log in</title>\
<style>body{font:15px system-ui;margin:3em auto;max-width:22em}input{width:100%;padding:.4em;margin:.3em 0}</style>\
<h1>Tern</h1><form method=post action=/login><label>Token <input type=password name=token autofocus></label>\
<input type=submit value='Log in'></form>";

/// `GET /login`: the form.
pub(super) async fn form() -> Html<&'static str> {
    Html(FORM)
}

/// `POST /login` (`token=...`, form-encoded): a read session in a
/// cookie, then the status page.
pub(super) async fn login(State(s): State<Arc<AdminState>>, body: String) -> Response {
    let token = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
        .unwrap_or_default();
    let known = [s.token.as_deref(), s.read_token.as_deref()];
    if token.is_empty() || !known.contains(&Some(token.as_str())) {
        return (StatusCode::UNAUTHORIZED, Html(FORM)).into_response();
    }
    let id = s.sessions.open();
    let secure = if s.https { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION.as_secs()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/status".into()),
        ],
    )
        .into_response()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); a
/// malformed value is empty.
fn percent_decode(s: &str) -> String {
    crate::config::values::percent_decode(&s.replace('+', " ")).unwrap_or_default()
}
