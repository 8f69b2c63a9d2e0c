//! DKIM signing (RFC 6376, RFC 8463) at intake.
//!
//! This module owns the signers, one per configured key, built once from
//! the config and reused; the choice of signing domains for a message (the
//! author's, the envelope sender's, the platform's); and the signing
//! itself, which prepends the `DKIM-Signature` fields: RSA (and large
//! messages) on its own threads ([`pool`]), a small message signed by
//! Ed25519 keys alone on the calling task, cheaper than the hop. A
//! message is signed once, before it is queued; delivery and retries send
//! the stored bytes and never sign again. It
//! never decides what a failure means for the message: the intake does,
//! from `on_error`.

pub mod author;
pub mod key;
pub mod keygen;
pub mod pool;

use std::collections::HashMap;
use std::sync::Arc;

use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization as MaCanon, DkimSigner, Done};

use crate::config::{DkimConfig, DomainSource, OnSignError, PlatformSignature};
use key::{Algorithm, PrivateKey};
use pool::{PoolStopped, SignPool};

/// Why the signers could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// A key file did not load (the config check should have caught it).
    #[error("DKIM key {domain}/{selector}: {source}")]
    Key {
        /// Its domain.
        domain: String,
        /// Its selector.
        selector: String,
        /// What is wrong.
        source: key::KeyError,
    },
    /// The signing threads could not start.
    #[error("cannot start the DKIM signing threads: {0}")]
    Threads(#[from] std::io::Error),
}

/// Why one message was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signer refused (mail-auth's error text).
    #[error("signing with {domain}/{selector} failed: {reason}")]
    Failed {
        /// The key's domain.
        domain: Arc<str>,
        /// The key's selector.
        selector: Arc<str>,
        /// What failed.
        reason: String,
    },
    /// The signer panicked (a bug); the message is left as it was.
    #[error("signing with {domain} panicked")]
    Panicked {
        /// The domain being signed for.
        domain: Arc<str>,
    },
}

/// One key, ready to sign.
struct KeySigner {
    domain: Arc<str>,
    selector: Arc<str>,
    signer: DkimSigner<PrivateKey, Done>,
    /// Ed25519: its signature costs tens of microseconds, less than the
    /// hop to a signing thread and back.
    cheap: bool,
}

/// Messages up to this size are signed on the calling task when every key
/// is cheap: hashing them costs less than the hop to a signing thread.
const INLINE_MAX_BYTES: usize = 64 << 10;

/// Every signer, by lowercased domain.
struct KeySet {
    by_domain: HashMap<Arc<str>, Vec<KeySigner>>,
}

/// The DKIM signer of a running Tern: keys, domain policy and threads.
pub struct Dkim {
    keys: Arc<KeySet>,
    pool: Arc<SignPool>,
    sources: Vec<DomainSource>,
    platform: Option<(Arc<str>, PlatformSignature)>,
    on_error: OnSignError,
    /// A key of a domain also signs its subdomains without a key.
    subdomains: bool,
}

/// Limits on what signs a message (its tenant's, from
/// [`crate::tenants::TenantDomains`]).
pub struct Allowed<'a> {
    /// Whether a domain's key may sign this message.
    pub key: &'a (dyn Fn(&str) -> bool + Sync),
    /// Only the platform domain signs.
    pub platform_only: bool,
}

impl Allowed<'_> {
    /// No limit.
    pub const ANY: Allowed<'static> = Allowed {
        key: &|_| true,
        platform_only: false,
    };
}

impl std::fmt::Debug for Dkim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dkim")
            .field("domains", &self.keys.by_domain.keys().collect::<Vec<_>>())
            .field("threads", &self.pool.threads())
            .finish()
    }
}

/// The domains that sign one message, in signature order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// Domains that have keys.
    pub domains: Vec<Arc<str>>,
}

impl Dkim {
    /// Loads every key and builds its signer; `None` when no key is
    /// configured (nothing is signed). For tools and tests; the daemon's
    /// keys are loaded by the prepare step ([`Dkim::with_keys`]).
    pub fn from_config(cfg: &DkimConfig) -> Result<Option<Self>, DkimError> {
        let mut keys = Vec::with_capacity(cfg.keys.len());
        for k in &cfg.keys {
            let key =
                PrivateKey::load(&k.key, k.algorithm.into()).map_err(|source| DkimError::Key {
                    domain: k.domain.clone(),
                    selector: k.selector.clone(),
                    source,
                })?;
            keys.push(key);
        }
        Self::build(cfg, keys, None)
    }

    /// The signer of `cfg` with its keys, loaded (`keys[i]` is
    /// `cfg.keys[i]`'s).
    pub fn with_keys(cfg: &DkimConfig, keys: Vec<PrivateKey>) -> Result<Option<Self>, DkimError> {
        Self::build(cfg, keys, None)
    }

