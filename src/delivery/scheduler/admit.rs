//! Admission: a due message becomes jobs, one per recipient domain, each
//! routed to its site and put in its destination's scheduled queue.
//!
//! Routes are kept for a short while per domain (the resolver keeps the
//! DNS answers by their TTL; this saves building the route again for
//! every message), and a domain being looked up gathers the jobs that
//! arrive meanwhile, so admission never waits for DNS: a domain whose name
//! servers time out delays only its own mail.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use queue::{MessageInfo, RecipientState};
use tokio::time::Instant;

use super::super::Delivery;
use super::super::job::{Job, Rcpts};
use super::super::outcome::{self, Message, Outcome, Verdict};
use super::Dest;
use crate::dns::route::{Route, RouteError};
use crate::message::MessageMeta;
use crate::smtp::client::local_reply;

/// How long a route is used before it is built again.
const ROUTE_LIFE: Duration = Duration::from_secs(60);
/// How long a failed lookup's answer stands (the resolver keeps the DNS
/// answer itself by its TTL).
const FAILURE_LIFE: Duration = Duration::from_secs(5);
/// Routes kept at most (then the oldest go).
const MAX_ROUTES: usize = 100_000;

/// A job before its domain is routed.
pub(super) struct Seed {
    id: queue::MessageId,
    handout: u32,
    rcpts: Rcpts,
    tenant: Option<Arc<str>>,
    priority: u8,
    arrival: queue::Timestamp,
    size: u32,
    pool: Arc<str>,
}

/// A routed domain: its name (shared by its jobs), the route or why
/// there is none, and the key of its paths.
#[derive(Clone)]
struct Routed {
    domain: Arc<str>,
    route: Result<(Arc<Route>, Arc<str>), RouteError>,
}

enum Entry {
    Ready(Routed, Instant),
    /// Being looked up: the jobs waiting for the answer.
    Pending(Vec<Seed>),
}

/// Routes by domain (and relay hosts, for rebound mail), and the interned
/// names jobs share.
#[derive(Default)]
pub(crate) struct Routes {
    entries: Mutex<HashMap<String, Entry>>,
    names: Mutex<std::collections::HashSet<Arc<str>>>,
}

impl Routes {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One shared copy of `name`.
    fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.get(name) {
            return n.clone();
        }
        if names.len() >= MAX_ROUTES {
            names.clear();
        }
        let n: Arc<str> = name.into();
        names.insert(n.clone());
        n
    }

    /// Forgets routes past their life.
    pub fn prune(&self) {
        let now = Instant::now();
        self.lock().retain(|_, e| match e {
            Entry::Ready(_, until) => *until > now,
            Entry::Pending(_) => true,
        });
    }

    /// Forgets every route (a reload may change them).
    pub fn clear(&self) {
        self.lock().retain(|_, e| matches!(e, Entry::Pending(_)));
    }
}

/// A message's recipients to admit: its due ones, by domain.
fn by_domain(
    info: &MessageInfo,
    only: Option<&Rcpts>,
    now: queue::Timestamp,
) -> BTreeMap<String, Rcpts> {
    let mut groups: BTreeMap<String, Rcpts> = BTreeMap::new();
    for (i, (r, s)) in info
        .envelope
        .recipients
        .iter()
        .zip(&info.statuses)
        .enumerate()
    {
        let i = i as u32;
        let wanted = match only {
            Some(rcpts) => rcpts.contains(&i),
            None => s.next_attempt <= now,
        };
        if s.state == RecipientState::Pending && wanted {
            groups
                .entry(crate::config::names::to_ascii(r.domain()))
                .or_default()
                .push(i);
        }
    }
    groups
}

impl Delivery {
    /// Admits a batch of messages just handed out by the queue.
    pub(super) fn admit(self: &Arc<Self>, batch: Vec<MessageInfo>) {
        let mut touched: Vec<Arc<Dest>> = Vec::new();
        for info in batch {
            self.admit_one(info, None, &mut touched);
        }
        for d in touched {
            self.pump(&d);
        }
    }

