//! Delivery: takes due messages from the queue and sends each recipient to
//! its domain's MX hosts from a source of the message's pool.
//!
//! - The scheduler loop hands due messages (at most `max_in_flight` at
//!   once) to an `attempt` each; it sleeps until the next due time, a new
//!   message, or room.
//! - An attempt groups the due recipients by domain into jobs, routes each
//!   domain to a site (MX rollup), picks a source from the pool, and hands
//!   the job to the egress path (source, site) in `path`, whose connection
//!   workers reuse connections and pipeline transactions.
//! - Each job's outcomes are recorded durably as it ends (so a restart
//!   resends only unrecorded recipients); deferrals get the next retry time
//!   from [`retry`]; permanent failures and expiries produce one bounce per
//!   message ([`dsn`]), queued before the failures are recorded. Every
//!   outcome is a line in the delivery log.

mod attempt;
pub mod dsn;
pub mod filter;
mod lanes;
mod path;
pub mod rebind;
pub mod retry;
mod shaped;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::Queue;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{BounceReturn, ClientTimeouts, Config};
use crate::dns::route::Router;
use crate::egress::Egress;
use crate::message::Ret;
use crate::log::DeliveryLog;
use crate::shaping::Shaper;
use crate::swap::Swap;

use path::Path;

/// Delivery settings from `[delivery]` and `[server]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This MTA's name (bounces).
    pub hostname: String,
    /// Per-path limits and the limits paths share (`[shaping]` over the
    /// `[delivery]` defaults).
    pub shaper: Arc<Shaper>,
    /// Where outcomes are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Queued mail moved to other pools by an operator.
    pub rebinds: Arc<rebind::Rebinds>,
    /// Messages being delivered at once.
    pub max_in_flight: usize,
    /// First retry delay.
    pub retry_first: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Recipients expire after this.
    pub max_age: Duration,
    /// RET when the sender gave none.
    pub bounce_return: Ret,
    /// SMTP client timeouts.
    pub timeouts: ClientTimeouts,
}

impl Settings {
    /// From a validated config, counting into `metrics`.
    pub fn new(config: &Config, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let d = &config.delivery;
        Self {
            hostname: config.server.hostname.clone(),
            shaper: Arc::new(Shaper::new(config)),
            metrics,
            rebinds: Arc::new(rebind::Rebinds::open(
                Some(rebind::Rebinds::file_in(&config.queue.path)),
                d.max_age.get(),
            )),
            max_in_flight: d.max_in_flight as usize,
            retry_first: d.retry_first.get(),
            retry_max: d.retry_max.get(),
            max_age: d.max_age.get(),
            bounce_return: match d.bounce_return {
                BounceReturn::Headers => Ret::Headers,
                BounceReturn::Full => Ret::Full,
            },
            timeouts: d.timeouts,
        }
    }
}

/// How many domains' sites the views remember.
const KNOWN_SITES: usize = 100_000;

/// An egress path's name: (source name, site).
type PathKey = (Arc<str>, Arc<str>);

/// The delivery service.
pub struct Delivery {
    queue: Arc<Queue>,
    router: Swap<Router>,
    egress: Swap<Egress>,
    log: Arc<DeliveryLog>,
    clock: Clock,
    settings: Settings,
    wake: Arc<Notify>,
    paths: Mutex<HashMap<PathKey, Arc<Path>>>,
    /// The site each domain's mail was last routed to (for the views).
    sites: std::sync::RwLock<HashMap<Box<str>, Arc<str>>>,
    /// Paths of configs replaced by a reload.
    retired: Mutex<Vec<Arc<Path>>>,
    in_flight: AtomicUsize,
    stopping: AtomicBool,
    stop: tokio::sync::watch::Sender<bool>,
    /// Set when the grace period is over: connections are dropped mid-way.
    abort: tokio::sync::watch::Sender<bool>,
    drained: Notify,
}

