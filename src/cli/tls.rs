//! `tern tls show DOMAIN` and `tern tls report [--day D]`: the TLS policy
//! mail to a domain is held to now, and sending a day's TLS reports now,
//! through the running daemon (it holds the policy cache and the counts).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::Ctx;
use crate::admin::client::{get, send};
use crate::admin::tls::{ReportsSent, TlsView};
use crate::config;

/// `tern tls ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The TLS policy mail to DOMAIN is held to now (the configured
    /// `tls`, or its MTA-STS policy) and the MX hosts it leaves.
    Show {
        /// The recipient domain.
        domain: String,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// Send the TLS reports (RFC 8460) of a day now.
    Report {
        /// The day, YYYY-MM-DD (default: yesterday, UTC; today sends the
        /// counts so far).
        #[arg(long)]
        day: Option<String>,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
}

/// Runs a `tern tls` command.
pub fn main(command: TlsCommand, ctx: &Ctx) -> ExitCode {
    let result = match command {
        TlsCommand::Show { domain, config } => show(&config, &domain, ctx),
        TlsCommand::Report { day, config } => report(&config, day.as_deref(), ctx),
    };
    result.unwrap_or_else(|e| {
        eprintln!("tern: {e}");
        ExitCode::FAILURE
    })
}

fn show(config: &Path, domain: &str, ctx: &Ctx) -> Result<ExitCode, String> {
    let a = ctx.endpoint(config)?;
    if !domain.is_ascii() || !crate::config::names::is_hostname(domain) {
        return Err(format!(
            "`{domain}` is not a domain name (A-labels for IDNs)"
        ));
    }
    let path = format!("/v1/tls/{domain}");
    let v: TlsView = get(&a, &path).map_err(|e| e.to_string())?;
    if ctx.json {
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    out!("domain      {}", v.domain);
    match (&v.tls_policy, &v.error) {
        (Some(p), _) => out!("tls policy  {p}"),
        (None, Some(e)) => out!("not routable now: {e}"),
        (None, None) => {}
    }
    if !v.hosts.is_empty() {
        out!("mx hosts    {}", v.hosts.join(", "));
    }
    if let Some(s) = &v.mta_sts {
        out!(
            "mta-sts     mode {} (id {}), mx {}, fetched {}, expires {}",
            s.mode,
            s.id,
            s.mx.join(" "),
            s.fetched,
            s.expires
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report(config: &Path, day: Option<&str>, ctx: &Ctx) -> Result<ExitCode, String> {
    let a = ctx.endpoint(config)?;
    let path = match day {
        Some(d) if crate::clock::parse_date(d).is_some() => format!("/v1/tls/reports?day={d}"),
        Some(d) => return Err(format!("--day: `{d}` is not a YYYY-MM-DD date")),
        None => "/v1/tls/reports".to_owned(),
    };
    let r: ReportsSent = send(&a, "POST", &path, &()).map_err(|e| e.to_string())?;
    if ctx.json {
        out!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if r.reports.is_empty() {
        out!("{}: no session under a published policy was counted", r.day);
    }
    for s in &r.reports {
        out!("{} {:<30} {:<10} {}", r.day, s.domain, s.result, s.detail);
    }
    Ok(ExitCode::SUCCESS)
}
