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

/// Installs the process's log subscriber. Call once, at startup.
pub fn init(config_level: &str) -> anyhow::Result<()> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let spec = from_env.as_deref().unwrap_or(config_level);
    let filter = parse_filter(spec)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid log filter {spec:?}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .finish()
        .with(filter);
    tracing::subscriber::set_global_default(subscriber)
        .context("a log subscriber is already installed")
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