    /// The signer of a reloaded config with its keys (loaded again by the
    /// prepare step, so a key replaced on disk takes effect); the signing
    /// threads are kept when their number did not change (a reload never
    /// stops a signature under way).
    pub fn reloaded(
        &self,
        cfg: &DkimConfig,
        keys: Vec<PrivateKey>,
    ) -> Result<Option<Self>, DkimError> {
        Self::build(cfg, keys, Some(self.pool.clone()))
    }

    fn build(
        cfg: &DkimConfig,
        keys: Vec<PrivateKey>,
        pool: Option<Arc<SignPool>>,
    ) -> Result<Option<Self>, DkimError> {
        if cfg.keys.is_empty() {
            return Ok(None);
        }
        let headers = cfg.signed_headers();
        let canon = |relaxed| match relaxed {
            true => MaCanon::Relaxed,
            false => MaCanon::Simple,
        };
        let mut by_domain: HashMap<Arc<str>, Vec<KeySigner>> = HashMap::new();
        for (k, private) in cfg.keys.iter().zip(keys) {
            if private.algorithm() == Algorithm::RsaSha256 && private.bits() < key::RSA_WEAK_BITS {
                tracing::warn!(domain = %k.domain, selector = %k.selector, bits = private.bits(),
                    "DKIM key under 2048 bits: receivers may treat it as weak (RFC 8301)");
            }
            let domain: Arc<str> = crate::config::names::to_ascii(&k.domain).into();
            let cheap = private.algorithm() == Algorithm::Ed25519Sha256;
            let mut signer = DkimSigner::from_key(private)
                .domain(domain.as_ref())
                .selector(k.selector.as_str())
                .headers(headers.iter().cloned())
                .header_canonicalization(canon(cfg.canonicalization.relaxed_headers))
                .body_canonicalization(canon(cfg.canonicalization.relaxed_body));
            if let Some(x) = cfg.expiration {
                signer = signer.expiration(x.get().as_secs());
            }
            by_domain
                .entry(domain.clone())
                .or_default()
                .push(KeySigner {
                    domain,
                    selector: k.selector.as_str().into(),
                    signer,
                    cheap,
                });
        }
        let threads = match cfg.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let platform = cfg.platform_domain.as_ref().map(|p| {
            (
                Arc::from(crate::config::names::to_ascii(p)),
                cfg.platform_signature,
            )
        });
        Ok(Some(Self {
            keys: Arc::new(KeySet { by_domain }),
            pool: match pool.filter(|p| p.threads() == threads) {
                Some(p) => p,
                None => Arc::new(SignPool::new(threads)?),
            },
            sources: cfg.signing_domain.clone(),
            platform,
            on_error: cfg.on_error,
            subdomains: cfg.subdomains,
        }))
    }

    /// What a signing failure does to the message.
    pub fn on_error(&self) -> OnSignError {
        self.on_error
    }

    /// The domains that sign a message with author domain `author` (from
    /// the From field) and envelope sender `sender`: the first configured
    /// source whose domain has a key, then the platform domain (when
    /// nothing else signs, or always, as configured).
    pub fn choose(&self, author: Option<&str>, sender: &str) -> Choice {
        self.choose_allowed(author, sender, &Allowed::ANY)
    }

    /// The domain whose address `choose` checks first: the first
    /// configured source that gives one (From's, or the sender's).
    pub fn checked_domain(&self, author: Option<&str>, sender: &str) -> Option<String> {
        let sender_domain = sender
            .rsplit_once('@')
            .map(|(_, d)| crate::config::names::to_ascii(d));
        self.sources.iter().find_map(|s| match s {
            DomainSource::From => author.map(str::to_owned),
            DomainSource::Sender => sender_domain.clone(),
        })
    }

    /// The key domain for `d`: its own, or (with `subdomains`) its
    /// nearest parent's.
    fn key_domain(&self, d: &str) -> Option<Arc<str>> {
        let mut d = d;
        loop {
            if let Some((k, _)) = self.keys.by_domain.get_key_value(d) {
                return Some(k.clone());
            }
            if !self.subdomains {
                return None;
            }
            let (_, parent) = d.split_once('.')?;
            if !parent.contains('.') {
                return None;
            }
            d = parent;
        }
    }

