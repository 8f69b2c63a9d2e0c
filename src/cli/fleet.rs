//! `tern cluster status` (the fleet's nodes as the running daemon sees
//! them) and `tern drain` (start, follow or cancel handing the queue to
//! the peers), through the daemon's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Ctx;

use clap::Subcommand;

use crate::admin::client::{get, send};
use crate::admin::types::{ClusterStatus, DrainRequest};
use crate::cluster::drain::Progress;
use crate::config;

/// `tern cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the fleet's nodes: state (accepting, draining, down), when
    /// each was last heard from, and its queue.
    Status {
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
}

/// Runs a `tern cluster` command.
pub fn main(command: ClusterCommand, ctx: &Ctx) -> ExitCode {
    match command {
        ClusterCommand::Status { config } => status(&config, ctx),
    }
}

fn status(config: &std::path::Path, ctx: &Ctx) -> ExitCode {
    let Some(admin) = ctx.admin(config) else {
        return ExitCode::FAILURE;
    };
    match get::<ClusterStatus>(&admin, "/v1/cluster") {
        Ok(s) => super::emit(ctx.json, &s, table),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern drain` options.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// A peer to hand mail to: a node name of the fleet, or the
    /// `host:port` of its admin API (repeatable; default: every live
    /// peer, in turn).
    #[arg(long = "to")]
    to: Vec<String>,
    /// Only show where the drain stands.
    #[arg(long, conflicts_with_all = ["cancel", "to"])]
    status: bool,
    /// Stop draining after the batch under way: the node takes mail again.
    #[arg(long, conflicts_with = "to")]
    cancel: bool,
    /// Start and return at once (follow it with --status).
    #[arg(long)]
    no_wait: bool,
    /// The configuration file (for the admin address and token).
    #[arg(long, short, default_value_os_t = config::default_path())]
    config: PathBuf,
}

/// `tern drain`.
pub fn drain(args: &DrainArgs, ctx: &Ctx) -> ExitCode {
    let Some(admin) = ctx.admin(&args.config) else {
        return ExitCode::FAILURE;
    };
    let a = &admin;
    let first = match (args.status, args.cancel) {
        (true, _) => get::<Progress>(a, "/v1/drain"),
        (_, true) => send::<Progress, _>(a, "DELETE", "/v1/drain", &()),
        _ => {
            let req = DrainRequest {
                to: args.to.clone(),
            };
            send::<Progress, _>(a, "POST", "/v1/drain", &req)
        }
    };
    let mut p = match first {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::FAILURE;
        }
    };
    let follow = !(args.status || args.cancel || args.no_wait || ctx.json);
    while follow && p.state == "running" {
        out!("{}", line(&p));
        std::thread::sleep(std::time::Duration::from_secs(1));
        match get::<Progress>(a, "/v1/drain") {
            Ok(next) => p = next,
            Err(e) => {
                eprintln!("tern: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    super::emit(ctx.json, &p, |p| format!("{}\n", line(p)))
}

fn line(p: &Progress) -> String {
    let peers: Vec<String> = p
        .per_peer
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let mut s = format!("drain {}: {} moved, {} left", p.state, p.moved, p.left);
    if !peers.is_empty() {
        s.push_str(&format!(" ({})", peers.join(", ")));
    }
    if let Some(w) = &p.waiting {
        s.push_str(&format!("; waiting: {w}"));
    }
    if p.state == "done" {
        s.push_str("; the queue is empty: the node can be switched off");
    }
    s
}

fn table(s: &ClusterStatus) -> String {
    let mut out = format!("asked {} (Redis {})\n", s.node, s.redis);
    out.push_str(&format!(
        "{:<24} {:<10} {:>10} {:>10}  {}\n",
        "NODE", "STATE", "SEEN AGO", "QUEUED", "ADMIN"
    ));
    for n in &s.nodes {
        out.push_str(&format!(
            "{:<24} {:<10} {:>9}s {:>10}  {}\n",
            n.node,
            n.state,
            n.seen_secs_ago,
            n.queued,
            n.admin.as_deref().unwrap_or("-")
        ));
    }
    out
}
