//! `GET /v1/tls/{domain}`: the TLS policy mail to a domain is held to now
//! (the configured `tls`, or the domain's MTA-STS policy, with the MX
//! hosts it leaves), and `POST /v1/tls/reports`: send the TLS reports of
//! a day now (the daemon sends each finished day by itself).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::tlspolicy::send::Sent;

/// A domain's MTA-STS policy as cached.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StsView {
    /// `enforce` or `testing`.
    pub mode: String,
    /// The `_mta-sts` record's id it was fetched under.
    pub id: String,
    /// The MX patterns.
    pub mx: Vec<String>,
    /// `max_age` as published, in seconds.
    pub max_age: u64,
    /// When it was fetched (RFC 3339).
    pub fetched: String,
    /// When it stops applying unless refreshed (RFC 3339).
    pub expires: String,
}

/// `GET /v1/tls/{domain}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TlsView {
    /// The domain.
    pub domain: String,
    /// The policy its mail is held to: `off`, `opportunistic`,
    /// `required`, `verify`, `mta-sts` or `mta-sts-testing`.
    pub tls_policy: Option<String>,
    /// The MX hosts mail may go to, in order.
    pub hosts: Vec<String>,
    /// Its MTA-STS policy, if one is in force.
    pub mta_sts: Option<StsView>,
    /// Why its mail cannot go now (a policy no MX host satisfies, DNS).
    pub error: Option<String>,
}

/// One domain's report in a [`ReportsSent`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportSent {
    /// The policy domain.
    pub domain: String,
    /// `sent`, `not_wanted` (no `_smtp._tls` record) or `later`.
    pub result: String,
    /// Addresses it went to, or why not.
    pub detail: String,
}

/// `POST /v1/tls/reports`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportsSent {
    /// The day reported.
    pub day: String,
    /// Per domain counted that day.
    pub reports: Vec<ReportSent>,
}

#[utoipa::path(operation_id = "tls_policy", get, path = "/v1/tls/{domain}", tag = "control",
    params(("domain" = String, Path, description = "The recipient domain")),
    responses((status = 200, description = "The policy in force", body = TlsView)))]
pub(super) async fn policy(
    State(s): State<Arc<AdminState>>,
    Path(domain): Path<String>,
) -> Json<TlsView> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let route = s.delivery.tls_route(&domain).await;
    let sts = s.delivery.tls_policies().mta_sts(&domain).map(|c| StsView {
        mode: c.policy.mode.as_str().into(),
        id: c.id.clone(),
        mx: c.policy.mx.clone(),
        max_age: c.policy.max_age,
        fetched: crate::clock::rfc3339(secs(c.fetched)),
        expires: crate::clock::rfc3339(secs(c.expires)),
    });
    let (tls_policy, hosts, error) = match route {
        Ok(r) => (
            Some(r.policy.label(r.tls).to_owned()),
            r.hosts.iter().map(|h| h.name.clone()).collect(),
            None,
        ),
        Err(e) => (None, Vec::new(), Some(e.text().to_owned())),
    };
    Json(TlsView {
        domain,
        tls_policy,
        hosts,
        mta_sts: sts,
        error,
    })
}

fn secs(t: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)
}

#[derive(Deserialize)]
pub(super) struct Day {
    /// `YYYY-MM-DD` (default: yesterday, UTC).
    day: Option<String>,
}

#[utoipa::path(operation_id = "tls_send", post, path = "/v1/tls/reports", tag = "control",
    params(("day" = Option<String>, Query, description = "The day to report, YYYY-MM-DD (default yesterday, UTC); today's counts so far may be sent")),
    responses((status = 200, description = "What became of each domain's report", body = ReportsSent),
        (status = 400, description = "Not a date", body = super::types::ApiError)))]
pub(super) async fn send(State(s): State<Arc<AdminState>>, Query(q): Query<Day>) -> Response {
    let today = crate::clock::day_number(std::time::SystemTime::now());
    let day = match q.day.as_deref() {
        None => today - 1,
        Some(d) => match crate::clock::parse_date(d) {
            Some(n) => n,
            None => {
                return super::error(
                    StatusCode::BAD_REQUEST,
                    &format!("day: `{d}` is not a YYYY-MM-DD date"),
                );
            }
        },
    };
    let Some(sender) = &s.tls_reports else {
        return super::error(
            StatusCode::NOT_FOUND,
            "TLS reports are not kept by this daemon",
        );
    };
    let reports = (sender.send_day(day).await)
        .into_iter()
        .map(|(domain, r)| {
            let (result, detail) = match r {
                Sent::Delivered(n) => ("sent", format!("{n} address(es)")),
                Sent::NotWanted => ("not_wanted", "no _smtp._tls record".to_owned()),
                Sent::Later(why) => ("later", why),
            };
            ReportSent {
                domain,
                result: result.into(),
                detail,
            }
        })
        .collect();
    let day = crate::clock::date(day);
    Json(ReportsSent { day, reports }).into_response()
}