impl Delivery {
    /// The service; `wake` is notified when new mail is queued.
    pub fn new(
        queue: Arc<Queue>,
        router: Router,
        egress: Egress,
        log: Arc<DeliveryLog>,
        clock: Clock,
        settings: Settings,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            router: Swap::new(router),
            egress: Swap::new(egress),
            log,
            clock,
            settings,
            wake,
            paths: Mutex::new(HashMap::new()),
            sites: std::sync::RwLock::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(false),
            abort: tokio::sync::watch::Sender::new(false),
            drained: Notify::new(),
        })
    }

    /// The scheduler loop: runs until [`Delivery::shutdown`].
    pub async fn run(self: Arc<Self>) {
        while !self.stopping() {
            let room = self
                .settings
                .max_in_flight
                .saturating_sub(self.in_flight.load(Ordering::Acquire));
            if room > 0 {
                let due = self.queue.take_due(self.clock.now(), room.min(256));
                if !due.is_empty() {
                    for m in due {
                        self.in_flight.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(attempt::run(self.clone(), m));
                    }
                    continue;
                }
            }
            let next = if room > 0 {
                self.queue.next_due().map(|t| self.clock.instant_at(t))
            } else {
                None
            };
            let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        tracing::info!("delivery stopped taking new messages");
    }

    /// Stops taking messages and waits (at most `grace`) for the attempts
    /// under way; jobs not yet started are left for after the restart.
    /// When the grace is over, the connections still open are dropped as a
    /// crash would drop them: their recipients are not recorded, so they
    /// are sent again after the restart.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        self.stop.send_replace(true);
        self.wake.notify_one();
        let mut paths = self.live_paths();
        paths.extend(
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        for p in paths {
            p.stop();
        }
        let wait = async {
            while self.in_flight.load(Ordering::Acquire) > 0 {
                let notified = self.drained.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight.load(Ordering::Acquire),
                "deliveries still under way at shutdown; they will be retried"
            );
            self.abort.send_replace(true);
        }
    }

    /// The paths of the config in force.
    fn live_paths(&self) -> Vec<Arc<Path>> {
        let paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths.values().cloned().collect()
    }

    /// Messages being delivered now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Resolves once shutdown has begun.
    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Resolves once the grace period of a shutdown is over.
    async fn aborted(&self) {
        let mut rx = self.abort.subscribe();
        let _ = rx.wait_for(|a| *a).await;
    }

    /// An attempt has ended: room for another.
    fn attempt_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
        self.wake.notify_one();
    }

    /// Puts the shaping, sources, pools and routes of a new, validated
    /// config in force: new paths get plans from it, and the jobs waiting
    /// in the old paths move to them (picking their source again, so a
    /// source taken out of a pool gets no more of its mail); the old paths
    /// finish the transactions under way and retire when idle (no
    /// connection is dropped).
    pub fn reload(self: &Arc<Self>, config: &Config) {
        self.settings.shaper.replace(config);
        let egress = self.egress.get().reloaded(config);
        self.egress.set(egress);
        let router = self.router.get().reloaded(config);
        self.router.set(router);
        let old: Vec<Arc<Path>> = {
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            paths.drain().map(|(_, p)| p).collect()
        };
        for p in &old {
            for job in p.take_all() {
                self.submit(job);
            }
        }
        // Kept to be stopped at shutdown like the others, while they have
        // workers.
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.extend(old);
        retired.retain(|p| p.state().workers > 0);
    }

    /// Bounces message `id` now, on an operator's word: every pending
    /// recipient fails with `reason` (5.0.0), is logged, and the sender
    /// gets one DSN, as for any failure. False when the message is gone
    /// or being delivered (it is then left alone).
    pub async fn bounce(self: &Arc<Self>, id: queue::MessageId, reason: &str) -> bool {
        let Some(info) = self.queue.claim(id) else {
            return false;
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let text = format!("bounced by an operator: {reason}");
        let reply = crate::smtp::client::local_reply(554, [5, 0, 0], text);
        attempt::fail_all(self.clone(), info, reply).await;
        true
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The name of the default pool of the config in force.
    pub fn default_pool(&self) -> Arc<str> {
        self.egress.get().pool(None).name.clone()
    }

    /// The site mail to `domain` was last routed to, if it was.
    pub fn known_site(&self, domain: &str) -> Option<Arc<str>> {
        let sites = self.sites.read().unwrap_or_else(|p| p.into_inner());
        sites.get(domain).cloned()
    }

    /// Remembers where mail to `domain` was routed (for the views), in a
    /// map of bounded size: when full it starts afresh. It runs per job,
    /// so the usual case (already known) takes a shared lock only.
    pub(crate) fn remember_site(&self, domain: &str, site: &Arc<str>) {
        let known = |s: &Arc<str>| Arc::ptr_eq(s, site) || s == site;
        {
            let sites = self.sites.read().unwrap_or_else(|p| p.into_inner());
            if sites.get(domain).is_some_and(known) {
                return;
            }
        }
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        if sites.len() >= KNOWN_SITES {
            sites.clear();
        }
        sites.insert(domain.into(), site.clone());
    }

    /// The first source of the default pool of the config in force.
    pub fn first_source(&self) -> Option<Arc<str>> {
        let pool = self.egress.get().pool(None);
        pool.sources().next().map(|s| s.name.clone())
    }

    /// True if a source of the config in force is named `name`.
    pub fn has_source(&self, name: &str) -> bool {
        self.egress.get().has_source(name)
    }

    /// The site mail to `domain` goes to now, or why it cannot be routed.
    pub async fn site_of(&self, domain: &str) -> Result<String, String> {
        let router = self.router.get();
        match router.route(domain).await {
            Ok(r) => Ok(r.site.to_string()),
            Err(e) => Err(e.text().to_owned()),
        }
    }

    /// True if the config in force has a pool named `name`.
    pub fn has_pool(&self, name: &str) -> bool {
        self.egress.get().has_pool(name)
    }

    /// The path for (source, site), created on first use with its plan
    /// from the shaper; a domain shaped apart gets paths of its own.
    fn path(&self, source: Arc<crate::egress::Source>, site: &Arc<str>, domain: &str) -> Arc<Path> {
        let shaper = &self.settings.shaper;
        let key: Arc<str> = match shaper.shapes_domain(domain) {
            true => format!("{site}|{domain}").into(),
            false => site.clone(),
        };
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths
            .entry((source.name.clone(), key))
            .or_insert_with(|| {
                let plan = shaper.plan(&source.name, site, domain);
                Arc::new(Path::new(source, site.clone(), plan))
            })
            .clone()
    }
}
