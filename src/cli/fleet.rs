//! `tern cluster status`: the fleet's nodes as the running daemon sees
//! them (through its admin API).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::admin::client::get;
use crate::admin::types::ClusterStatus;
use crate::config::DEFAULT_PATH;

/// `tern cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the fleet's nodes: state (accepting, draining, down), when
    /// each was last heard from, and its queue.
    Status {
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
}

/// Runs a `tern cluster` command.
pub fn main(command: ClusterCommand, json: bool) -> ExitCode {
    match command {
        ClusterCommand::Status { config } => status(&config, json),
    }
}

fn status(config: &std::path::Path, json: bool) -> ExitCode {
    let Some(config) = super::load_or_report(config) else {
        return ExitCode::FAILURE;
    };
    match get::<ClusterStatus>(&config.admin, "/v1/cluster") {
        Ok(s) => super::emit(json, &s, table),
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::FAILURE
        }
    }
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
