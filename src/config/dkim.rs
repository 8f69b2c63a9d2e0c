//! `[dkim]` and `[[dkim.key]]`: which messages are DKIM-signed, by which
//! domain, with which keys and settings. The keys themselves are read and
//! checked here, at load time, so a missing or bad key file is a config
//! error that `tern check-config` reports.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};
use super::names;
use super::values::{Duration, ValueError, err};

/// `[dkim]`: signing at intake. With no `[[dkim.key]]`, nothing is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Where the signing domain comes from, in order: `"from"` (the From
    /// header's domain) and `"sender"` (the envelope sender's domain). The
    /// first whose domain has a key signs; default `["from"]`.
    pub signing_domain: Vec<DomainSource>,
    /// The platform's own domain, which signs mail whose own domains have
    /// no key (and every message, with `platform_signature = "always"`).
    /// It needs a `[[dkim.key]]` of its own.
    pub platform_domain: Option<String>,
    /// `"fallback"` (default): the platform domain signs only mail no other
    /// domain signs. `"always"`: it adds its signature to every message.
    pub platform_signature: PlatformSignature,
    /// A key of `shop.example` also signs mail from its subdomains
    /// (`news.shop.example`) that have no key of their own (DMARC's
    /// relaxed alignment holds). Default: false.
    pub subdomains: bool,
    /// The header fields signed (`h=`), every instance of each; a listed
    /// field the message lacks is signed as absent, so it cannot be added
    /// later. Must include From.
    pub headers: Vec<String>,
    /// Fields signed one extra time ("oversigned"), so that no further
    /// instance can be added without breaking the signature.
    pub oversign: Vec<String>,
    /// Header/body canonicalization: `"relaxed/relaxed"` (default, survives
    /// whitespace changes in transit), `"relaxed/simple"`, `"simple/relaxed"`
    /// or `"simple/simple"`.
    pub canonicalization: Canonicalization,
    /// Signature lifetime (`x=`); unset, signatures do not expire.
    pub expiration: Option<Duration>,
    /// When signing fails (it should not, with checked keys): `"unsigned"`
    /// (default) queues the message without the signature and logs it;
    /// `"defer"` refuses the message with a 4xx reply.
    pub on_error: OnSignError,
    /// Threads that sign (off the SMTP sessions' threads); 0 means one per
    /// CPU core.
    pub threads: usize,
    /// The keys: one entry per (domain, selector). A domain with several
    /// keys (RSA and Ed25519, say) gets one signature from each.
    #[serde(rename = "key")]
    pub keys: Vec<DkimKeyConfig>,
}

impl Default for DkimConfig {
    fn default() -> Self {
        Self {
            signing_domain: vec![DomainSource::From],
            platform_domain: None,
            platform_signature: PlatformSignature::Fallback,
            subdomains: false,
            headers: [
                "From",
                "Reply-To",
                "Subject",
                "Date",
                "To",
                "Cc",
                "Message-ID",
                "In-Reply-To",
                "References",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding",
                "List-Id",
                "List-Unsubscribe",
                "List-Unsubscribe-Post",
            ]
            .map(String::from)
            .to_vec(),
            oversign: ["From", "To", "Subject"].map(String::from).to_vec(),
            canonicalization: Canonicalization::default(),
            expiration: None,
            on_error: OnSignError::Unsigned,
            threads: 0,
            keys: Vec::new(),
        }
    }
}

/// `[[dkim.key]]`: one signing key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`); an internationalized domain may be
    /// written either way (`bücher.example` signs as
    /// `xn--bcher-kva.example`, its A-label).
    pub domain: String,
    /// The selector (`s=`): the key's record is `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// `"rsa-sha256"` (1024 to 4096-bit keys; 2048 recommended) or
    /// `"ed25519-sha256"`.
    pub algorithm: KeyAlgorithm,
    /// The PEM private key file (PKCS#1 or PKCS#8, unencrypted), relative to
    /// the working directory unless absolute. `tern dkim keygen` writes one.
    pub key: PathBuf,
}

/// A source of the signing domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainSource {
    /// The domain of the From header's (first) address.
    From,
    /// The domain of the envelope sender (MAIL FROM).
    Sender,
}

/// When the platform domain signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformSignature {
    /// Only mail that no other domain signs.
    Fallback,
    /// Every message, besides its own domain's signature.
    Always,
}

/// What a signing failure does to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSignError {
    /// Queue it unsigned and log the failure.
    Unsigned,
    /// Refuse it with a temporary error; the client retries.
    Defer,
}

/// The configured algorithm of a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// RSA with SHA-256.
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256.
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

/// Header and body canonicalization, written `"header/body"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Canonicalization {
    /// Header canonicalization is relaxed (else simple).
    pub relaxed_headers: bool,
    /// Body canonicalization is relaxed (else simple).
    pub relaxed_body: bool,
}

impl Default for Canonicalization {
    fn default() -> Self {
        Self {
            relaxed_headers: true,
            relaxed_body: true,
        }
    }
}

