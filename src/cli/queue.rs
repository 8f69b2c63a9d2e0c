//! `tern queue ...`: the queue seen through the running daemon (`summary`
//! falls back to reading the spool when the daemon is down): a summary,
//! breakdowns by domain, site, source, pool, tenant or priority, the
//! messages a filter selects, and one message in full. Tables by default,
//! `--json` for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Ctx;
use crate::views::human_bytes;

use clap::Subcommand;
use queue::SpoolSnapshot;

use super::control::FilterArgs;
use super::{emit, load_or_report};
use crate::admin::client::{CallError, get};
use crate::admin::types::{MessageDetail, MessagePage, QueueBreakdown, QueueSummary};
use crate::config;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Count queued messages and recipients, in total and per recipient
    /// domain: from the running daemon, else by reading the spool
    /// directly (works with the daemon stopped).
    Summary {
        /// The configuration file (for the admin address and the spool).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
        /// Show at most this many domains (those with the most recipients).
        #[arg(long, default_value_t = 50)]
        top: usize,
    },
    /// The queue by domain, site, pool, tenant or priority (all queued
    /// mail), or by source (the mail at the egress paths now); sites and
    /// sources show open connections and messages sent in the last minute.
    By {
        /// domain, site, source, pool, tenant or priority.
        dimension: String,
        /// At most this many rows (most recipients first).
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// List the queued messages a filter selects, a page at a time.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this queue id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One message: envelope, each recipient's state, attempts and last
    /// reply; with --body, its stored text too.
    Inspect {
        /// The queue id.
        id: String,
        /// Print the stored message as well.
        #[arg(long)]
        body: bool,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
}

/// Runs a `tern queue` command.
pub fn main(cmd: QueueCommand, ctx: &Ctx) -> ExitCode {
    match cmd {
        QueueCommand::Summary { config, top } => summary(&config, top, ctx),
        QueueCommand::By {
            dimension,
            top,
            config,
        } => call(
            &config,
            &format!("/v1/queue/by/{dimension}?top={top}"),
            ctx,
            by_table,
        ),
        QueueCommand::List {
            filter,
            after,
            limit,
        } => {
            let mut query = filter.query();
            query.push_str(&format!("&limit={limit}"));
            if let Some(a) = after {
                query.push_str(&format!("&after={a}"));
            }
            call(
                &filter.config,
                &format!("/v1/queue/messages?{query}"),
                ctx,
                list_table,
            )
        }
        QueueCommand::Inspect { id, body, config } => call(
            &config,
            &format!("/v1/queue/messages/{id}?body={body}"),
            ctx,
            detail_text,
        ),
    }
}

/// GETs `path` from the running daemon and prints it.
fn call<T>(config: &Path, path: &str, ctx: &Ctx, human: fn(&T) -> String) -> ExitCode
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let Some(admin) = ctx.admin(config) else {
        return ExitCode::FAILURE;
    };
    match get::<T>(&admin, path) {
        Ok(v) => emit(ctx.json, &v, human),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

fn by_table(b: &QueueBreakdown) -> String {
    if b.by == "site" {
        return site_table(b);
    }
    let mut out = format!(
        "{:>11} {:>9} {:>9} {:>6} {:>9}  {}\n",
        "recipients", "messages", "oldest", "conns", "sent/min", b.by
    );
    for r in &b.rows {
        out.push_str(&format!(
            "{:>11} {:>9} {:>8}s {:>6} {:>9}  {}{}\n",
            r.recipients,
            r.messages,
            r.oldest_secs,
            r.connections,
            r.sent_last_minute,
            r.key,
            r.last_error
                .as_deref()
                .map(|e| format!("  last: {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// Sites, with their mail scheduled, ready and being sent, and why it
/// waits.
fn site_table(b: &QueueBreakdown) -> String {
    let mut out = format!(
        "{:>11} {:>9} {:>9} {:>9} {:>6} {:>7} {:>6} {:>9}  site\n",
        "recipients", "messages", "oldest", "scheduled", "ready", "sending", "conns", "sent/min"
    );
    for r in &b.rows {
        let note = match (&r.held, &r.last_error) {
            (Some(h), _) => format!("  waiting: {h}"),
            (None, Some(e)) => format!("  last: {e}"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "{:>11} {:>9} {:>8}s {:>9} {:>6} {:>7} {:>6} {:>9}  {}{}\n",
            r.recipients,
            r.messages,
            r.oldest_secs,
            r.scheduled,
            r.ready,
            r.sending,
            r.connections,
            r.sent_last_minute,
            r.key,
            note
        ));
    }
    out
}

fn list_table(p: &MessagePage) -> String {
    let mut out = format!(
        "{:<18} {:<20} {:>5} {:<8} {:<8} {:<22} last reply\n",
        "queue id", "arrival", "wait", "state", "priority", "sender"
    );
    for m in &p.messages {
        out.push_str(&format!(
            "{:<18} {:<20} {:>5} {:<8} {:<8} {:<22} {}\n",
            m.id,
            m.arrival,
            m.pending + m.held,
            m.state,
            m.priority,
            m.sender,
            m.last_reply.as_deref().unwrap_or("-")
        ));
    }
    match &p.next {
        Some(n) => out.push_str(&format!("more: --after {n}\n")),
        None => out.push_str("(end of the queue)\n"),
    }
    out
}

fn detail_text(d: &MessageDetail) -> String {
    let m = &d.message;
    let mut out = format!(
        "{}: from <{}>, queued {}, {} bytes, priority {}, pool {}, tenant {}{}\n",
        m.id,
        m.sender,
        m.arrival,
        m.size,
        m.priority,
        m.pool.as_deref().unwrap_or("(default)"),
        m.tenant.as_deref().unwrap_or("-"),
        if m.in_flight {
            ", being delivered now"
        } else {
            ""
        }
    );
    if let Some(id) = &d.message_id {
        out.push_str(&format!("Message-ID: {id}\n"));
    }
    if let Some(c) = &d.client {
        out.push_str(&format!(
            "from client {c}{}\n",
            d.auth_user
                .as_deref()
                .map(|u| format!(", user {u}"))
                .unwrap_or_default()
        ));
    }
    for r in &d.recipients {
        out.push_str(&format!(
            "  {:<9} {:>3} attempt(s)  {}{}{}\n",
            r.state,
            r.attempts,
            r.address,
            r.next_attempt
                .as_deref()
                .map(|t| format!("  next {t}"))
                .unwrap_or_default(),
            r.last_reply
                .as_deref()
                .map(|t| format!("  last: {t}"))
                .unwrap_or_default()
        ));
    }
    if let Some(b) = &d.body {
        out.push('\n');
        out.push_str(b);
    }
    out
}

fn summary(path: &Path, top: usize, ctx: &Ctx) -> ExitCode {
    let Some(admin) = ctx.admin(path) else {
        return ExitCode::FAILURE;
    };
    // The running daemon's own view first; the spool files otherwise.
    match get::<QueueSummary>(&admin, &format!("/v1/queue/summary?top={top}")) {
        Ok(s) => return emit(ctx.json, &s, live_summary),
        Err(CallError::Down(_)) => {}
        Err(e) => eprintln!("note: {e}; reading the spool instead"),
    }
    // The daemon is down: the spool's files, where the whole config says.
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let spool = &config.queue.path;
    if !spool.exists() && ctx.json {
        let empty = QueueSummary {
            messages: 0,
            recipients: 0,
            held: 0,
            body_bytes: 0,
            disk_bytes: 0,
            domains: Vec::new(),
            recovering: false,
        };
        return emit(true, &empty, |_| String::new());
    }
    if !spool.exists() {
        out!("No spool at {}: nothing has been queued.", spool.display());
        return ExitCode::SUCCESS;
    }
    let (snapshot, report) = match SpoolSnapshot::read(spool) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tern: cannot read the spool at {}: {e}", spool.display());
            return ExitCode::FAILURE;
        }
    };
    if report.corrupt_records > 0 || report.torn_tail_bytes > 0 {
        eprintln!(
            "note: {} corrupt record(s), {} byte(s) of unfinished writes seen (normal while the daemon writes)",
            report.corrupt_records, report.torn_tail_bytes
        );
    }
    if ctx.json {
        return emit(true, &spool_as_summary(&snapshot, top), |_| String::new());
    }
    out_text!("{}", spool_summary(spool, &snapshot, top));
    ExitCode::SUCCESS
}

/// The spool files' view in the API's shape (for `--json`).
fn spool_as_summary(snap: &SpoolSnapshot, top: usize) -> QueueSummary {
    let s = snap.stats();
    QueueSummary {
        messages: s.messages,
        recipients: s.recipients,
        held: s.held,
        body_bytes: s.body_bytes,
        disk_bytes: s.disk_bytes,
        domains: (snap.domains().iter().take(top))
            .map(|d| crate::admin::types::DomainRow {
                domain: d.domain.clone(),
                messages: d.messages,
                recipients: d.recipients,
            })
            .collect(),
        recovering: false,
    }
}

fn spool_summary(spool: &Path, snap: &SpoolSnapshot, top: usize) -> String {
    let s = snap.stats();
    let mut out = format!(
        "Queue at {}: {} message(s), {} recipient(s), {} of bodies ({} segment(s), {} on disk)\n",
        spool.display(),
        s.messages,
        s.recipients,
        human_bytes(s.body_bytes),
        s.segments,
        human_bytes(s.disk_bytes),
    );
    let domains = snap.domains();
    let rows = domains
        .iter()
        .take(top)
        .map(|d| (d.recipients, d.messages, d.domain.as_str()));
    out.push_str(&domain_table(rows));
    if domains.len() > top {
        out.push_str(&format!("... and {} more domain(s)\n", domains.len() - top));
    }
    out
}

fn live_summary(s: &QueueSummary) -> String {
    let mut out = format!(
        "Queue (from the running daemon): {} message(s), {} recipient(s), {} of bodies ({} on disk)\n",
        s.messages,
        s.recipients,
        human_bytes(s.body_bytes),
        human_bytes(s.disk_bytes),
    );
    if s.held > 0 {
        out.push_str(&format!(
            "{} recipient(s) held by an operator: `tern release` lets them go\n",
            s.held
        ));
    }
    if s.recovering {
        out.push_str("The spool is being recovered after a restart: mail queued before it is counted as it comes back, not all of it yet\n");
    }
    let rows = s
        .domains
        .iter()
        .map(|d| (d.recipients, d.messages, d.domain.as_str()));
    out.push_str(&domain_table(rows));
    out
}

/// Recipients, messages and domain, one line each, under a heading.
fn domain_table<'a>(rows: impl Iterator<Item = (u64, u64, &'a str)>) -> String {
    let mut out = String::new();
    for (recipients, messages, domain) in rows {
        if out.is_empty() {
            out = format!("\n{:>11} {:>10}  domain\n", "recipients", "messages");
        }
        out.push_str(&format!("{recipients:>11} {messages:>10}  {domain}\n"));
    }
    out
}
