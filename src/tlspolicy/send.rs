//! Sending TLS reports (RFC 8460 3 and 5): once a UTC day is over, each
//! domain counted that day gets its report (JSON, gzip) at the addresses
//! of its `_smtp._tls` TXT record: `mailto:` ones as a `multipart/report`
//! message queued through Tern's own intake (DKIM-signed and delivered
//! like any mail), `https:` ones by POST. A domain without a record is
//! forgotten; one whose record cannot be read now is tried again at the
//! next round. Counts are flushed to the spool each round.
//!
//! It owns the report's form and its delivery; never the counting.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::{BodyPart, MimePart};
use serde_json::json;

use super::https::Https;
use super::report::{DayCounts, Reports};
use crate::dns::resolver::{LookupError, Resolver};
use crate::intake::{Intake, Origin, Submission, SubmittedRecipient};

/// How often the sender looks for finished days (and flushes counts).
const ROUND: Duration = Duration::from_secs(300);

/// Who the reports say they come from.
#[derive(Debug, Clone)]
pub struct Submitter {
    /// The From address.
    pub from: String,
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact: Option<String>,
    /// This MTA's host name (the submitter).
    pub hostname: String,
}

/// What became of one domain's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Queued or posted to this many addresses.
    Delivered(usize),
    /// The domain asks for no reports (no usable `_smtp._tls` record).
    NotWanted,
    /// Not now (DNS failing, every address failing): kept for later.
    Later(String),
}

/// The daily sender.
pub struct Sender {
    reports: Arc<Reports>,
    resolver: Arc<dyn Resolver>,
    https: Https,
    intake: Intake,
    who: Submitter,
}

impl Sender {
    /// A sender of `reports`' days.
    pub fn new(
        reports: Arc<Reports>,
        resolver: Arc<dyn Resolver>,
        https: Https,
        intake: Intake,
        who: Submitter,
    ) -> Self {
        Self {
            reports,
            resolver,
            https,
            intake,
            who,
        }
    }

    /// Every round: flushes the counts and, when `send` is on, reports the
    /// days that are over. Runs until the task is dropped.
    pub async fn run(self: Arc<Self>, send: bool) {
        loop {
            tokio::time::sleep(ROUND).await;
            self.reports.flush().await;
            if !send {
                continue;
            }
            let today = crate::clock::day_number(SystemTime::now());
            for (day, domain) in self.reports.before(today) {
                let r = self.send(day, &domain).await;
                tracing::info!(domain, day = %crate::clock::date(day), result = ?r, "TLS report");
            }
        }
    }

    /// Writes the counts to the spool now (at shutdown).
    pub async fn flush(&self) {
        self.reports.flush().await;
    }

    /// Reports `day` for every domain counted then, now (an operator's
    /// "send now"; the day may still be running).
    pub async fn send_day(&self, day: i64) -> Vec<(String, Sent)> {
        let mut out = Vec::new();
        for domain in self.reports.domains(day) {
            let r = self.send(day, &domain).await;
            out.push((domain, r));
        }
        out
    }

    /// Reports one domain's day; forgets the day unless it is for later.
    pub async fn send(&self, day: i64, domain: &str) -> Sent {
        let Some(counts) = self.reports.day(day, domain) else {
            return Sent::NotWanted;
        };
        let uris = match self.rua(domain).await {
            Ok(u) => u,
            Err(why) => return Sent::Later(why),
        };
        if uris.is_empty() {
            self.reports.forget(day, domain).await;
            return Sent::NotWanted;
        }
        let id = format!(
            "{}T00:00:00Z_{domain}_{}",
            crate::clock::date(day),
            self.who.hostname
        );
        let json = report_json(&self.who, day, &id, &counts);
        let gz = gzip(json.to_string().as_bytes());
        let (mut done, mut last) = (0, String::new());
        for uri in &uris {
            let r = match uri {
                ReportUri::Mail(to) => self.mail(domain, day, &id, to, &gz).await,
                ReportUri::Http(url) => self.post(url, &gz).await,
            };
            match r {
                Ok(()) => done += 1,
                Err(e) => last = e,
            }
        }
        if done == 0 {
            return Sent::Later(last);
        }
        self.reports.forget(day, domain).await;
        Sent::Delivered(done)
    }

