//! Delivery: takes due messages from the queue and sends each recipient to
//! its domain's MX hosts from a source of the message's pool.
//!
//! ```text
//! queue --take_due--> scheduler: jobs (one per domain), routed to sites
//!                         |
//!        scheduled queues per destination (pool, site): by priority,
//!        tenants by weight; metadata only, no slot, no timer per job
//!                         |  pump: only as fast as a path has room
//!                         v
//!        ready queues per egress path (source, site), at most max_ready
//!                         |  connection workers: rate slot, then the
//!                         |  in-flight budget, then the body is read
//!                         v
//!        send over SMTP --> outcome: record, log, bounce, release
//! ```
//!
//! - `scheduler`: admission (routing, splitting), the scheduled queues,
//!   pumping them into ready queues, timers, expiry while waiting.
//! - `dispatch`: egress paths, their ready queues, connection workers,
//!   rates, holds, reactions to refusals.
//! - `outcome`: the one place outcomes go: statuses, log lines, metrics,
//!   bounces ([`dsn`]), retries ([`retry`]).
//!
//! Waiting for permission (a rate, a connection slot, a suspension, a
//! dead-site pause, a warm-up share) is never an attempt: only a receiver
//! (or DNS) being asked counts, and only that writes to the spool.

mod bodies;
mod budget;
pub(crate) mod dispatch;
pub mod dsn;
pub mod filter;
mod job;
mod outcome;
pub mod rebind;
mod reload;
pub mod retry;
mod scheduler;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{MessageId, MessageInfo, Queue};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{BounceReturn, ClientTimeouts, Config};
use crate::dns::route::{RouteError, Router};
use crate::egress::Egress;
use crate::log::DeliveryLog;
use crate::message::Ret;
use crate::shaping::Shaper;
use crate::swap::Swap;

use dispatch::Path;
use job::Job;
pub(crate) use scheduler::Dest;

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
    /// Messages being sent at once.
    pub max_in_flight: usize,
    /// Body bytes being sent at once.
    pub max_in_flight_size: u64,
    /// Jobs (and their body bytes) an egress path keeps ready.
    pub max_ready: (usize, u64),
    /// First retry delay.
    pub retry_first: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Recipients expire after this.
    pub max_age: Duration,
    /// RET when the sender gave none.
    pub bounce_return: Ret,
    /// When delay notices are sent (`None`: never).
    pub delay_notices: Option<retry::NoticeSchedule>,
    /// SMTP client timeouts.
    pub timeouts: ClientTimeouts,
    /// The tenants' weights at start (a reload replaces them).
    pub weights: Weights,
    /// The bounce classes of failures and deferrals.
    pub classifier: Arc<crate::events::classify::Classifier>,
    /// The certificate check of every STARTTLS.
    pub verifier: crate::smtp::client::Verifier,
    /// The TLS policies domains publish, and the sessions' reports
    /// (none looked up until the daemon sets them; a reload replaces
    /// them).
    pub tls: Arc<crate::swap::Swap<crate::tlspolicy::TlsPolicies>>,
    /// Where connections are traced (a tracer of its own until the daemon
    /// sets the one the admin API watches).
    pub tracer: Arc<crate::trace::Tracer>,
}

impl Settings {
    /// From a validated config, counting into `metrics`, trusting
    /// `ca_roots` (`tls_ca_file`'s, loaded by the prepare step) besides
    /// the system's.
    pub fn new(
        config: &Config,
        metrics: Arc<crate::metrics::Metrics>,
        ca_roots: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Self {
        let d = &config.delivery;
        Self {
            hostname: config.server.hostname.clone(),
            shaper: Arc::new(Shaper::new(config)),
            metrics,
            rebinds: Arc::new(rebind::Rebinds::new(None, d.max_age.get())),
            max_in_flight: d.max_in_flight as usize,
            max_in_flight_size: d.max_in_flight_size.0,
            max_ready: (d.max_ready as usize, d.max_ready_size.0),
            retry_first: d.retry_first.get(),
            retry_max: d.retry_max.get(),
            max_age: d.max_age.get(),
            bounce_return: match d.bounce_return {
                BounceReturn::Headers => Ret::Headers,
                BounceReturn::Full => Ret::Full,
            },
            delay_notices: (!d.delay_notice_after.get().is_zero()).then(|| retry::NoticeSchedule {
                after: d.delay_notice_after.get(),
                every: d.delay_notice_interval.get(),
            }),
            timeouts: d.timeouts,
            weights: Weights::new(config),
            tls: Arc::new(crate::swap::Swap::new(crate::tlspolicy::TlsPolicies::off())),
            tracer: crate::trace::Tracer::new(),
            verifier: crate::smtp::client::Verifier::new(ca_roots),
            classifier: Arc::new(
                crate::config::BounceRules::load(config.events.bounce_rules.as_deref())
                    .and_then(crate::events::classify::Classifier::new)
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "bounce rules: using the shipped ones");
                        crate::events::classify::Classifier::shipped()
                    }),
            ),
        }
    }
}

