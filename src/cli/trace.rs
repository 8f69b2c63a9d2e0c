//! `tern trace`: the SMTP dialogues of the running daemon's sessions as
//! they happen (`GET /v1/trace`), like `kcli trace-smtp-client`: outbound
//! connections for one domain or from one source, inbound sessions from
//! one client. One line per command or reply; `--json` prints the API's
//! objects as they come. Message content is never shown, nor credentials.

use std::process::ExitCode;

use super::Ctx;
use super::control::encode;
use crate::admin::client::stream_lines;
use crate::trace::TraceEvent;

/// `tern trace` options: every criterion given must match.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Outbound connections opened for mail to this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Outbound connections from this source.
    #[arg(long)]
    source: Option<String>,
    /// Inbound sessions from this client IP address.
    #[arg(long)]
    client: Option<std::net::IpAddr>,
    /// Stop after this long, such as "30s" (at most 1h).
    #[arg(long = "for", default_value = "10m")]
    duration: crate::config::values::Duration,
    /// Stop after this many lines.
    #[arg(long)]
    lines: Option<u64>,
    /// The configuration file (for the admin address and token).
    #[arg(long, short, default_value_os_t = crate::config::default_path())]
    config: std::path::PathBuf,
}

/// Runs `tern trace`.
pub fn run(args: &TraceArgs, ctx: &Ctx) -> ExitCode {
    let Some(admin) = ctx.admin(&args.config) else {
        return ExitCode::FAILURE;
    };
    let mut query = vec![format!("secs={}", args.duration.get().as_secs().max(1))];
    let criteria = [
        ("domain", args.domain.clone()),
        ("source", args.source.clone()),
        ("client", args.client.map(|c| c.to_string())),
    ];
    for (k, v) in criteria {
        if let Some(v) = v {
            query.push(format!("{k}={}", encode(&v)));
        }
    }
    let path = format!("/v1/trace?{}", query.join("&"));
    let mut left = args.lines.unwrap_or(u64::MAX);
    let shown = stream_lines(&admin, &path, |line| {
        match ctx.json {
            true => out!("{line}"),
            false => out!("{}", text(line)),
        }
        left -= 1;
        left > 0
    });
    match shown {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One event as a line of text: time, session, peer, direction, line.
fn text(line: &str) -> String {
    let Ok(e) = serde_json::from_str::<TraceEvent>(line) else {
        return format!("(trace) {line}");
    };
    let time = e.at.get(11..23).unwrap_or(&e.at);
    let side = match e.side {
        crate::trace::Side::In => "in",
        crate::trace::Side::Out => "out",
    };
    let who = match (&e.host, &e.source) {
        (Some(h), Some(s)) => format!("{s} -> {h}[{}]", e.peer),
        _ => e.peer.clone(),
    };
    format!("{time} {side}#{} {who} {} {}", e.session, e.dir, e.text)
}
