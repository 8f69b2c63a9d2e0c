//! AUTH users: password verification and the per-address limit on failed
//! attempts.
//!
//! Passwords are checked against argon2 hashes from the config. Argon2 is
//! deliberately slow (tens of milliseconds), and applications reconnect
//! often, so after a successful check the password's HMAC (random key, per
//! process) is remembered per user: the next AUTH with the same password
//! costs a microsecond. Nothing here logs or keeps a password in clear.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use ring::hmac;
use tokio::time::Instant;

use crate::config::AuthConfig;
use crate::shaping::rate::Gcra;

/// Forget idle failure records beyond this many addresses.
const MAX_TRACKED: usize = 100_000;

/// Users, their verification cache, and failure limits.
pub struct Credentials {
    users: HashMap<String, String>,
    key: hmac::Key,
    verified: Mutex<HashMap<String, hmac::Tag>>,
    failures: Mutex<HashMap<IpAddr, Option<Instant>>>,
    limit: Gcra,
    /// Failed attempts allowed in one session.
    pub max_failures_per_session: u32,
}

impl Credentials {
    /// From the `[auth]` section (already validated).
    pub fn new(cfg: &AuthConfig) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the OS random source works");
        Self {
            users: cfg
                .users
                .iter()
                .map(|u| (u.name.clone(), u.password_hash.clone()))
                .collect(),
            key,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            limit: Gcra::new(cfg.failure_rate),
            max_failures_per_session: cfg.max_failures_per_session,
        }
    }

    /// True if any user is configured (AUTH is offered only then).
    pub fn any(&self) -> bool {
        !self.users.is_empty()
    }

    /// True if `user` and `password` match. Blocking (argon2) unless this
    /// password was verified for this user before: run it off the reactor.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        if let Some(known) = lock(&self.verified).get(user)
            && hmac::verify(&self.key, password.as_bytes(), known.as_ref()).is_ok()
        {
            return true; // constant-time comparison of the HMACs
        }
        let tag = hmac::sign(&self.key, password.as_bytes());
        let ok = PasswordHash::new(hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        if ok {
            lock(&self.verified).insert(user.to_owned(), tag);
        }
        ok
    }

    /// True while `ip` may still try to authenticate.
    pub fn may_try(&self, ip: IpAddr, now: Instant) -> bool {
        let failures = lock(&self.failures);
        self.limit.allows(failures.get(&ip).copied().flatten(), now)
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, tat| !self.limit.is_idle(*tat, now));
        }
        self.limit.record(failures.entry(ip).or_insert(None), now);
    }
}

/// Hashes a password for the config (`tern auth hash-password`).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn creds() -> Credentials {
        let mut cfg = AuthConfig {
            failure_rate: "1/h,burst=2".parse().unwrap(),
            ..AuthConfig::default()
        };
        cfg.users.push(UserConfig {
            name: "shop".into(),
            password_hash: hash_password("s3cret").unwrap(),
            ..UserConfig::default()
        });
        Credentials::new(&cfg)
    }

    #[test]
    fn verifies_and_caches_only_the_right_password() {
        let c = creds();
        assert!(!c.verify("shop", "wrong"));
        assert!(!c.verify("nobody", "s3cret"));
        assert!(c.verify("shop", "s3cret"));
        assert!(c.verify("shop", "s3cret"), "cached path");
        assert!(
            !c.verify("shop", "s3cret2"),
            "the cache holds one password, not a prefix"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_limited_per_address() {
        let c = creds();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let now = Instant::now();
        assert!(c.may_try(a, now));
        c.failed(a, now);
        c.failed(a, now);
        assert!(!c.may_try(a, now));
        assert!(c.may_try(b, now), "other addresses are not affected");
        assert!(c.may_try(a, now + std::time::Duration::from_secs(3600)));
    }
}
