//! Egress sources (a local address and the EHLO name that goes with it)
//! and pools (weighted groups of sources). A pool hands out its sources by
//! smooth weighted round robin, skipping any source marked unusable (its
//! address could not be bound), so traffic flows through the others and a
//! local fault never bounces a message, and any warming source whose day's
//! share (for the destination's provider) is used up, so that the pool's
//! other sources take the overflow. A source several nodes send from
//! (`shared`) counts its warm-up share fleet-wide, through the fleet.
//!
//! A source may leave through an egress proxy ([`proxy`]): its `address`
//! is then the public IP the proxy sends from, and a proxy that cannot be
//! reached or refuses makes the source unusable like an address that
//! cannot be bound.

pub mod proxy;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, ProxyUrl, SourceConfig};
use crate::shaping::shared::{Fleet, SharedCount, Take};

/// How long a source whose address cannot be bound (or whose proxy
/// fails) is left out.
pub const UNUSABLE_FOR: Duration = Duration::from_secs(60);

/// The reasons a proxy failure is counted by, in
/// [`Source::proxy_failures`] order.
pub const PROXY_REASONS: [&str; 4] = ["unreachable", "slow", "refused", "destination"];

/// One address mail leaves from.
#[derive(Debug)]
pub struct Source {
    /// Its name in the config.
    pub name: Arc<str>,
    /// The address mail leaves from: bound here, or, with a proxy, the
    /// public address the proxy sends from (else the kernel chooses).
    pub address: Option<IpAddr>,
    /// The egress proxy its connections go through, if any.
    pub proxy: Option<ProxyUrl>,
    /// The name sent in EHLO.
    pub ehlo: String,
    /// Until when it rests, and why.
    unusable: Mutex<Option<(Instant, Arc<str>)>>,
    /// Its proxy's failures since start, by [`proxy::ProxyError::reason`].
    proxy_failures: [std::sync::atomic::AtomicU64; 4],
    /// Its warm-up schedule, if it is warming.
    warmup: Option<Warmup>,
}

/// A warm-up schedule and the day's counts.
#[derive(Debug)]
struct Warmup {
    start_day: i64,
    daily: Vec<u32>,
    per_provider: bool,
    /// (day, sent that day per provider; `None` is every other site).
    used: Mutex<(i64, DayCounts)>,
    /// For a shared source in a fleet: the fleet-wide counts of the day
    /// (the source's name, the fleet, the counts by provider).
    fleet: Option<FleetWarmup>,
}

/// A shared source's warm-up in a fleet: its name, the fleet, the day's
/// fleet-wide counts.
type FleetWarmup = (Arc<str>, Arc<dyn Fleet>, Mutex<SharedCounts>);

/// The fleet-wide counts of a day, per provider.
type SharedCounts = (i64, HashMap<Option<Arc<str>>, Arc<SharedCount>>);

/// Messages sent in one day, per provider (`None`: every other site).
type DayCounts = HashMap<Option<Arc<str>>, u32>;

/// A source's warm-up counts as kept in the spool ("" for every other
/// site).
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptCounts {
    day: i64,
    counts: std::collections::BTreeMap<String, u32>,
}

impl Warmup {
    fn new(
        c: &crate::config::WarmupConfig,
        fleet: Option<(Arc<str>, Arc<dyn Fleet>)>,
    ) -> Option<Self> {
        Some(Self {
            start_day: crate::clock::parse_date(&c.start)?,
            daily: c.daily.clone(),
            per_provider: c.per_provider,
            used: Mutex::new((i64::MIN, HashMap::new())),
            fleet: fleet.map(|(n, f)| (n, f, Mutex::new((i64::MIN, HashMap::new())))),
        })
    }

