//! The prepare step: after the config is validated (its syntax and values,
//! by [`crate::config`], which reads no other file), the files it names are
//! loaded once here: the listeners' and the admin API's certificates and
//! keys, the DKIM keys, the CA roots of `[delivery] tls_ca_file`, the
//! DNSSEC trust anchors of `[dns] trust_anchor`. Every failure is reported
//! at once by key (the config loader adds file, line and column:
//! `config::load_with(path, prepare)`), and the components receive what
//! was loaded: none of them reads these files itself.
//!
//! It owns loading; it never decides what the material is used for.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::config::Config;
use crate::config::load::{Issue, KeyPath, at, key_string};
use crate::dkim::key::PrivateKey;
use crate::dns::dnssec::Anchors;

/// What the config names, loaded.
pub struct Prepared {
    /// Per listener, in config order: its STARTTLS configuration, if it
    /// has a certificate.
    pub listener_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// The admin API's HTTPS configuration, if it has a certificate.
    pub admin_tls: Option<Arc<rustls::ServerConfig>>,
    /// The DKIM keys, in `[[dkim.key]]` order.
    pub dkim_keys: Vec<PrivateKey>,
    /// The CA roots of `tls_ca_file` (empty without one).
    pub ca_roots: Vec<CertificateDer<'static>>,
    /// The DNSSEC trust anchors of `trust_anchor` (`None`: the root's).
    pub trust_anchors: Option<Anchors>,
    /// The diagnostic log's filter, when this process installed the log
    /// (`tern run` sets it after the prepare step): the admin API changes
    /// it at runtime. `None` in tests that run Tern in-process.
    pub log_filter: Option<Arc<crate::logging::LogFilter>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("dkim_keys", &self.dkim_keys.len())
            .field("ca_roots", &self.ca_roots.len())
            .finish_non_exhaustive()
    }
}

/// Loads what `config` names, or says every reason it cannot.
pub fn prepare(config: &Config) -> Result<Prepared, Vec<Issue>> {
    let mut issues = Vec::new();
    let listener_tls = (config.listeners.iter().enumerate())
        .map(|(i, l)| match (&l.tls_certificate, &l.tls_key) {
            (Some(c), Some(k)) => match crate::smtp::tls::server_config(c, k) {
                Ok(t) => Some(t),
                Err(e) => {
                    let key = at("listener").index(i).field(e.key);
                    issues.push(Issue::new(key, e.message));
                    None
                }
            },
            _ => None,
        })
        .collect();
    let a = &config.admin;
    let admin_tls = match (&a.tls_certificate, &a.tls_key) {
        (Some(c), Some(k)) => crate::smtp::tls::server_config(c, k)
            .map_err(|e| issues.push(Issue::new(at("admin").field(e.key), e.message)))
            .ok(),
        _ => None,
    };
    let mut dkim_keys = Vec::with_capacity(config.dkim.keys.len());
    for (i, k) in config.dkim.keys.iter().enumerate() {
        match PrivateKey::load(&k.key, k.algorithm.into()) {
            Ok(key) => dkim_keys.push(key),
            Err(e) => {
                let key = at("dkim").field("key").index(i).field("key");
                issues.push(Issue::new(key, e.to_string()));
            }
        }
    }
    let ca_roots = match &config.delivery.tls_ca_file {
        Some(p) => crate::smtp::tls::load_certs(p)
            .map_err(|e| issues.push(Issue::new(at("delivery").field("tls_ca_file"), e)))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let trust_anchors = match &config.dns.trust_anchor {
        Some(p) => Anchors::load(p)
            .map_err(|e| issues.push(Issue::new(at("dns").field("trust_anchor"), e)))
            .ok(),
        None => None,
    };
    match issues.is_empty() {
        true => Ok(Prepared {
            listener_tls,
            admin_tls,
            dkim_keys,
            ca_roots,
            trust_anchors,
            log_filter: None,
        }),
        false => Err(issues),
    }
}

/// The issues as one message, `key: reason` per line (for a config made
/// in code, with no file to point into).
pub fn describe(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("{}: {}", key_string(&i.path), i.message))
        .collect::<Vec<_>>()
        .join("\n")
}