    /// Admits some recipients of a held message again (a held retry).
    pub(super) fn admit_some(self: &Arc<Self>, info: MessageInfo, rcpts: Option<&Rcpts>) {
        let mut touched = Vec::new();
        self.admit_one(info, rcpts, &mut touched);
        for d in touched {
            self.pump(&d);
        }
    }

    fn admit_one(
        self: &Arc<Self>,
        info: MessageInfo,
        only: Option<&Rcpts>,
        touched: &mut Vec<Arc<Dest>>,
    ) {
        let now = self.clock.now();
        let groups = by_domain(&info, only, now);
        if groups.is_empty() {
            if only.is_none() {
                self.queue.release(info.id); // nothing due after all
            }
            return;
        }
        let meta = MessageMeta::decode(&info.envelope.meta);
        let default_pool = self.default_pool();
        let rebind = self.settings.rebinds.rule_for(&info, &meta, &default_pool);
        let (to_pool, via) = rebind.map_or((None, Vec::new()), |r| (r.to_pool, r.via));
        let pool_name = to_pool.as_deref().or(meta.pool.as_deref());
        let pool = self
            .scheduler
            .routes
            .intern(&self.egress.get().pool(pool_name).name);
        if now.saturating_since(info.arrival) >= self.settings.max_age {
            let outcomes = groups
                .values()
                .flatten()
                .map(|i| outcome::expired(&info, *i))
                .collect();
            self.spawn_settle((info.id, info.handout), pool, outcomes);
            return;
        }
        if only.is_none() {
            self.trackers.start(info.id, info.handout, groups.len());
        }
        let tenant = meta
            .tenant
            .as_deref()
            .map(|t| self.scheduler.routes.intern(t));
        let size = u32::try_from(info.body_len).unwrap_or(u32::MAX);
        for (domain, rcpts) in groups {
            let seed = Seed {
                id: info.id,
                handout: info.handout,
                rcpts,
                tenant: tenant.clone(),
                priority: info.priority,
                arrival: info.arrival,
                size,
                pool: pool.clone(),
            };
            self.route_seed(domain, &via, seed, touched);
        }
    }

    /// Routes a seed's domain: at once from a known route, else by a
    /// lookup (started unless one is under way) that places it later.
    fn route_seed(
        self: &Arc<Self>,
        domain: String,
        via: &[String],
        seed: Seed,
        touched: &mut Vec<Arc<Dest>>,
    ) {
        let key = match via.is_empty() {
            true => domain.clone(),
            false => format!("{domain}|via {}", via.join(",")),
        };
        let now = Instant::now();
        let known = {
            let mut routes = self.scheduler.routes.lock();
            match routes.get_mut(&key) {
                Some(Entry::Ready(r, until)) if *until > now => Ok((r.clone(), seed)),
                Some(Entry::Pending(waiting)) => {
                    waiting.push(seed);
                    return;
                }
                _ => {
                    if routes.len() >= MAX_ROUTES {
                        routes.retain(|_, e| matches!(e, Entry::Pending(_)));
                    }
                    routes.insert(key.clone(), Entry::Pending(Vec::new()));
                    Err(seed)
                }
            }
        };
        match known {
            Ok((r, seed)) => self.place(&r, seed, touched),
            Err(seed) => {
                if let Some(Entry::Pending(w)) = self.scheduler.routes.lock().get_mut(&key) {
                    w.push(seed);
                }
                let svc = self.clone();
                let via = via.to_vec();
                tokio::spawn(async move { svc.look_up(key, domain, via).await });
            }
        }
    }

