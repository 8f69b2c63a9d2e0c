//! The `tern` command line: `run`, `check-config`, `auth hash-password`,
//! `dkim keygen|record`, `shaping show|actions`, and the operator's verbs
//! over the running daemon's API (`queue ...`, `suspend`, `resume`,
//! `retry`, `purge`, `bounce`, `rebind`, `actions`, `reload`, `drain`,
//! `cluster`, `template`), tables by
//! default and JSON with `--json`.
//! Parses arguments (clap), calls the library, prints results. Exit codes:
//! 0 success, 1 failure (invalid config, runtime error), 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

/// `println!` for the CLI: a closed pipe (`tern queue list | head -1`)
/// ends the program quietly (exit 141, as a shell reports SIGPIPE) instead
/// of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

/// `print!` for the CLI (see `out!`).
macro_rules! out_text {
    ($($arg:tt)*) => {
        $crate::cli::print_raw(format_args!($($arg)*))
    };
}

mod access;
mod control;
mod daemon;
mod dkim;
mod fleet;
mod ops;
mod queue;
mod shaping;
mod template;
mod tls;
mod top;
mod trace;

/// Tern, a high-throughput SMTP mail transfer agent for bulk routing.
#[derive(Debug, Parser)]
#[command(name = "tern", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the daemon's answers as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    access: access::Access,
}

/// What every verb gets: the output format and how to reach the daemon.
pub(crate) struct Ctx {
    /// `--json`.
    pub json: bool,
    access: access::Access,
    env: access::Env,
}

impl Ctx {
    /// The admin API to call for a verb given `config` (see
    /// [`access::Access::endpoint`]).
    pub(crate) fn endpoint(&self, config: &Path) -> Result<crate::config::AdminConfig, String> {
        self.access.endpoint(&self.env, config)
    }