    /// The fleet-wide count of `key` on `day`, when the source is shared
    /// and the fleet's store answers.
    fn shared(&self, day: i64, key: &Option<Arc<str>>) -> Option<Arc<SharedCount>> {
        let (name, fleet, counts) = self.fleet.as_ref()?;
        if !fleet.up() {
            return None;
        }
        let mut c = lock(counts);
        if c.0 != day {
            *c = (day, HashMap::new());
        }
        let count = c.1.entry(key.clone()).or_insert_with(|| {
            let provider = key.as_deref().unwrap_or("*");
            SharedCount::new(format!("warm:{name}:{provider}:{day}"), fleet.clone())
        });
        Some(count.clone())
    }

    /// The day's cap, or `None` once the schedule is over.
    fn cap(&self, day: i64) -> Option<u32> {
        let n = usize::try_from(day - self.start_day).unwrap_or(0);
        self.daily.get(n).copied()
    }

    /// Counts one message to `provider` on `day` if the day's share
    /// allows it: this node's count, or for a shared source the fleet's
    /// (while its store does not answer, this node's share of the cap).
    fn take(&self, day: i64, provider: Option<&Arc<str>>) -> Take {
        let Some(cap) = self.cap(day) else {
            return Take::Taken;
        };
        let key = provider.filter(|_| self.per_provider).cloned();
        let shared = self.shared(day, &key);
        let local_cap = match &self.fleet {
            Some((_, fleet, _)) if shared.is_none() => cap.div_ceil(fleet.nodes().max(1)),
            _ => cap,
        };
        let mut used = lock(&self.used);
        if used.0 != day {
            *used = (day, HashMap::new());
        }
        let n = used.1.entry(key).or_insert(0);
        let take = match shared {
            Some(count) => count.take(cap),
            None if *n >= local_cap => Take::Full,
            None => Take::Taken,
        };
        if take == Take::Taken {
            *n += 1;
        }
        take
    }
}

impl Source {
    /// True if this source can reach `remote` (same address family, or no
    /// fixed address).
    pub fn reaches(&self, remote: SocketAddr) -> bool {
        self.address.is_none_or(|a| a.is_ipv4() == remote.is_ipv4())
    }

    /// True unless the source is resting after a bind or proxy failure.
    pub fn usable(&self, now: Instant) -> bool {
        lock(&self.unusable).as_ref().is_none_or(|(t, _)| *t <= now)
    }

    /// When a rest after a bind or proxy failure ends, and why it began,
    /// if the source had one.
    pub fn unusable(&self) -> Option<(Instant, Arc<str>)> {
        lock(&self.unusable).clone()
    }

