//! Egress sources (a local address and the EHLO name that goes with it)
//! and pools (weighted groups of sources). A pool hands out its sources by
//! smooth weighted round robin, skipping any source marked unusable (its
//! address could not be bound), so traffic flows through the others and a
//! local fault never bounces a message.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// How long a source whose address cannot be bound is left out.
pub const UNUSABLE_FOR: Duration = Duration::from_secs(60);

/// One local address mail leaves from.
#[derive(Debug)]
pub struct Source {
    /// Its name in the config.
    pub name: Arc<str>,
    /// The address to bind, if any (else the kernel chooses).
    pub address: Option<IpAddr>,
    /// The name sent in EHLO.
    pub ehlo: String,
    unusable_until: Mutex<Option<Instant>>,
}

impl Source {
    /// True if this source can reach `remote` (same address family, or no
    /// fixed address).
    pub fn reaches(&self, remote: SocketAddr) -> bool {
        self.address.is_none_or(|a| a.is_ipv4() == remote.is_ipv4())
    }

    /// True unless the source is resting after a bind failure.
    pub fn usable(&self, now: Instant) -> bool {
        lock(&self.unusable_until).is_none_or(|t| t <= now)
    }

    /// Leaves the source out until `now + UNUSABLE_FOR`.
    pub fn mark_unusable(&self, now: Instant) {
        tracing::warn!(source = %self.name, address = ?self.address, "source address cannot be bound; using the pool's other sources");
        *lock(&self.unusable_until) = Some(now + UNUSABLE_FOR);
    }
}

/// A weighted group of sources.
#[derive(Debug)]
pub struct Pool {
    /// Its name.
    pub name: Arc<str>,
    members: Vec<(Arc<Source>, i64)>,
    /// Smooth weighted round robin state: the current weight per member.
    current: Mutex<Vec<i64>>,
}

impl Pool {
    /// The next source (smooth weighted round robin over the usable ones),
    /// or `None` if none is usable.
    pub fn pick(&self, now: Instant) -> Option<Arc<Source>> {
        let mut current = lock(&self.current);
        let usable: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].0.usable(now))
            .collect();
        let total: i64 = usable.iter().map(|i| self.members[*i].1).sum();
        let mut best: Option<usize> = None;
        for &i in &usable {
            current[i] += self.members[i].1;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(self.members[b].0.clone())
    }

    /// The pool's sources.
    pub fn sources(&self) -> impl Iterator<Item = &Arc<Source>> {
        self.members.iter().map(|(s, _)| s)
    }
}

/// All sources and pools.
#[derive(Debug)]
pub struct Egress {
    pools: HashMap<String, Arc<Pool>>,
    default_pool: Arc<Pool>,
}

impl Egress {
    /// From a validated config.
    pub fn new(config: &Config) -> Self {
        let sources: HashMap<&str, Arc<Source>> = config
            .sources
            .iter()
            .map(|s| {
                let src = Source {
                    name: s.name.as_str().into(),
                    address: s.address,
                    ehlo: s
                        .ehlo
                        .clone()
                        .unwrap_or_else(|| config.server.hostname.clone()),
                    unusable_until: Mutex::new(None),
                };
                (s.name.as_str(), Arc::new(src))
            })
            .collect();
        let pools: HashMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                let members: Vec<(Arc<Source>, i64)> = p
                    .sources
                    .iter()
                    .filter_map(|m| {
                        sources
                            .get(m.source.as_str())
                            .map(|s| (s.clone(), i64::from(m.weight)))
                    })
                    .collect();
                let current = Mutex::new(vec![0; members.len()]);
                (
                    p.name.clone(),
                    Arc::new(Pool {
                        name: p.name.as_str().into(),
                        members,
                        current,
                    }),
                )
            })
            .collect();
        let default_pool = pools
            .get(&config.delivery.default_pool)
            .cloned()
            .unwrap_or_else(|| {
                pools
                    .values()
                    .next()
                    .cloned()
                    .expect("config validation requires a pool")
            });
        Self {
            pools,
            default_pool,
        }
    }

    /// The pool named `name`, or the default pool.
    pub fn pool(&self, name: Option<&str>) -> Arc<Pool> {
        name.and_then(|n| self.pools.get(n))
            .cloned()
            .unwrap_or_else(|| self.default_pool.clone())
    }

    /// True if a pool is named `name`.
    pub fn has_pool(&self, name: &str) -> bool {
        self.pools.contains_key(name)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolConfig, PoolMember, SourceConfig};

    fn egress(weights: &[(&str, u32)]) -> Egress {
        let sources = weights
            .iter()
            .map(|(n, _)| SourceConfig {
                name: (*n).into(),
                ..Default::default()
            })
            .collect();
        let pools = vec![PoolConfig {
            name: "default".into(),
            sources: weights
                .iter()
                .map(|(n, w)| PoolMember {
                    source: (*n).into(),
                    weight: *w,
                })
                .collect(),
        }];
        Egress::new(&Config {
            sources,
            pools,
            ..Config::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn weights_are_respected_and_interleaved() {
        let e = egress(&[("a", 5), ("b", 1), ("c", 1)]);
        let pool = e.pool(None);
        let picks: Vec<String> = (0..7)
            .map(|_| pool.pick(Instant::now()).unwrap().name.to_string())
            .collect();
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 5);
        assert_eq!(
            picks,
            ["a", "a", "b", "a", "c", "a", "a"],
            "smooth: the heavy source does not come in one run"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unusable_source_is_skipped_until_it_rests_enough() {
        let e = egress(&[("a", 1), ("b", 1)]);
        let pool = e.pool(Some("nonexistent"));
        let a = pool.sources().find(|s| &*s.name == "a").unwrap().clone();
        a.mark_unusable(Instant::now());
        assert!((0..10).all(|_| &*pool.pick(Instant::now()).unwrap().name == "b"));
        tokio::time::advance(UNUSABLE_FOR).await;
        let picks: Vec<_> = (0..4)
            .map(|_| pool.pick(Instant::now()).unwrap().name.to_string())
            .collect();
        assert!(picks.contains(&"a".to_owned()));
        b_only_when_all_unusable(&pool);
    }

    fn b_only_when_all_unusable(pool: &Pool) {
        for s in pool.sources() {
            s.mark_unusable(Instant::now());
        }
        assert!(pool.pick(Instant::now()).is_none());
    }
}
