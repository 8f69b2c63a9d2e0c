//! `tern purge`, `tern hold`, `tern release`, `tern bounce` and
//! `tern rebind`: act on the queued mail a
//! filter selects, through the running daemon, following the background
//! job to its end.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Ctx;

use clap::Args;

use super::emit;
use crate::admin::client::{get, send};
use crate::admin::types::{
    Bounce, Cancelled, Filter, JobProgress, JobStarted, Rebind, RebindMade, RebindRule,
};
use crate::config::{self, AdminConfig};
use crate::delivery::filter::MessageState;

/// Which queued messages: every criterion given must match.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Messages with a recipient waiting at this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Messages from this envelope sender.
    #[arg(long)]
    sender: Option<String>,
    /// Messages of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Messages of this pool.
    #[arg(long)]
    pool: Option<String>,
    /// One message, by its queue id (as `tern queue list` shows it).
    #[arg(long)]
    id: Option<String>,
    /// Messages with a recipient waiting at a domain routed to this site
    /// (as `tern queue by site` names it).
    #[arg(long)]
    site: Option<String>,
    /// Messages with a recipient waiting at a site of this provider.
    #[arg(long)]
    provider: Option<String>,
    /// Messages in this state: held, sending, waiting (for their turn at
    /// their destination), deferred or new.
    #[arg(long)]
    state: Option<MessageState>,
    /// Messages queued at least this long ago, such as "2h".
    #[arg(long)]
    older_than: Option<crate::config::values::Duration>,
    /// The configuration file (for the admin address and token).
    #[arg(long, short, default_value_os_t = config::default_path())]
    pub config: PathBuf,
}

impl FilterArgs {
    /// The filter for the API.
    pub fn filter(&self) -> Filter {
        Filter {
            domain: self.domain.clone(),
            sender: self.sender.clone(),
            tenant: self.tenant.clone(),
            pool: self.pool.clone(),
            id: self.id.clone(),
            site: self.site.clone(),
            provider: self.provider.clone(),
            state: self.state,
            older_than_secs: self.older_than.map(|d| d.get().as_secs()),
        }
    }

