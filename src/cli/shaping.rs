//! `tern shaping show`: the limits a domain's mail gets from a source, and
//! the layer each comes from: from the running daemon (the config in
//! force), else from the config file, resolving the domain's MX hosts
//! with the configured resolver (or taking them from `--mx`) to find its
//! site and provider, as delivery would.

use std::process::ExitCode;
use std::sync::Arc;

use crate::admin::types::EffectiveShaping;
use crate::config::Config;
use crate::dns::resolver::HickoryResolver;
use crate::dns::route::Router;
use crate::shaping::Shaper;

/// Prints the effective shaping of `domain` from `source` (default: the
/// first source of the default pool).
pub fn show(
    config: &Config,
    domain: &str,
    (source, mx): (Option<&str>, Option<&str>),
    json: bool,
) -> ExitCode {
    let domain = domain.to_ascii_lowercase();
    if let Some(e) = from_daemon(config, &domain, source, mx) {
        return super::emit(json, &e, |e| {
            format!(
                "(from the running daemon: the config in force)\n{}",
                effective_text(e)
            )
        });
    }
    let source = source.map(str::to_owned).or_else(|| {
        let pool = config
            .pools
            .iter()
            .find(|p| p.name == config.delivery.default_pool)?;
        pool.sources.first().map(|m| m.source.clone())
    });
    let Some(source) = source else {
        eprintln!("tern: no source given and the default pool has none");
        return ExitCode::FAILURE;
    };
    let Some(source) = config.find_source(&source) else {
        eprintln!("tern: no [[source]] is named {source:?} or has that address");
        return ExitCode::FAILURE;
    };
    let site = match mx {
        Some(list) => crate::dns::route::site_name(list.split(',')),
        None => match resolve_site(config, &domain) {
            Ok(site) => site,
            Err(e) => {
                eprintln!("tern: cannot route {domain}: {e} (give the MX hosts with --mx)");
                return ExitCode::FAILURE;
            }
        },
    };
    let plan = Shaper::new(config).plan(&source.name, &site, &domain);
    let effective = EffectiveShaping::new(domain, site, source, &plan);
    super::emit(json, &effective, effective_text)
}

/// Asks the running daemon (the config in force); `None` when it is down.
fn from_daemon(
    config: &Config,
    domain: &str,
    source: Option<&str>,
    mx: Option<&str>,
) -> Option<EffectiveShaping> {
    use super::control::encode;
    use crate::admin::client::{CallError, get};
    let mut path = format!("/v1/shaping/effective?domain={}", encode(domain));
    if let Some(s) = source {
        path.push_str(&format!("&source={}", encode(s)));
    }
    if let Some(m) = mx {
        path.push_str(&format!("&mx={}", encode(m)));
    }
    match get::<EffectiveShaping>(&config.admin, &path) {
        Ok(e) => Some(e),
        Err(CallError::Down(_)) => None,
        Err(e) => {
            eprintln!("note: {e}; reading the config file instead");
            None
        }
    }
}

/// The table `tern shaping show` prints.
fn effective_text(e: &EffectiveShaping) -> String {
    let mut source = e.source.clone();
    if let Some(a) = &e.source_address {
        source.push_str(&format!(" ({a}"));
        if let Some(p) = &e.proxy {
            source.push_str(&format!(" via {p}"));
        }
        source.push(')');
    }
    let mut out = format!(
        "domain    {}\nsite      {}\nprovider  {}\nsource    {source}\n",
        e.domain,
        e.site,
        e.provider.as_deref().unwrap_or("(none matched)"),
    );
    if e.own_paths {
        out.push_str(
            "paths     of its own ([[shaping.domain]]), apart from the site's other domains\n",
        );
    }
    out.push_str("per path:\n");
    for r in &e.per_path {
        out.push_str(&format!(
            "  {:<32} {:<18} from {}\n",
            r.key, r.value, r.from
        ));
    }
    out.push_str("shared with other paths:\n");
    if e.shared.is_empty() {
        out.push_str("  (none)\n");
    }
    for r in &e.shared {
        out.push_str(&format!("  {:<32} {}\n", r.key, r.value));
    }
    out
}

fn resolve_site(config: &Config, domain: &str) -> Result<String, String> {
    let resolver = HickoryResolver::new(&config.dns)?;
    let router = Router::new(config, Arc::new(resolver));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(router.route(domain))
        .map(|r| r.site.to_string())
        .map_err(|e| e.text().to_owned())
}

/// Prints the automatic actions in force: from the running daemon's API,
/// else from what it kept in its spool.
pub fn actions(config: &Config, json: bool) -> ExitCode {
    use crate::admin::client::{CallError, get};
    match get::<Vec<crate::shaping::rules::Action>>(&config.admin, "/v1/shaping/actions") {
        Ok(list) => return super::emit(json, &list, |l| actions_text(l)),
        Err(CallError::Down(_)) => {}
        Err(e) => eprintln!("note: {e}; reading the spool instead"),
    }
    // The daemon is down: the actions it kept in its spool.
    let list: Vec<crate::shaping::rules::Action> =
        match queue::SpoolSnapshot::read(&config.queue.path) {
            _ if !config.queue.path.exists() => Vec::new(),
            Ok((snapshot, _)) => snapshot
                .state(crate::state::ACTIONS)
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or_default(),
            Err(e) => {
                eprintln!(
                    "tern: cannot read the spool {}: {e}",
                    config.queue.path.display()
                );
                return ExitCode::FAILURE;
            }
        };
    let now = crate::clock::rfc3339(std::time::SystemTime::now());
    let active: Vec<_> = list
        .into_iter()
        .filter(|a| a.rate.is_some() || a.end > now)
        .collect();
    super::emit(json, &active, |l| actions_text(l))
}

fn actions_text(active: &[crate::shaping::rules::Action]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if active.is_empty() {
        out.push_str("no automatic actions in force\n");
    }
    for a in active {
        let _ = match &a.rate {
            Some(rate) => writeln!(
                out,
                "{}: slowed to {rate} by rule {} since {}, until whole again",
                a.target, a.rule, a.start
            ),
            None => writeln!(
                out,
                "{}: suspended by rule {} from {} until {}",
                a.target, a.rule, a.start, a.end
            ),
        };
        let _ = writeln!(out, "    after: {}", a.reply);
    }
    out
}