    /// The report addresses of `domain`'s `_smtp._tls` record.
    async fn rua(&self, domain: &str) -> Result<Vec<ReportUri>, String> {
        let records = match self.resolver.txt(&format!("_smtp._tls.{domain}")).await {
            Ok(r) => r,
            Err(LookupError::NxDomain(_) | LookupError::NoRecords(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        let rpt: Vec<&String> = records
            .iter()
            .filter(|r| r.starts_with("v=TLSRPTv1"))
            .collect();
        Ok(match rpt.as_slice() {
            [one] => TlsRpt::parse(one.as_bytes())
                .map(|r| r.rua)
                .unwrap_or_default(),
            _ => Vec::new(),
        })
    }

    /// Queues the report as mail to `to`.
    async fn mail(
        &self,
        domain: &str,
        day: i64,
        id: &str,
        to: &str,
        gz: &[u8],
    ) -> Result<(), String> {
        let origin = Origin {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: self.who.hostname.clone(),
            esmtp: true,
            tls: false,
            user: None,
            http: false,
        };
        let (qid, mut data) = self.intake.begin(&origin, Some(to), gz.len() * 2 + 2048);
        let start = data.len();
        let begin = day * 86_400;
        let file = format!(
            "{}!{domain}!{begin}!{}.json.gz",
            self.who.hostname,
            begin + 86_399
        );
        let text = format!(
            "TLS report from {}\r\n\r\nReport domain: {domain}\r\nSubmitter: {}\r\nReport-ID: {id}\r\n",
            self.who.organization, self.who.hostname
        );
        let message = MessageBuilder::new()
            .from(self.who.from.as_str())
            .to(to)
            .subject(format!(
                "Report Domain: {domain} Submitter: {} Report-ID: <{id}>",
                self.who.hostname
            ))
            .message_id(format!("{qid}.tlsrpt@{}", self.who.hostname))
            .header("TLS-Report-Domain", HeaderType::Text(domain.into()))
            .header(
                "TLS-Report-Submitter",
                HeaderType::Text(self.who.hostname.as_str().into()),
            )
            .header("Auto-Submitted", HeaderType::Text("auto-generated".into()))
            .body(MimePart::new(
                ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
                BodyPart::Multipart(vec![
                    MimePart::new(ContentType::new("text/plain"), BodyPart::Text(text.into())),
                    MimePart::new(
                        ContentType::new("application/tlsrpt+gzip"),
                        BodyPart::Binary(gz.to_vec().into()),
                    )
                    .attachment(file),
                ]),
            ));
        message.write_to(&mut data).map_err(|e| e.to_string())?;
        let sub = Submission {
            id: qid,
            sender: self.who.from.clone(),
            recipients: vec![SubmittedRecipient {
                address: to.to_owned(),
                params: Default::default(),
            }],
            envid: None,
            ret: None,
            body_8bitmime: false,
            smtputf8: !to.is_ascii(),
            content_8bit: false,
            data,
            data_start: start,
            api: None,
        };
        self.intake
            .accept(sub, &origin)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// POSTs the report to an `https:` address.
    async fn post(&self, url: &str, gz: &[u8]) -> Result<(), String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url}: only https is used"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let body = Bytes::copy_from_slice(gz);
        (self
            .https
            .post(host, path, "application/tlsrpt+gzip", body)
            .await)
            .map_err(|e| e.to_string())
    }
}

/// The report (RFC 8460 4.4) of one domain's day.
pub fn report_json(who: &Submitter, day: i64, id: &str, c: &DayCounts) -> serde_json::Value {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs((day * 86_400).max(0) as u64);
    let end = start + Duration::from_secs(86_399);
    let details: Vec<serde_json::Value> = c
        .details
        .iter()
        .map(|(f, n)| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            v["failed-session-count"] = json!(n);
            v
        })
        .collect();
    let mut report = json!({
        "organization-name": who.organization,
        "date-range": {
            "start-datetime": crate::clock::rfc3339(start),
            "end-datetime": crate::clock::rfc3339(end),
        },
        "report-id": id,
        "policies": [{
            "policy": c.policy,
            "summary": {
                "total-successful-session-count": c.success,
                "total-failure-session-count": c.failure,
            },
            "failure-details": details,
        }],
    });
    if let Some(contact) = &who.contact {
        report["contact-info"] = json!(contact);
    }
    report
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        Compression::default(),
    );
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}
