//! The diagnostic log: `tracing` events to stderr, filtered by the config's
//! `[log] level` or, when set, the `RUST_LOG` environment variable.

use anyhow::Context;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses a log filter strictly: comma-separated directives, each a level
/// (`info`) or `target=level` (`queue=debug`). Unlike `Targets`'s own
/// parser, a bare word that is not a level (a typo such as `inof`) is an
/// error rather than a target name.
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, directive),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} is not a level (use {})",
                LEVELS.join(", ")
            ));
        }
        if let Some(t) = target
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        {
            return Err(format!("{t:?} is not a module path"));
        }
    }
    spec.parse().map_err(|e| format!("{e}"))
}

/// The installed diagnostic log's filter, changeable while Tern runs
/// (`PUT /v1/log-level`, `tern log-level`).
pub struct LogFilter {
    apply: Box<dyn Fn(Targets) -> Result<(), String> + Send + Sync>,
    current: std::sync::Mutex<String>,
}

impl LogFilter {
    /// Puts the filter `spec` in force (parsed as strictly as `[log]
    /// level`); the previous one stays when it is invalid.
    pub fn set(&self, spec: &str) -> Result<(), String> {
        let targets = parse_filter(spec)?;
        (self.apply)(targets)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        tracing::warn!(from = %current, to = %spec, "the diagnostic log filter changed");
        *current = spec.to_owned();
        Ok(())
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Installs the process's log subscriber. Call once, at startup; the
/// returned filter changes what it lets through.
pub fn init(config_level: &str) -> anyhow::Result<LogFilter> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let spec = from_env.as_deref().unwrap_or(config_level);
    let filter = parse_filter(spec)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid log filter {spec:?}"))?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .finish()
        .with(filter);
    tracing::subscriber::set_global_default(subscriber)
        .context("a log subscriber is already installed")?;
    Ok(LogFilter {
        apply: Box::new(move |t| handle.reload(t).map_err(|e| e.to_string())),
        current: std::sync::Mutex::new(spec.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_filter;

    #[test]
    fn filters_are_strict() {
        for good in ["info", "warn,queue=debug", "tern::daemon=trace", "OFF", ""] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for bad in ["inof", "loud", "queue=loud", "=info", "a b=info"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
