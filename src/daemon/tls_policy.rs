//! The daemon's TLS policy parts: MTA-STS discovery with its cache in the
//! spool, the TLS-RPT counts, and the task that flushes them and sends
//! the daily reports.

use std::sync::Arc;

use super::Services;
use crate::config::Config;
use rustls_pki_types::CertificateDer;

use crate::dns::dnssec::{Anchors, DnssecResolver};
use crate::dns::resolver::Resolver;
use crate::tlspolicy::TlsPolicies;
use crate::tlspolicy::dane::Dane;
use crate::tlspolicy::https::Https;
use crate::tlspolicy::mta_sts::MtaSts;
use crate::tlspolicy::report::Reports;
use crate::tlspolicy::send::{Sender, Submitter};

/// The policy component delivery consults, and the reports' sender; an
/// error when the validating resolver cannot be built (its trust anchors).
pub(super) fn policies(
    config: &Config,
    services: &Services,
    resolver: Arc<dyn Resolver>,
    ca_roots: &[CertificateDer<'static>],
    anchors: Option<&Anchors>,
) -> anyhow::Result<(Arc<TlsPolicies>, Arc<Sender>)> {
    let t = &config.tls_policy;
    let https = Https::new(
        resolver.clone(),
        ca_roots,
        t.https_port,
        t.fetch_timeout.get(),
    );
    let queue = Some(services.queue.clone());
    let sts = t.mta_sts.then(|| {
        let bounds = (t.min_policy_age.get(), t.max_policy_age.get());
        Arc::new(MtaSts::new(
            resolver.clone(),
            https.clone(),
            queue.clone(),
            bounds,
        ))
    });
    let reports = Arc::new(Reports::new(queue));
    let dane = match t.dane {
        true => Some(Dane::new(
            Arc::new(DnssecResolver::new(&config.dns, anchors).map_err(anyhow::Error::msg)?),
            config.delivery.port,
        )),
        false => None,
    };
    let hostname = &config.server.hostname;
    let who = Submitter {
        from: (t.report_from.clone()).unwrap_or_else(|| format!("tls-reports@{hostname}")),
        organization: (t.report_organization.clone()).unwrap_or_else(|| hostname.clone()),
        contact: t.report_contact.clone(),
        hostname: hostname.clone(),
    };
    let intake = super::admin::local_intake(config, services);
    let sender = Arc::new(Sender::new(reports.clone(), resolver, https, intake, who));
    Ok((Arc::new(TlsPolicies::new(dane, sts, reports)), sender))
}