impl FromStr for Canonicalization {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let one = |p: &str| match p {
            "relaxed" => Some(true),
            "simple" => Some(false),
            _ => None,
        };
        match s.split_once('/').map(|(h, b)| (one(h), one(b))) {
            Some((Some(relaxed_headers), Some(relaxed_body))) => Ok(Self {
                relaxed_headers,
                relaxed_body,
            }),
            _ => Err(err(
                "canonicalization",
                s,
                "expected header/body, such as \"relaxed/relaxed\" or \"simple/simple\"",
            )),
        }
    }
}

impl fmt::Display for Canonicalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |relaxed: bool| if relaxed { "relaxed" } else { "simple" };
        write!(
            f,
            "{}/{}",
            name(self.relaxed_headers),
            name(self.relaxed_body)
        )
    }
}

impl TryFrom<String> for Canonicalization {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        s.parse()
    }
}

impl From<Canonicalization> for String {
    fn from(c: Canonicalization) -> String {
        c.to_string()
    }
}

impl DkimConfig {
    /// The header list with the oversigned fields added once more (and a
    /// field only in `oversign` added twice): what mail-auth's `h=` takes.
    pub fn signed_headers(&self) -> Vec<String> {
        let mut list = self.headers.clone();
        for o in &self.oversign {
            if !self.headers.iter().any(|h| h.eq_ignore_ascii_case(o)) {
                list.push(o.clone());
            }
            list.push(o.clone());
        }
        list
    }

    /// Checks the settings and loads every key; `max_age` is how long mail
    /// may stay queued (a signature must outlive it).
    pub(super) fn validate(&self, max_age: Duration, issues: &mut Vec<Issue>) {
        let key = |f: &str| at("dkim").field(f);
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            issues.push(Issue::new(
                key("headers"),
                "must include From (RFC 6376 section 5.4)",
            ));
        }
        for (list, name) in [(&self.headers, "headers"), (&self.oversign, "oversign")] {
            for (i, h) in list.iter().enumerate() {
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    issues.push(Issue::new(
                        key(name).index(i),
                        format!("{h:?} is not a header field name"),
                    ));
                } else if h.eq_ignore_ascii_case("dkim-signature") {
                    issues.push(Issue::new(
                        key(name).index(i),
                        "DKIM-Signature cannot be signed by another signature here",
                    ));
                }
            }
        }
        if self.signing_domain.is_empty() && self.platform_domain.is_none() {
            issues.push(Issue::new(
                key("signing_domain"),
                "must name a source (\"from\", \"sender\") unless platform_domain is set",
            ));
        }
        if let Some(x) = self.expiration
            && x < max_age
        {
            issues.push(Issue::new(
                key("expiration"),
                format!(
                    "{x} is shorter than delivery.max_age ({max_age}): \
                     mail delivered late would fail verification"
                ),
            ));
        }
        if let Some(p) = &self.platform_domain
            && !self.keys.iter().any(|k| k.domain.eq_ignore_ascii_case(p))
        {
            issues.push(Issue::new(
                key("platform_domain"),
                format!("no [[dkim.key]] has domain {p:?}"),
            ));
        }
        self.validate_keys(issues);
    }

    /// Each key: a domain and selector of DNS syntax, unique (its file is
    /// loaded by the prepare step, [`crate::prepare`]).
    fn validate_keys(&self, issues: &mut Vec<Issue>) {
        for (i, k) in self.keys.iter().enumerate() {
            let key = |f: &str| at("dkim").field("key").index(i).field(f);
            if !names::is_hostname(&names::to_ascii(&k.domain)) || k.domain.ends_with('.') {
                issues.push(Issue::new(
                    key("domain"),
                    format!("{:?} is not a domain name", k.domain),
                ));
            }
            if !names::is_hostname(&k.selector) || k.selector.ends_with('.') {
                issues.push(Issue::new(
                    key("selector"),
                    format!("{:?} is not a DNS label (or labels)", k.selector),
                ));
            }
            let dup = self.keys[..i].iter().any(|o| {
                o.domain.eq_ignore_ascii_case(&k.domain)
                    && o.selector.eq_ignore_ascii_case(&k.selector)
            });
            if dup {
                issues.push(Issue::new(
                    key("selector"),
                    format!("domain {:?} has selector {:?} twice", k.domain, k.selector),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizations_round_trip_and_shorthands_are_refused() {
        for s in [
            "relaxed/relaxed",
            "relaxed/simple",
            "simple/relaxed",
            "simple/simple",
        ] {
            assert_eq!(s.parse::<Canonicalization>().unwrap().to_string(), s);
        }
        for bad in ["relaxed", "simple", "relaxed/", "Relaxed/Relaxed", ""] {
            assert!(bad.parse::<Canonicalization>().is_err(), "{bad}");
        }
    }

    #[test]
    fn oversigned_fields_are_listed_once_more() {
        let c = DkimConfig {
            headers: vec!["From".into(), "Subject".into()],
            oversign: vec!["from".into(), "X-Campaign".into()],
            ..DkimConfig::default()
        };
        assert_eq!(
            c.signed_headers(),
            ["From", "Subject", "from", "X-Campaign", "X-Campaign"]
        );
    }
}