    /// The filter as a URL query (`domain=...&pool=...`).
    pub fn query(&self) -> String {
        let f = self.filter();
        [
            ("domain", f.domain),
            ("sender", f.sender),
            ("tenant", f.tenant),
            ("pool", f.pool),
            ("id", f.id),
            ("site", f.site),
            ("provider", f.provider),
            ("state", f.state.map(|s| s.name().to_owned())),
            ("older_than_secs", f.older_than_secs.map(|s| s.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", encode(&v?))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// Percent-encodes everything but unreserved characters.
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `tern purge FILTER`.
pub fn purge(f: &FilterArgs, ctx: &Ctx) -> ExitCode {
    start_and_follow(f, "/v1/purge", &f.filter(), ctx, "purged")
}

/// `tern hold FILTER`.
pub fn hold(f: &FilterArgs, ctx: &Ctx) -> ExitCode {
    start_and_follow(f, "/v1/hold", &f.filter(), ctx, "held")
}

/// `tern release FILTER`.
pub fn release(f: &FilterArgs, ctx: &Ctx) -> ExitCode {
    start_and_follow(f, "/v1/release", &f.filter(), ctx, "released")
}

/// `tern bounce FILTER --reason R`.
pub fn bounce(f: &FilterArgs, reason: String, ctx: &Ctx) -> ExitCode {
    let req = Bounce {
        filter: f.filter(),
        reason,
    };
    start_and_follow(f, "/v1/bounce", &req, ctx, "bounced")
}

fn start_and_follow<B: serde::Serialize>(
    f: &FilterArgs,
    path: &str,
    req: &B,
    ctx: &Ctx,
    done: &str,
) -> ExitCode {
    let Some(admin) = ctx.admin(&f.config) else {
        return ExitCode::FAILURE;
    };
    match send::<JobStarted, _>(&admin, "POST", path, req) {
        Ok(s) => follow(&admin, s.job, ctx, done),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Follows job `id` to its end (bounded: an hour) and prints its result.
fn follow(admin: &AdminConfig, id: u64, ctx: &Ctx, done: &str) -> ExitCode {
    for _ in 0..36_000 {
        match get::<JobProgress>(admin, &format!("/v1/jobs/{id}")) {
            Ok(p) if p.finished => {
                return emit(ctx.json, &p, |p| {
                    format!(
                        "{done} {} message(s) of {} looked at; {} being delivered were left, {} failed\n",
                        p.done_items, p.scanned, p.skipped, p.failed
                    )
                });
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => {
                eprintln!("tern: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("tern: job {id} is still running; follow it at /v1/jobs/{id}");
    ExitCode::FAILURE
}

/// What `tern rebind` does: move mail (to a pool, via relay hosts, or
/// both), list the rebinds in force, or end one.
#[derive(Debug, Args)]
pub struct RebindArgs {
    /// The pool the mail leaves from from now on.
    #[arg(long)]
    to_pool: Option<String>,
    /// Relay the mail through this host ("host:port" or "host") instead of
    /// its domains' MX hosts; repeat for fallbacks.
    #[arg(long)]
    via: Vec<String>,
    /// Why (kept with the rebind).
    #[arg(long, default_value = "rebound by an operator")]
    reason: String,
    /// List the rebinds in force.
    #[arg(long)]
    list: bool,
    /// End rebind ID (its mail goes back to its own pool and route).
    #[arg(long)]
    cancel: Option<u64>,
}

/// `tern rebind`.
pub fn rebind(f: &FilterArgs, a: RebindArgs, ctx: &Ctx) -> ExitCode {
    let Some(admin) = ctx.admin(&f.config) else {
        return ExitCode::FAILURE;
    };
    let admin = &admin;
    let moves = a.to_pool.is_some() || !a.via.is_empty();
    let result = match (moves, a.list, a.cancel) {
        (true, false, None) => {
            let req = Rebind {
                filter: f.filter(),
                to_pool: a.to_pool,
                via: a.via,
                reason: a.reason,
                retry: true,
            };
            match send::<RebindMade, _>(admin, "POST", "/v1/rebinds", &req) {
                Ok(made) => {
                    let to = made.rebind.destination();
                    out!("rebind {} in force: mail moves to {to}", made.rebind.id);
                    return match made.job {
                        Some(job) => follow(admin, job, ctx, "made due now"),
                        None => ExitCode::SUCCESS,
                    };
                }
                Err(e) => Err(e),
            }
        }
        (false, true, None) => {
            get::<Vec<RebindRule>>(admin, "/v1/rebinds").map(|l| emit(ctx.json, &l, rebind_table))
        }
        (false, false, Some(id)) => {
            send::<Cancelled, _>(admin, "DELETE", &format!("/v1/rebinds/{id}"), &()).map(|c| {
                emit(ctx.json, &c, |c| {
                    let state = if c.cancelled { "ended" } else { "not in force" };
                    format!("rebind {id}: {state}\n")
                })
            })
        }
        _ => {
            eprintln!("tern: give --to-pool and/or --via (with a filter), --list or --cancel ID");
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("tern: {e}");
        ExitCode::FAILURE
    })
}

fn rebind_table(l: &Vec<RebindRule>) -> String {
    let mut out = String::new();
    for r in l {
        let made = crate::clock::rfc3339(queue::Timestamp::from_millis(r.made_ms).to_system_time());
        out.push_str(&format!(
            "{:>4}  to {:<20} made {made}  {}  {}\n",
            r.id,
            r.destination(),
            serde_json::to_string(&r.filter).unwrap_or_default(),
            r.reason
        ));
    }
    if out.is_empty() {
        out.push_str("no rebind in force\n");
    }
    out
}