    /// Looks a domain up, then places the jobs that waited for it.
    async fn look_up(self: Arc<Self>, key: String, domain: String, via: Vec<String>) {
        let router = self.router.get();
        let route = tokio::select! {
            r = async {
                match via.is_empty() {
                    true => self.tls_route(&domain).await,
                    false => router.via(&via).await,
                }
            } => r,
            () = self.stopped() => return,
        };
        let domain = self.scheduler.routes.intern(&domain);
        let routed = Routed {
            route: route.map(|r| {
                let key = self.path_key(&r.site, &domain);
                self.remember_site(&domain, &r.site);
                (Arc::new(r), key)
            }),
            domain,
        };
        let life = match routed.route.is_ok() {
            true => ROUTE_LIFE,
            false => FAILURE_LIFE,
        };
        let waiting = {
            let mut routes = self.scheduler.routes.lock();
            let entry = Entry::Ready(routed.clone(), Instant::now() + life);
            match routes.insert(key, entry) {
                Some(Entry::Pending(w)) => w,
                _ => Vec::new(),
            }
        };
        let mut touched = Vec::new();
        for seed in waiting {
            self.place(&routed, seed, &mut touched);
        }
        for d in touched {
            self.pump(&d);
        }
    }

    /// The key of the paths to `site` for mail to `domain`: the site, or
    /// `site|domain` for a domain shaped apart.
    fn path_key(&self, site: &Arc<str>, domain: &str) -> Arc<str> {
        match self.settings.shaper.shapes_domain(domain) {
            true => self.scheduler.routes.intern(&format!("{site}|{domain}")),
            false => site.clone(),
        }
    }

    /// Puts a routed seed in its destination's queue, or settles it when
    /// its domain cannot be routed (a failure or a deferral: DNS was
    /// asked, so it counts as an attempt).
    fn place(self: &Arc<Self>, routed: &Routed, seed: Seed, touched: &mut Vec<Arc<Dest>>) {
        match &routed.route {
            Ok((route, key)) => {
                let dest = self
                    .scheduler
                    .dest(&seed.pool, &route.site, key, &routed.domain);
                let job = Job {
                    id: seed.id,
                    handout: seed.handout,
                    rcpts: seed.rcpts,
                    domain: routed.domain.clone(),
                    route: route.clone(),
                    tenant: seed.tenant,
                    priority: seed.priority,
                    arrival: seed.arrival,
                    size: seed.size,
                    dest: dest.clone(),
                };
                dest.lock().push(job);
                if !touched.iter().any(|d| Arc::ptr_eq(d, &dest)) {
                    touched.push(dest);
                }
            }
            Err(e) => {
                let (verdict, reply) = match e {
                    RouteError::Permanent { code, esc, text } => {
                        (Verdict::Failed, local_reply(*code, *esc, text.clone()))
                    }
                    RouteError::Transient { esc, text } => {
                        (Verdict::Deferred, local_reply(451, *esc, text.clone()))
                    }
                };
                let outcomes = Outcome::all(&seed.rcpts, verdict, &reply);
                self.spawn_settle((seed.id, seed.handout), seed.pool, outcomes);
            }
        }
    }

    /// Settles outcomes decided without a send (routing, expiry), on a
    /// task of their own, if the message is still held for them.
    pub(super) fn spawn_settle(
        self: &Arc<Self>,
        (id, handout): (queue::MessageId, u32),
        pool: Arc<str>,
        outcomes: Vec<Outcome>,
    ) {
        let Some(info) = self.begin_id(id, handout) else {
            return;
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let msg = Message::new(info, pool);
            svc.settle(handout, msg, outcomes).await;
        });
    }

    /// Expires jobs that waited past `max_age` (their recipients bounce
    /// with the last error they had).
    pub(super) fn expire(self: &Arc<Self>, jobs: Vec<Job>) {
        for job in jobs {
            let Some(info) = self.begin(&job) else {
                continue;
            };
            let outcomes = job
                .rcpts
                .iter()
                .map(|i| outcome::expired(&info, *i))
                .collect();
            let svc = self.clone();
            let pool = job.dest.pool.clone();
            let handout = job.handout;
            drop(job);
            tokio::spawn(async move {
                svc.settle(handout, Message::new(info, pool), outcomes)
                    .await;
            });
        }
    }
}