/// The tenants' weights (`[[tenant]] weight`).
#[derive(Debug, Clone, Default)]
pub struct Weights(HashMap<String, u32>);

impl Weights {
    fn new(config: &Config) -> Self {
        Self(
            config
                .tenants
                .iter()
                .map(|t| (t.name.clone(), t.weight))
                .collect(),
        )
    }

    /// A tenant's weight (1 for one without an entry).
    pub fn of(&self, tenant: Option<&str>) -> u32 {
        tenant.and_then(|t| self.0.get(t)).copied().unwrap_or(1)
    }
}

/// How many domains' sites the views remember.
const KNOWN_SITES: usize = 100_000;

/// An egress path's name: (source name, path key).
type PathKey = (Arc<str>, Arc<str>);

/// The delivery service.
pub struct Delivery {
    queue: Arc<Queue>,
    /// Reads bodies that are not in the spool's cache.
    bodies: bodies::Bodies,
    router: Swap<Router>,
    egress: Swap<Egress>,
    weights: Swap<Weights>,
    log: Arc<DeliveryLog>,
    clock: Clock,
    settings: Settings,
    wake: Arc<Notify>,
    scheduler: scheduler::Scheduler,
    trackers: outcome::trackers::Trackers,
    unwritten: outcome::unwritten::Unwritten,
    in_flight: budget::Budget,
    paths: Mutex<HashMap<PathKey, Arc<Path>>>,
    /// The site each domain's mail was last routed to (for the views).
    sites: std::sync::RwLock<HashMap<Box<str>, Arc<str>>>,
    /// Paths of configs replaced by a reload.
    retired: Mutex<Vec<Arc<Path>>>,
    /// Jobs between `begin` and `end` (sends, and settles of unsent jobs).
    busy: AtomicUsize,
    stopping: AtomicBool,
    /// Set while the node drains: no new sends start.
    paused: AtomicBool,
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
            bodies: bodies::Bodies::new(queue.clone()),
            queue,
            router: Swap::new(router),
            egress: Swap::new(egress),
            weights: Swap::new(settings.weights.clone()),
            log,
            clock,
            in_flight: budget::Budget::new(settings.max_in_flight, settings.max_in_flight_size),
            settings,
            wake,
            scheduler: Default::default(),
            trackers: Default::default(),
            unwritten: Default::default(),
            paths: Mutex::new(HashMap::new()),
            sites: std::sync::RwLock::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(false),
            abort: tokio::sync::watch::Sender::new(false),
            drained: Notify::new(),
        })
    }

    /// Stops taking messages and waits (at most `grace`) for the sends
    /// under way; jobs not yet sent are left for after the restart (their
    /// messages are due again then). When the grace is over, the
    /// connections still open are dropped as a crash would drop them:
    /// their recipients are not recorded, so they are sent again after
    /// the restart.
    pub async fn shutdown(&self, grace: Duration) {
        // SeqCst, with `begin_id`: a send either counts as busy before
        // this sees `busy`, or sees `stopping` and does not start.
        self.stopping.store(true, Ordering::SeqCst);
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
            while self.busy.load(Ordering::SeqCst) > 0 {
                let notified = self.drained.notified();
                if self.busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                sending = self.busy.load(Ordering::Acquire),
                "deliveries still under way at shutdown; they will be retried"
            );
            self.abort.send_replace(true);
        }
    }

    /// A job's send (or settle) starts: its message's current metadata,
    /// or `None` if its message is no longer held for it (then the job is
    /// forgotten).
    fn begin(&self, job: &Job) -> Option<MessageInfo> {
        self.begin_id(job.id, job.handout)
    }

    /// Once shutdown has begun, no send starts: one that started after
    /// the shutdown stopped waiting for sends could deliver a message
    /// whose outcome the closing spool would never record (and the
    /// message would go again after the restart). The message stays due
    /// in the spool.
    fn begin_id(&self, id: MessageId, handout: u32) -> Option<MessageInfo> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        if self.stopping.load(Ordering::SeqCst) {
            self.idle();
            return None;
        }
        match self.queue.begin(id, handout) {
            Some(info) => Some(info),
            None => {
                self.idle();
                self.trackers.forget((id, handout));
                None
            }
        }
    }

    /// One fewer send under way.
    fn idle(&self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// A job that began is settled.
    fn end(&self, id: MessageId) {
        self.queue.end(id);
        self.idle();
    }

    /// The paths of the config in force.
    fn live_paths(&self) -> Vec<Arc<Path>> {
        let paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths.values().cloned().collect()
    }

    /// Messages being sent now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.in_use()
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

    /// Bounces message `id` now, on an operator's word: every pending
    /// recipient fails with `reason` (5.0.0), is logged, and the sender
    /// gets one DSN, as for any failure. A message waiting for its turn
    /// is taken from its queue. False when the message is gone or being
    /// sent (it is then left alone).
    pub async fn bounce(self: &Arc<Self>, id: MessageId, reason: &str) -> bool {
        let Some(info) = self.queue.claim(id) else {
            return false;
        };
        let text = format!("bounced by an operator: {reason}");
        let reply = crate::smtp::client::local_reply(554, [5, 0, 0], text);
        self.fail_claimed(info, reply).await;
        true
    }

    /// Takes a message waiting for its turn out of its scheduled queues
    /// and admits it again (under the rebinds in force now). False if it
    /// is gone or being sent.
    pub fn readmit(&self, id: MessageId) -> bool {
        if self.queue.claim(id).is_none() {
            return false;
        }
        self.queue.release(id);
        self.wake.notify_one();
        true
    }

    /// The warm-up counts of the day, as the egress keeps them.
    pub fn warmup_counts(&self) -> Vec<u8> {
        self.egress.get().warmup_counts()
    }

    /// Keeps the rebinds in force in the spool, durably (an operator's
    /// rebind is answered only once this returns).
    pub async fn keep_rebinds(&self) -> Result<(), queue::QueueError> {
        let kept = self.settings.rebinds.snapshot();
        self.queue
            .put_state(crate::state::REBINDS, kept.into())
            .await
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
    /// map of bounded size: when full it starts afresh. It runs per
    /// route, so the usual case (already known) takes a shared lock only.
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

    /// The config of the source of the config in force named `key`, or
    /// whose (public) address is `key`.
    pub fn find_source(&self, key: &str) -> Option<crate::config::SourceConfig> {
        self.egress.get().find_source(key).cloned()
    }

    /// The site mail to `domain` goes to now, or why it cannot be routed.
    pub async fn site_of(&self, domain: &str) -> Result<String, String> {
        let router = self.router.get();
        match router.route(domain).await {
            Ok(r) => Ok(r.site.to_string()),
            Err(e) => Err(e.text().to_owned()),
        }
    }

    /// The route of mail for `domain` now, under the TLS policy it
    /// publishes.
    pub async fn tls_route(&self, domain: &str) -> Result<crate::dns::route::Route, RouteError> {
        let route = self.router.get().route(domain).await?;
        let policies = self.settings.tls.get();
        policies.apply(domain, route).await
    }

    /// The TLS policy component in force.
    pub fn tls_policies(&self) -> Arc<crate::tlspolicy::TlsPolicies> {
        self.settings.tls.get()
    }

    /// Puts the TLS policy component of a reloaded `[tls_policy]` in
    /// force (see [`crate::admin::reload`]).
    pub fn set_tls_policies(&self, policies: crate::tlspolicy::TlsPolicies) {
        self.settings.tls.set(policies);
    }

    /// True if the config in force has a pool named `name`.
    pub fn has_pool(&self, name: &str) -> bool {
        self.egress.get().has_pool(name)
    }

    /// The path from `source` for `dest`'s mail, created on first use
    /// with its plan from the shaper.
    fn path(&self, source: Arc<crate::egress::Source>, dest: &Dest) -> Arc<Path> {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = paths.get(&(source.name.clone(), dest.key.clone())) {
            return p.clone();
        }
        let plan = self
            .settings
            .shaper
            .plan(&source.name, &dest.site, &dest.domain);
        let key = (source.name.clone(), dest.key.clone());
        let names = (dest.site.clone(), dest.key.clone(), dest.domain.clone());
        let path = Arc::new(Path::new(
            source,
            names,
            plan,
            None,
            self.settings.max_ready,
        ));
        paths.insert(key, path.clone());
        drop(paths);
        path.restore_slowdown(self);
        path
    }
}
