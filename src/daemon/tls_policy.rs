//! The daemon's TLS policy parts: MTA-STS discovery with its cache in the
//! spool, DANE, the TLS-RPT counts, and the task that flushes them and
//! sends the daily reports. The policy component is built again from
//! `[tls_policy]` at each reload that changes it (the counts and the
//! spool's MTA-STS cache carry over); the report sender keeps the settings
//! it started with.

use std::sync::Arc;

use super::Services;
use crate::config::{Config, DnsConfig, TlsPolicyConfig};
use rustls_pki_types::CertificateDer;

use crate::dns::dnssec::{Anchors, DnssecResolver};
use crate::dns::resolver::Resolver;
use crate::tlspolicy::TlsPolicies;
use crate::tlspolicy::dane::Dane;
use crate::tlspolicy::https::Https;
use crate::tlspolicy::mta_sts::MtaSts;
use crate::tlspolicy::report::Reports;
use crate::tlspolicy::send::{Sender, Submitter};

/// What building the policy component takes besides `[tls_policy]`,
/// fixed for the daemon's life (`[dns]` and `[delivery]` need a restart).
pub(super) struct Parts {
    resolver: Arc<dyn Resolver>,
    ca_roots: Vec<CertificateDer<'static>>,
    queue: Arc<queue::Queue>,
    dns: DnsConfig,
    anchors: Option<Anchors>,
    smtp_port: u16,
    /// The sessions' counts, shared by every build.
    reports: Arc<Reports>,
}

impl Parts {
    /// The parts of a daemon starting on `config`.
    pub(super) fn new(
        config: &Config,
        services: &Services,
        resolver: Arc<dyn Resolver>,
        ca_roots: &[CertificateDer<'static>],
        anchors: Option<&Anchors>,
    ) -> Self {
        Self {
            resolver,
            ca_roots: ca_roots.to_vec(),
            queue: services.queue.clone(),
            dns: config.dns.clone(),
            anchors: anchors.cloned(),
            smtp_port: config.delivery.port,
            reports: Arc::new(Reports::new(Some(services.queue.clone()))),
        }
    }

    fn https(&self, t: &TlsPolicyConfig) -> Https {
        Https::new(
            self.resolver.clone(),
            &self.ca_roots,
            t.https_port,
            t.fetch_timeout.get(),
        )
    }

    /// The policy component delivery consults under `t`; an error when
    /// the validating resolver DANE needs cannot be built (its trust
    /// anchors).
    pub(super) fn build(&self, t: &TlsPolicyConfig) -> Result<TlsPolicies, String> {
        let sts = t.mta_sts.then(|| {
            let bounds = (t.min_policy_age.get(), t.max_policy_age.get());
            Arc::new(MtaSts::new(
                self.resolver.clone(),
                self.https(t),
                Some(self.queue.clone()),
                bounds,
            ))
        });
        let dane = match t.dane {
            true => Some(Dane::new(
                Arc::new(DnssecResolver::new(&self.dns, self.anchors.as_ref())?),
                self.smtp_port,
            )),
            false => None,
        };
        Ok(TlsPolicies::new(dane, sts, self.reports.clone()))
    }

    /// The reports' sender, with the settings of `config`.
    pub(super) fn sender(&self, config: &Config, services: &Services) -> Arc<Sender> {
        let t = &config.tls_policy;
        let hostname = &config.server.hostname;
        let who = Submitter {
            from: (t.report_from.clone()).unwrap_or_else(|| format!("tls-reports@{hostname}")),
            organization: (t.report_organization.clone()).unwrap_or_else(|| hostname.clone()),
            contact: t.report_contact.clone(),
            hostname: hostname.clone(),
        };
        let intake = super::admin::local_intake(config, services);
        Arc::new(Sender::new(
            self.reports.clone(),
            self.resolver.clone(),
            self.https(t),
            intake,
            who,
        ))
    }
}