    /// [`Dkim::choose`] within what `allowed` lets sign.
    pub fn choose_allowed(
        &self,
        author: Option<&str>,
        sender: &str,
        allowed: &Allowed<'_>,
    ) -> Choice {
        let sender_domain = sender
            .rsplit_once('@')
            .map(|(_, d)| crate::config::names::to_ascii(d));
        let own = (!allowed.platform_only)
            .then(|| {
                self.sources.iter().find_map(|s| {
                    let d = match s {
                        DomainSource::From => author,
                        DomainSource::Sender => sender_domain.as_deref(),
                    }?;
                    self.key_domain(d).filter(|k| (allowed.key)(k))
                })
            })
            .flatten();
        let mut domains: Vec<Arc<str>> = own.into_iter().collect();
        if let Some((p, when)) = &self.platform {
            let wanted = domains.is_empty() || *when == PlatformSignature::Always;
            if wanted && !domains.contains(p) && self.keys.by_domain.contains_key(p) {
                domains.push(p.clone());
            }
        }
        Choice { domains }
    }

    /// Signs `data` (the whole message, CRLF line ends) with every key of
    /// the chosen domains and prepends the signatures: on the calling task
    /// when every key is cheap (Ed25519) and the message small, otherwise
    /// on a signing thread (RSA costs about half a millisecond, too long to
    /// hold a worker). The message comes back whatever happens to the
    /// signing: signed, or as it was with the error. Only a pool whose
    /// threads are gone (never while `self` lives) loses it.
    pub async fn sign(
        &self,
        data: Vec<u8>,
        choice: Choice,
    ) -> Result<(Vec<u8>, Result<(), SignError>), PoolStopped> {
        if choice.domains.is_empty() {
            return Ok((data, Ok(())));
        }
        if data.len() <= INLINE_MAX_BYTES && self.keys.all_cheap(&choice) {
            return Ok(self.keys.sign_caught(data, &choice));
        }
        let keys = Arc::clone(&self.keys);
        // The data moves to the thread and back, never copied.
        self.pool.run(move || keys.sign_caught(data, &choice)).await
    }
}

impl KeySet {
    /// Whether every key of the chosen domains is cheap to sign with.
    fn all_cheap(&self, choice: &Choice) -> bool {
        (choice.domains.iter())
            .flat_map(|d| self.by_domain.get(d).into_iter().flatten())
            .all(|k| k.cheap)
    }

    /// [`KeySet::sign_into`], a panic in the signer made an error.
    fn sign_caught(&self, mut data: Vec<u8>, choice: &Choice) -> (Vec<u8>, Result<(), SignError>) {
        let signing = std::panic::AssertUnwindSafe(|| self.sign_into(&mut data, choice));
        let result = std::panic::catch_unwind(signing).unwrap_or_else(|_| {
            Err(SignError::Panicked {
                domain: choice.domains[0].clone(),
            })
        });
        (data, result)
    }

    /// Signs with every key of every chosen domain, then inserts the
    /// signature fields at the top of `data` (one move of the message).
    fn sign_into(&self, data: &mut Vec<u8>, choice: &Choice) -> Result<(), SignError> {
        let mut fields = Vec::with_capacity(512 * choice.domains.len());
        for d in &choice.domains {
            for k in self.by_domain.get(d).into_iter().flatten() {
                let sig = k.signer.sign(data).map_err(|e| SignError::Failed {
                    domain: k.domain.clone(),
                    selector: k.selector.clone(),
                    reason: e.to_string(),
                })?;
                sig.write_header(&mut fields);
            }
        }
        data.splice(0..0, fields);
        Ok(())
    }
}

impl Choice {
    /// `domain/selector` of every key that signs, for the delivery log.
    pub fn describe(&self, dkim: &Dkim) -> String {
        let mut out = String::new();
        for d in &self.domains {
            for k in dkim.keys.by_domain.get(d).into_iter().flatten() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&k.domain);
                out.push('/');
                out.push_str(&k.selector);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DkimKeyConfig, KeyAlgorithm};

    fn dkim(tweak: impl FnOnce(&mut DkimConfig)) -> Dkim {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dkim");
        let key = |domain: &str, selector: &str, algorithm, file: &str| DkimKeyConfig {
            domain: domain.into(),
            selector: selector.into(),
            algorithm,
            key: dir.join(file),
        };
        let mut cfg = DkimConfig {
            keys: vec![
                key(
                    "Shop.Example",
                    "r",
                    KeyAlgorithm::RsaSha256,
                    "rsa2048.pkcs8.pem",
                ),
                key(
                    "shop.example",
                    "e",
                    KeyAlgorithm::Ed25519Sha256,
                    "ed25519.pem",
                ),
                key(
                    "bounce.example",
                    "b",
                    KeyAlgorithm::Ed25519Sha256,
                    "ed25519.pem",
                ),
                key(
                    "platform.example",
                    "p",
                    KeyAlgorithm::Ed25519Sha256,
                    "ed25519.pem",
                ),
            ],
            threads: 1,
            ..DkimConfig::default()
        };
        tweak(&mut cfg);
        Dkim::from_config(&cfg).unwrap().unwrap()
    }

