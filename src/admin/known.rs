//! Whether the names an operator gives (a source, site, provider, pool or
//! tenant, in a suspension or a filter) exist in the config in force; an
//! error names the closest known name, so a typo is refused rather than
//! matching nothing.

use super::AdminState;
use crate::delivery::filter::Filter;
use crate::shaping::rules::Target;

/// Checks every name a filter gives.
pub(super) fn filter(s: &AdminState, f: &Filter) -> Result<(), String> {
    let named = [
        f.pool.clone().map(Target::Pool),
        f.tenant.clone().map(Target::Tenant),
        f.provider.clone().map(Target::Provider),
        f.site.clone().map(Target::Site),
    ];
    named.into_iter().flatten().try_for_each(|t| target(s, &t))
}

/// Whether the names a target gives exist in the config in force (sites:
/// the sites delivery knows now, or a `[[shaping.site]]`); an error names
/// the closest known name. A domain may be any domain.
pub(super) fn target(s: &AdminState, target: &Target) -> Result<(), String> {
    let Some(reloader) = &s.reloader else {
        return Ok(());
    };
    reloader.with_config(|c| {
        let sources = c.sources.iter().map(|x| x.name.as_str());
        let check = |kind: &str, name: &str, known: Vec<&str>| match known.contains(&name) {
            true => Ok(()),
            false => Err(match crate::config::names::closest(name, known) {
                Some(near) => format!("no {kind} is named {name:?} (did you mean {near:?}?)"),
                None => format!("no {kind} is named {name:?}"),
            }),
        };
        let site_known = |site: &str| {
            let configured = c.shaping.sites.iter().map(|x| x.mx.as_str());
            if site
                .split(',')
                .any(|h| configured.clone().any(|mx| mx.eq_ignore_ascii_case(h)))
            {
                return Ok(());
            }
            // The sites with mail now: read only when a site is named.
            let live: Vec<String> = s.delivery.paths().into_iter().map(|p| p.site).collect();
            let mut known: Vec<&str> = live.iter().map(String::as_str).collect();
            known.extend(configured);
            check("site", site, known)
        };
        match target {
            Target::Source(n) => check("source", n, sources.collect()),
            Target::Pool(n) => check("pool", n, c.pools.iter().map(|x| x.name.as_str()).collect()),
            Target::Tenant(n) => check(
                "tenant",
                n,
                c.tenants.iter().map(|x| x.name.as_str()).collect(),
            ),
            Target::Provider(n) => check(
                "provider",
                n,
                c.shaping
                    .providers
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect(),
            ),
            Target::Site(site) => site_known(site),
            Target::Path(source, site) | Target::Slowed(source, site) => {
                check("source", source, sources.collect())?;
                site_known(site)
            }
            Target::Domain(_) => Ok(()),
        }
    })
}
