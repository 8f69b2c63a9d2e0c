//! `tern suspend` and `tern resume`: stop and restart mail for a target
//! through the running daemon's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Ctx, emit};

use clap::Args;

use crate::admin::client::send;
use crate::admin::types::{Action, CancelAction, Cancelled, Suspend};
use crate::config;
use crate::shaping::rules::Target;

/// Which target: exactly one, or --source with --site for a path.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// A source (with --site: the path from it to that site).
    #[arg(long)]
    source: Option<String>,
    /// A site: its comma-separated MX hosts, as `tern shaping actions` shows.
    #[arg(long)]
    site: Option<String>,
    /// A provider of `[shaping]`.
    #[arg(long)]
    provider: Option<String>,
    /// A recipient domain.
    #[arg(long)]
    domain: Option<String>,
    /// A pool.
    #[arg(long)]
    pool: Option<String>,
    /// A tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The configuration file (for the admin address and token).
    #[arg(long, short, default_value_os_t = config::default_path())]
    pub config: PathBuf,
}

impl TargetArgs {
    /// The target named, or `None` when not exactly one is.
    pub fn target(&self) -> Option<Target> {
        let named = [
            &self.site,
            &self.provider,
            &self.domain,
            &self.pool,
            &self.tenant,
        ];
        let others = named.iter().filter(|n| n.is_some()).count();
        match (&self.source, &self.site) {
            (Some(s), Some(x)) if others == 1 => Some(Target::Path(s.clone(), x.clone())),
            (Some(s), None) if others == 0 => Some(Target::Source(s.clone())),
            (None, _) if others == 1 => Some(if let Some(x) = &self.site {
                Target::Site(x.clone())
            } else if let Some(p) = &self.provider {
                Target::Provider(p.clone())
            } else if let Some(d) = &self.domain {
                Target::Domain(d.to_ascii_lowercase())
            } else if let Some(p) = &self.pool {
                Target::Pool(p.clone())
            } else {
                Target::Tenant(self.tenant.clone().unwrap_or_default())
            }),
            _ => None,
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "tern: name one target: --source, --site, --provider, --domain, --pool, --tenant, or --source with --site"
    );
    ExitCode::from(2)
}

/// `tern suspend TARGET --for D --reason R`.
pub fn suspend(t: &TargetArgs, duration: &str, reason: &str, ctx: &Ctx) -> ExitCode {
    let Some(target) = t.target() else {
        return usage();
    };
    let Some(admin) = ctx.admin(&t.config) else {
        return ExitCode::FAILURE;
    };
    let req = Suspend {
        target,
        duration: duration.into(),
        reason: reason.into(),
    };
    match send::<Action, _>(&admin, "POST", "/v1/suspensions", &req) {
        Ok(a) => emit(ctx.json, &a, |a| {
            format!("{}: suspended until {} ({})\n", a.target, a.end, a.reply)
        }),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern retry [--domain D]`.
pub fn retry(
    config: &std::path::Path,
    (domain, id): (Option<String>, Option<String>),
    ctx: &Ctx,
) -> ExitCode {
    use crate::admin::types::{Retried, Retry};
    let Some(admin) = ctx.admin(config) else {
        return ExitCode::FAILURE;
    };
    let req = Retry { domain, id };
    match send::<Retried, _>(&admin, "POST", "/v1/retry", &req) {
        Ok(r) => emit(ctx.json, &r, |r| {
            format!(
                "{} message(s), {} recipient(s) due now; {} dead-site pause(s) lifted\n",
                r.messages, r.recipients, r.pauses
            )
        }),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern reload`: the running daemon reads its config file again.
pub fn reload(config: &std::path::Path, ctx: &Ctx) -> ExitCode {
    use crate::admin::client::CallError;
    use crate::admin::types::Reloaded;
    let Some(admin) = ctx.admin(config) else {
        return ExitCode::FAILURE;
    };
    match send::<Reloaded, _>(&admin, "POST", "/v1/reload", &()) {
        Ok(r) => emit(ctx.json, &r, |r| {
            let mut text = format!("config {} in force ({})\n", r.id, r.applied.join(", "));
            if !r.needs_restart.is_empty() {
                let names = r.needs_restart.join(", ");
                text.push_str(&format!("changed but needing a restart: {names}\n"));
            }
            text
        }),
        Err(CallError::Status {
            status: 422,
            message,
        }) => {
            eprintln!("tern: reload refused, the running config stays:\n{message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern resume TARGET`.
pub fn resume(t: &TargetArgs, ctx: &Ctx) -> ExitCode {
    let Some(target) = t.target() else {
        return usage();
    };
    let Some(admin) = ctx.admin(&t.config) else {
        return ExitCode::FAILURE;
    };
    let req = CancelAction {
        target: target.clone(),
    };
    match send::<Cancelled, _>(&admin, "DELETE", "/v1/suspensions", &req) {
        Ok(c) => emit(ctx.json, &c, |c| match c.cancelled {
            true => format!("{target}: resumed\n"),
            false => format!("{target}: was not suspended\n"),
        }),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern log-level [FILTER]`: the daemon's diagnostic log filter.
pub fn log_level(config: &std::path::Path, filter: Option<String>, ctx: &Ctx) -> ExitCode {
    use crate::admin::client::get;
    use crate::admin::types::LogLevel;
    let Some(admin) = ctx.admin(config) else {
        return ExitCode::FAILURE;
    };
    let answer = match filter {
        Some(filter) => send::<LogLevel, _>(&admin, "PUT", "/v1/log-level", &LogLevel { filter }),
        None => get::<LogLevel>(&admin, "/v1/log-level"),
    };
    match answer {
        Ok(l) => emit(ctx.json, &l, |l| format!("log filter: {}\n", l.filter)),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}