    /// [`Ctx::endpoint`], its error printed.
    pub(crate) fn admin(&self, config: &Path) -> Option<crate::config::AdminConfig> {
        self.endpoint(config)
            .map_err(|e| eprintln!("tern: {e}"))
            .ok()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the MTA in the foreground until SIGTERM or SIGINT.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// Check a configuration file: print every error (file:line:column: key:
    /// reason) and exit 1, or print a short summary and exit 0.
    CheckConfig {
        /// The configuration file.
        #[arg(default_value_os_t = config::default_path())]
        file: PathBuf,
    },
    /// Look at the queue.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// SMTP AUTH users.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// DKIM keys and their DNS records.
    Dkim {
        #[command(subcommand)]
        command: dkim::DkimCommand,
    },
    /// Stop mail for a target (path, source, site, provider, domain,
    /// pool or tenant) for a while, through the running daemon: it is
    /// deferred, never bounced, and flows again at the end.
    Suspend {
        #[command(flatten)]
        target: ops::TargetArgs,
        /// For how long, such as "30m".
        #[arg(long = "for")]
        duration: String,
        /// Why (shown in deferral replies and `tern shaping actions`).
        #[arg(long, default_value = "suspended by an operator")]
        reason: String,
    },
    /// Make deferred mail due now (all of it, that of one domain, or one
    /// message), through the running daemon.
    Retry {
        /// Only messages with a recipient waiting at this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only this message (its queue id).
        #[arg(long)]
        id: Option<String>,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// Remove queued mail matching every filter given, undelivered and
    /// unbounced (logged as `purged`), through the running daemon.
    Purge {
        #[command(flatten)]
        filter: control::FilterArgs,
    },
    /// Hold queued mail matching every filter given (the whole queue when
    /// none is): kept, never tried and never expired, until released.
    Hold {
        #[command(flatten)]
        filter: control::FilterArgs,
    },
    /// Release held mail matching every filter given (all of it when none
    /// is): due at once.
    Release {
        #[command(flatten)]
        filter: control::FilterArgs,
    },
    /// Fail queued mail matching every filter given: each sender gets a
    /// DSN with the reason (5.0.0), through the running daemon.
    Bounce {
        #[command(flatten)]
        filter: control::FilterArgs,
        /// Why (in the DSN).
        #[arg(long)]
        reason: String,
    },
    /// Move queued mail matching every filter given to another pool or
    /// through other relay hosts (it is made due now and leaves that way);
    /// or list the rebinds in force, or end one.
    Rebind {
        #[command(flatten)]
        filter: control::FilterArgs,
        #[command(flatten)]
        args: control::RebindArgs,
    },
    /// List the automatic actions in force (as `tern shaping actions`).
    Actions {
        /// The configuration file.
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// Have the running daemon read its config file again: a valid one
    /// is put in force at once; an invalid one is refused with
    /// every error, and the running config stays.
    Reload {
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// A live view of the running daemon, redrawn every second: rates,
    /// the queue, the busiest paths, the actions in force.
    Top {
        #[command(flatten)]
        args: top::TopArgs,
    },
    /// Show the SMTP dialogues of matching sessions as they happen
    /// (outbound by --domain or --source, inbound by --client).
    Trace {
        #[command(flatten)]
        args: trace::TraceArgs,
    },
    /// Print a completion script for a shell (bash, zsh, fish, elvish,
    /// powershell): `tern completions bash > /etc/bash_completion.d/tern`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (`tern.1` and one per verb, `tern-queue.1`,
    /// ...) into a directory: `tern man /usr/local/share/man/man1`.
    Man {
        /// Where to write them (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show the running daemon's diagnostic log filter, or change it
    /// (until the next change or a restart), such as
    /// `info,tern::delivery=debug`.
    LogLevel {
        /// The new filter: comma-separated `level` or `target=level`.
        filter: Option<String>,
        /// The configuration file (for the admin address and token).
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// End a suspension now (an operator's or a rule's).
    Resume {
        #[command(flatten)]
        target: ops::TargetArgs,
    },
    /// Hand this node's queue to its peers before switching it off: it
    /// refuses new mail (421), starts no new sends, and moves every
    /// queued message to live peers, each exactly once; resumable after
    /// a crash. Waits until the queue is empty unless --no-wait.
    Drain {
        #[command(flatten)]
        args: fleet::DrainArgs,
    },
    /// The fleet this node belongs to (`[cluster]`).
    Cluster {
        #[command(subcommand)]
        command: fleet::ClusterCommand,
    },
    /// Traffic shaping.
    Shaping {
        #[command(subcommand)]
        command: ShapingCommand,
    },
    /// Stored templates of the HTTP injection API (push a version, show,
    /// preview with variables).
    Template {
        #[command(subcommand)]
        command: template::TemplateCommand,
    },
    /// Outbound TLS policy: what a domain's mail is held to (MTA-STS),
    /// and sending TLS reports now.
    Tls {
        #[command(subcommand)]
        command: tls::TlsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ShapingCommand {
    /// Print the limits mail to a domain gets from a source, and the layer
    /// of the config each comes from.
    Show {
        /// The recipient domain.
        #[arg(long)]
        domain: String,
        /// The source, by name or by its (public) address (default: the first
        /// of the default pool).
        #[arg(long)]
        source: Option<String>,
        /// The domain's MX hosts, comma-separated, instead of looking them up.
        #[arg(long)]
        mx: Option<String>,
        /// The configuration file.
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
    /// List the automatic actions (suspensions by reply rules) in force in
    /// the running daemon (from its API, else from what it kept in its
    /// spool).
    Actions {
        /// The configuration file.
        #[arg(long, short, default_value_os_t = config::default_path())]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Read a password from standard input (one line) and print its argon2
    /// hash for `password_hash` in an `[[auth.user]]` section. The password
    /// is never taken from the command line, so it stays out of shell
    /// history and process lists.
    HashPassword,
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    let ctx = Ctx {
        json: cli.json,
        access: cli.access,
        env: access::Env::from_process(),
    };
    let ctx = &ctx;
    if ctx.json
        && let Some(verb) = cli.command.without_json()
    {
        eprintln!("tern: --json: `tern {verb}` has no JSON output");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Run { config } => daemon::run(&config),
        Command::CheckConfig { file } => daemon::check_config(&file, ctx.json),
        Command::Queue { command } => queue::main(command, ctx),
        Command::Auth {
            command: AuthCommand::HashPassword,
        } => hash_password(),
        Command::Dkim { command } => dkim::main(command),
        Command::Suspend {
            target,
            duration,
            reason,
        } => ops::suspend(&target, &duration, &reason, ctx),
        Command::Resume { target } => ops::resume(&target, ctx),
        Command::Retry { domain, id, config } => ops::retry(&config, (domain, id), ctx),
        Command::Reload { config } => ops::reload(&config, ctx),
        Command::LogLevel { filter, config } => ops::log_level(&config, filter, ctx),
        Command::Top { args } => top::run(&args, ctx),
        Command::Trace { args } => trace::run(&args, ctx),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "tern", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => man_pages(&dir),
        Command::Cluster { command } => fleet::main(command, ctx),
        Command::Template { command } => template::main(command, ctx),
        Command::Tls { command } => tls::main(command, ctx),
        Command::Drain { args } => fleet::drain(&args, ctx),
        Command::Purge { filter } => control::purge(&filter, ctx),
        Command::Hold { filter } => control::hold(&filter, ctx),
        Command::Release { filter } => control::release(&filter, ctx),
        Command::Bounce { filter, reason } => control::bounce(&filter, reason, ctx),
        Command::Rebind { filter, args } => control::rebind(&filter, args, ctx),
        Command::Actions { config } => match load_or_report(&config) {
            Some(c) => shaping::actions(&c, ctx.json),
            None => ExitCode::FAILURE,
        },
        Command::Shaping {
            command:
                ShapingCommand::Show {
                    domain,
                    source,
                    mx,
                    config,
                },
        } => match load_or_report(&config) {
            Some(c) => shaping::show(&c, &domain, (source.as_deref(), mx.as_deref()), ctx.json),
            None => ExitCode::FAILURE,
        },
        Command::Shaping {
            command: ShapingCommand::Actions { config },
        } => match load_or_report(&config) {
            Some(c) => shaping::actions(&c, ctx.json),
            None => ExitCode::FAILURE,
        },
    }
}

impl Command {
    /// The verb's name when it prints no JSON (so `--json` is refused,
    /// never ignored).
    fn without_json(&self) -> Option<&'static str> {
        match self {
            Command::Run { .. } => Some("run"),
            Command::Auth { .. } => Some("auth hash-password"),
            Command::Dkim { .. } => Some("dkim"),
            Command::Completions { .. } => Some("completions"),
            Command::Man { .. } => Some("man"),
            _ => None,
        }
    }
}

/// `tern man DIR`: a page for `tern` and for each verb.
fn man_pages(dir: &Path) -> ExitCode {
    use clap::CommandFactory;
    let written =
        std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir));
    match written {
        Ok(()) => {
            out!("manual pages written to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "tern: cannot write the manual pages to {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as JSON, or as `human` writes it.
pub(crate) fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => out!("{text}"),
            Err(e) => {
                eprintln!("tern: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        out_text!("{}", human(value));
    }
    ExitCode::SUCCESS
}

pub(crate) fn load_or_report(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            None
        }
    }
}

/// Writes one line to stdout (see `out!`).
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    print_raw(format_args!("{args}\n"));
}

/// Writes to stdout; a closed pipe ends the program quietly.
pub(crate) fn print_raw(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let written = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("tern: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("tern: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("tern: the password is empty");
        return ExitCode::FAILURE;
    }
    match crate::smtp::server::hash_password(password) {
        Ok(hash) => {
            out!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
