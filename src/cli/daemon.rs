//! `tern run` and `tern check-config`: loading and checking a config
//! file with what it names, and starting the daemon on it (the process's
//! limits, the allocator's settings, the runtime, the signals that stop
//! it). The daemon itself is [`crate::daemon`].

use std::path::Path;
use std::process::ExitCode;

use super::emit;
use crate::config::{self, Config};

/// Loads and validates a config file, then loads what it names (keys,
/// certificates), printing every error with file, line and key.
fn load_prepared(path: &Path) -> Option<(Config, crate::prepare::Prepared)> {
    match config::load_with(path, crate::prepare::prepare) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            None
        }
    }
}

pub(super) fn check_config(path: &Path, json: bool) -> ExitCode {
    if !json {
        let Some((config, _)) = load_prepared(path) else {
            return ExitCode::FAILURE;
        };
        out!("{}: OK", path.display());
        for line in config.summary().lines() {
            out!("  {line}");
        }
        if let Some(w) = crate::limits::warning(&config, crate::limits::hard_open_files()) {
            out!("warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    let report = match config::load_with(path, crate::prepare::prepare) {
        Ok((config, _)) => serde_json::json!({
            "file": path,
            "ok": true,
            "summary": config.summary().lines().collect::<Vec<_>>(),
            "warning": crate::limits::warning(&config, crate::limits::hard_open_files()),
        }),
        Err(errors) => serde_json::json!({
            "file": path,
            "ok": false,
            "errors": errors.0.iter().map(|e| serde_json::json!({
                "file": e.file,
                "line": e.position.map(|p| p.0),
                "column": e.position.map(|p| p.1),
                "key": e.key,
                "message": e.message,
            })).collect::<Vec<_>>(),
        }),
    };
    let ok = report["ok"] == true;
    emit(true, &report, |_| String::new());
    match ok {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

pub(super) fn run(path: &Path) -> ExitCode {
    let Some((config, mut prepared)) = load_prepared(path) else {
        return ExitCode::FAILURE;
    };
    match crate::logging::init(&config.log.level) {
        Ok(filter) => prepared.log_filter = Some(std::sync::Arc::new(filter)),
        Err(e) => {
            eprintln!("tern: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    open_file_limit(&config);
    crate::limits::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.runtime_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        crate::daemon::run(config, prepared, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit to its hard limit, and warns when the
/// config may need more.
fn open_file_limit(config: &crate::config::Config) {
    match crate::limits::raise_open_files() {
        Ok((before, now)) => {
            if before != now {
                tracing::info!(before, now, "raised the open-file limit");
            }
            if let Some(w) = crate::limits::warning(config, now) {
                tracing::warn!("{w}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed before this
/// returns, so a signal that arrives during startup is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