    fn chosen(d: &Dkim, author: Option<&str>, sender: &str) -> Vec<String> {
        d.choose(author, sender)
            .domains
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn the_domain_choice_follows_the_configured_order() {
        let d = dkim(|_| {});
        assert_eq!(
            chosen(&d, Some("shop.example"), "a@bounce.example"),
            ["shop.example"]
        );
        assert!(chosen(&d, Some("other.example"), "a@bounce.example").is_empty());
        assert!(chosen(&d, None, "").is_empty());

        let d = dkim(|c| c.signing_domain = vec![DomainSource::Sender, DomainSource::From]);
        assert_eq!(
            chosen(&d, Some("shop.example"), "a@Bounce.Example"),
            ["bounce.example"]
        );
        assert_eq!(
            chosen(&d, Some("shop.example"), "a@other.example"),
            ["shop.example"]
        );

        let d = dkim(|c| c.platform_domain = Some("Platform.Example".into()));
        assert_eq!(chosen(&d, Some("other.example"), ""), ["platform.example"]);
        assert_eq!(chosen(&d, Some("shop.example"), ""), ["shop.example"]);

        let d = dkim(|c| {
            c.platform_domain = Some("platform.example".into());
            c.platform_signature = PlatformSignature::Always;
        });
        assert_eq!(
            chosen(&d, Some("shop.example"), ""),
            ["shop.example", "platform.example"]
        );
        assert_eq!(
            chosen(&d, Some("platform.example"), ""),
            ["platform.example"],
            "never twice"
        );
    }

    #[tokio::test]
    async fn ed25519_alone_signs_small_messages_on_the_task_and_large_ones_on_a_thread() {
        let d = dkim(|_| {});
        let cheap = d.choose(Some("bounce.example"), "");
        assert_eq!(cheap.describe(&d), "bounce.example/b");
        assert!(d.keys.all_cheap(&cheap), "Ed25519 only");
        assert!(
            !d.keys.all_cheap(&d.choose(Some("shop.example"), "")),
            "RSA too"
        );
        let small = b"From: a@bounce.example\r\n\r\nbody\r\n".to_vec();
        let mut large = b"From: a@bounce.example\r\n\r\n".to_vec();
        while large.len() <= INLINE_MAX_BYTES {
            large.extend_from_slice(b"a line of the body of a large message\r\n");
        }
        for msg in [small, large] {
            let (signed, result) = d.sign(msg.clone(), cheap.clone()).await.unwrap();
            result.unwrap();
            let text = String::from_utf8(signed).unwrap();
            assert!(
                text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=b; d=bounce.example;")
            );
            assert!(text.ends_with(std::str::from_utf8(&msg).unwrap()));
        }
    }

    #[tokio::test]
    async fn signatures_are_prepended_one_per_key() {
        let d = dkim(|_| {});
        let msg = b"Received: x\r\nFrom: a@shop.example\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
        let choice = d.choose(Some("shop.example"), "");
        assert_eq!(choice.describe(&d), "shop.example/r shop.example/e");
        let (signed, result) = d.sign(msg.clone(), choice).await.unwrap();
        result.unwrap();
        let text = String::from_utf8(signed).unwrap();
        assert!(
            text.starts_with(
                "DKIM-Signature: v=1; a=rsa-sha256; s=r; d=shop.example; c=relaxed/relaxed;"
            ),
            "{text}"
        );
        assert_eq!(text.matches("DKIM-Signature:").count(), 2);
        assert!(
            text.contains("\r\nDKIM-Signature: v=1; a=ed25519-sha256; s=e;"),
            "{text}"
        );
        assert!(
            text.ends_with(std::str::from_utf8(&msg).unwrap()),
            "the message follows unchanged"
        );

        assert!(!text.contains(" x="), "no expiry unless configured");

        let d = dkim(|c| c.expiration = Some("7d".parse().unwrap()));
        let choice = d.choose(Some("shop.example"), "");
        let (signed, _) = d.sign(msg.clone(), choice).await.unwrap();
        let text = String::from_utf8(signed).unwrap().replace("\r\n\t", "");
        let tag = |t: &str| -> u64 {
            let prefix = format!("{t}=");
            let v = text.split(';').find_map(|p| p.trim().strip_prefix(&prefix));
            v.unwrap().parse().unwrap()
        };
        assert_eq!(tag("x") - tag("t"), 7 * 86400, "x= is t= plus the lifetime");

        let (same, result) = d.sign(msg.clone(), Choice::default()).await.unwrap();
        assert!(result.is_ok());
        assert_eq!(same, msg, "no domain: untouched");
    }
}