    /// Counts a failure of its proxy.
    pub fn proxy_failed(&self, e: &proxy::ProxyError) {
        let i = PROXY_REASONS
            .iter()
            .position(|r| *r == e.reason())
            .unwrap_or(0);
        self.proxy_failures[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Its proxy's failures since start, by reason (see [`PROXY_REASONS`]).
    pub fn proxy_failures(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.proxy_failures[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// True when it has a warm-up schedule.
    pub fn warming(&self) -> bool {
        self.warmup.is_some()
    }

    /// Takes one message of the day's warm-up share for `provider`: taken,
    /// used up, or (for a shared source) wait for the fleet's answer. A
    /// source without a schedule always has room.
    pub fn warmup_take(&self, day: i64, provider: Option<&Arc<str>>) -> Take {
        match &self.warmup {
            Some(w) => w.take(day, provider),
            None => Take::Taken,
        }
    }

    /// Leaves the source out until `now + UNUSABLE_FOR`, for `why`.
    pub fn mark_unusable(&self, now: Instant, why: &str) {
        tracing::warn!(source = %self.name, address = ?self.address, proxy = ?self.proxy, reason = why, "source unusable for {}s; using the pool's other sources", UNUSABLE_FOR.as_secs());
        *lock(&self.unusable) = Some((now + UNUSABLE_FOR, why.into()));
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

/// What [`Pool::pick_for`] found.
#[derive(Debug)]
pub enum Picked {
    /// This source sends it.
    Source(Arc<Source>),
    /// No source can be bound now.
    NoneUsable,
    /// Every usable source is warming and has used the day's share.
    WarmupFull,
}

impl Pool {
    /// True when one of its sources has a warm-up schedule.
    pub fn warming(&self) -> bool {
        self.members.iter().any(|(s, _)| s.warmup.is_some())
    }

    /// The next source (smooth weighted round robin over the usable ones),
    /// or `None` if none is usable.
    pub fn pick(&self, now: Instant) -> Option<Arc<Source>> {
        self.pick_among(now, &[])
    }

    /// The next source for a message to `provider` on `day`: like
    /// [`Pool::pick`], passing over warming sources whose day's share is
    /// used up (the message is counted in the chosen source's share).
    pub fn pick_for(&self, now: Instant, day: i64, provider: Option<&Arc<str>>) -> Picked {
        let mut full: Vec<&str> = Vec::new();
        for _ in 0..=self.members.len() {
            let Some(s) = self.pick_among(now, &full) else {
                break;
            };
            if s.warmup_take(day, provider) == Take::Taken {
                return Picked::Source(s);
            }
            full.push(
                &self
                    .members
                    .iter()
                    .find(|(m, _)| Arc::ptr_eq(m, &s))
                    .expect("a member")
                    .0
                    .name,
            );
        }
        match full.is_empty() {
            true => Picked::NoneUsable,
            false => Picked::WarmupFull,
        }
    }

    /// The next usable source not named in `skip`.
    fn pick_among(&self, now: Instant, skip: &[&str]) -> Option<Arc<Source>> {
        self.pick_where(|s| s.usable(now) && !skip.contains(&&*s.name), |_| true)
            .ok()
    }

    /// The next source by weight (smooth weighted round robin) among
    /// those `ok` accepts, if `take` takes it: otherwise nothing changes
    /// (its turn stays its turn) and `Err` names it. This is how the
    /// scheduler keeps the weights when a source's path is full: the mail
    /// waits for that path rather than going to another.
    pub fn pick_where(
        &self,
        ok: impl Fn(&Source) -> bool,
        take: impl FnOnce(&Arc<Source>) -> bool,
    ) -> Result<Arc<Source>, Option<Arc<Source>>> {
        let mut current = lock(&self.current);
        let mut next = current.clone();
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, (s, weight)) in self.members.iter().enumerate() {
            if !ok(s) {
                continue;
            }
            total += weight;
            next[i] += weight;
            if best.is_none_or(|b| next[i] > next[b]) {
                best = Some(i);
            }
        }
        let b = best.ok_or(None)?;
        let source = self.members[b].0.clone();
        if !take(&source) {
            return Err(Some(source));
        }
        next[b] -= total;
        *current = next;
        Ok(source)
    }

    /// The pool's sources.
    pub fn sources(&self) -> impl Iterator<Item = &Arc<Source>> {
        self.members.iter().map(|(s, _)| s)
    }
}

/// All sources and pools.
#[derive(Debug)]
pub struct Egress {
    /// The fleet, for shared sources' warm-up counts.
    fleet: Option<Arc<dyn Fleet>>,
    pools: HashMap<String, Arc<Pool>>,
    default_pool: Arc<Pool>,
    /// Each source with the config it was built from.
    sources: HashMap<String, (SourceConfig, Arc<Source>)>,
}

impl Egress {
    /// From a validated config.
    pub fn new(config: &Config) -> Self {
        Self::build(config, None, None)
    }

    /// From a validated config, in a fleet: shared sources count their
    /// warm-up share fleet-wide.
    pub fn in_fleet(config: &Config, fleet: Option<Arc<dyn Fleet>>) -> Self {
        Self::build(config, None, fleet)
    }

    /// From a reloaded config: a source whose settings did not change is
    /// kept as it is (its warm-up counts and its rest after a bind
    /// failure go on); pools are rebuilt, so a source taken out of a pool
    /// gets no new mail from it.
    pub fn reloaded(&self, config: &Config) -> Self {
        Self::build(config, Some(self), self.fleet.clone())
    }

    fn build(config: &Config, previous: Option<&Egress>, fleet: Option<Arc<dyn Fleet>>) -> Self {
        let sources: HashMap<String, (SourceConfig, Arc<Source>)> = config
            .sources
            .iter()
            .map(|s| {
                let ehlo = s
                    .ehlo
                    .clone()
                    .unwrap_or_else(|| config.server.hostname.clone());
                let kept = previous
                    .and_then(|p| p.sources.get(&s.name))
                    .filter(|(c, src)| c == s && src.ehlo == ehlo)
                    .map(|(_, src)| src.clone());
                let src = kept.unwrap_or_else(|| {
                    Arc::new(Source {
                        name: s.name.as_str().into(),
                        address: s.address,
                        proxy: s.proxy.clone(),
                        ehlo,
                        unusable: Mutex::new(None),
                        proxy_failures: Default::default(),
                        warmup: s.warmup.as_ref().and_then(|w| {
                            let shared = fleet.clone().filter(|_| s.is_shared());
                            Warmup::new(w, shared.map(|f| (Arc::from(s.name.as_str()), f)))
                        }),
                    })
                });
                (s.name.clone(), (s.clone(), src))
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
                            .map(|(_, s)| (s.clone(), i64::from(m.weight)))
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
            fleet,
            pools,
            default_pool,
            sources,
        }
    }

    /// The pool named `name`, or the default pool.
    pub fn pool(&self, name: Option<&str>) -> Arc<Pool> {
        name.and_then(|n| self.pools.get(n))
            .cloned()
            .unwrap_or_else(|| self.default_pool.clone())
    }

    /// Every source, and whether the fleet shares it.
    pub fn all_sources(&self) -> impl Iterator<Item = (&Arc<Source>, bool)> {
        self.sources.values().map(|(c, s)| (s, c.is_shared()))
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<Arc<Source>> {
        self.sources.get(name).map(|(_, s)| s.clone())
    }

    /// The warm-up counts of the day, per warming source (to be kept, and
    /// given back to [`Egress::restore_warmup`] after a restart).
    pub fn warmup_counts(&self) -> Vec<u8> {
        let mut all: std::collections::BTreeMap<&str, KeptCounts> = Default::default();
        for (name, (_, source)) in &self.sources {
            if let Some(w) = &source.warmup {
                let used = lock(&w.used);
                let counts = used
                    .1
                    .iter()
                    .map(|(p, n)| (p.as_deref().unwrap_or("").to_owned(), *n))
                    .collect();
                all.insert(
                    name,
                    KeptCounts {
                        day: used.0,
                        counts,
                    },
                );
            }
        }
        serde_json::to_vec(&all).unwrap_or_default()
    }

    /// Puts back the warm-up counts kept before a restart (those of
    /// another day are not): a warming source does not send its day's
    /// share twice because Tern restarted.
    pub fn restore_warmup(&self, kept: &[u8], today: i64) {
        let Ok(all) = serde_json::from_slice::<HashMap<String, KeptCounts>>(kept) else {
            tracing::error!("the warm-up counts kept in the spool are unreadable; counting from 0");
            return;
        };
        for (name, k) in all.into_iter().filter(|(_, k)| k.day == today) {
            let Some(w) = self.sources.get(&name).and_then(|(_, s)| s.warmup.as_ref()) else {
                continue;
            };
            let counts = k
                .counts
                .into_iter()
                .map(|(p, n)| ((!p.is_empty()).then(|| Arc::from(p.as_str())), n))
                .collect();
            *lock(&w.used) = (k.day, counts);
        }
    }

    /// The config of the source named `key`, or else of the one whose
    /// address (behind a proxy, the public one) is `key`.
    pub fn find_source(&self, key: &str) -> Option<&SourceConfig> {
        let ip = key.parse::<IpAddr>().ok();
        self.sources.get(key).map(|(c, _)| c).or_else(|| {
            let ip = ip?;
            (self.sources.values())
                .map(|(c, _)| c)
                .find(|c| c.address == Some(ip))
        })
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
        a.mark_unusable(Instant::now(), "test");
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
            s.mark_unusable(Instant::now(), "test");
        }
        assert!(pool.pick(Instant::now()).is_none());
    }
}
