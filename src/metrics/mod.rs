//! Metric definitions, with their help text, and their Prometheus
//! rendering for `/metrics` on the admin listener.
//!
//! Each running Tern owns one recorder (never the process-global one, so
//! tests can run several daemons side by side); components receive the
//! [`Metrics`] at construction and count through it. Label values come
//! from the configuration (provider, source, pool, tenant) or a fixed set
//! (outcome), so their number is bounded: a recipient domain is never a
//! label, and a site is one only in the per-path gauges, which are written
//! at each scrape for the [`TOP_PATHS`] busiest paths only (so no series
//! lingers after its path went quiet).

mod text;
pub mod trend;

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::RwLock;

use metrics::{Counter, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

static META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

const RECEIVED: &str = "tern_messages_received_total";
const OUTCOMES: &str = "tern_recipients_total";
const QUEUE_TIME: &str = "tern_queue_time_seconds";
const TRANSACTION: &str = "tern_smtp_transaction_seconds";
const QUEUED: &str = "tern_queue_messages";
const QUEUED_RCPTS: &str = "tern_queue_recipients";
const HELD_RCPTS: &str = "tern_queue_held_recipients";
const RECOVERING: &str = "tern_queue_recovering";
const SPOOL: &str = "tern_spool_bytes";
const UNRECORDED: &str = "tern_messages_held_unrecorded";
const RSS: &str = "tern_resident_memory_bytes";
const RELOADS: &str = "tern_config_reloads_total";
const LOG_DROPPED: &str = "tern_delivery_log_dropped_total";
const ACCEPT: &str = "tern_smtp_accept_seconds";
const REFUSED: &str = "tern_smtp_refusals_total";
const OLDEST: &str = "tern_queue_oldest_waiting_seconds";
const DRAINING: &str = "tern_node_draining";
const BOUNCES: &str = "tern_bounces_total";
const EVENTS: &str = "tern_events_total";
const TLS_SESSIONS: &str = "tern_tls_sessions_total";

/// Why the door refused new mail (a 4xx), for [`Metrics::refused`].
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// The spool is full or cannot write.
    Spool,
    /// `queue.max_messages` or `queue.max_spool_size` is reached.
    Backlog,
    /// The RAM for message data being received is used up.
    Memory,
    /// `max_connections` is reached.
    Connections,
    /// The node drains.
    Draining,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Spool,
        Refusal::Backlog,
        Refusal::Memory,
        Refusal::Connections,
        Refusal::Draining,
    ];

    fn name(self) -> &'static str {
        match self {
            Refusal::Spool => "spool",
            Refusal::Backlog => "backlog",
            Refusal::Memory => "memory",
            Refusal::Connections => "connections",
            Refusal::Draining => "draining",
        }
    }
}

/// How many egress paths (the busiest) get gauges of their own.
pub const TOP_PATHS: usize = 50;

/// One delivery outcome of a recipient, for [`Metrics::outcome`].
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Accepted by the next hop.
    Delivered,
    /// Deferred for a retry.
    Deferred,
    /// Failed permanently (bounced).
    Bounced,
    /// Expired (bounced).
    Expired,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
            Outcome::Expired => "expired",
        }
    }
}

/// Where an outcome happened (every value from the config).
pub struct Labels<'a> {
    /// The provider of the destination site, or "other".
    pub provider: &'a str,
    /// The source.
    pub source: &'a str,
    /// The pool.
    pub pool: &'a str,
    /// The tenant, or "" for none.
    pub tenant: &'a str,
}

/// Counters or histograms by label values, found again without allocating
/// (per message and per recipient): keyed by a hash of the values, checked
/// against them.
struct Cached<H>(RwLock<HashMap<u64, Vec<Entry<H>>>>);

/// A handle and the label values it was registered with.
type Entry<H> = (Box<[Box<str>]>, H);

impl<H> Default for Cached<H> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<H: Clone> Cached<H> {
    /// The handle of `values`, registered by `make` the first time.
    fn get(&self, values: &[&str], make: impl FnOnce() -> H) -> H {
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(values);
        let same = |k: &[Box<str>]| k.iter().map(|s| &**s).eq(values.iter().copied());
        {
            let map = self.0.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, c)) = map.get(&h).and_then(|v| v.iter().find(|(k, _)| same(k))) {
                return c.clone();
            }
        }
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let bucket = map.entry(h).or_default();
        if let Some((_, c)) = bucket.iter().find(|(k, _)| same(k)) {
            return c.clone();
        }
        let c = make();
        bucket.push((values.iter().map(|s| Box::from(*s)).collect(), c.clone()));
        c
    }
}

/// The metrics of one running Tern.
pub struct Metrics {
    recorder: PrometheusRecorder,
    received: Cached<Counter>,
    outcomes: Cached<Counter>,
    /// Transaction durations by provider.
    transactions: Cached<Histogram>,
    /// The unlabelled histograms recorded per message and per recipient.
    accept: Histogram,
    queue_time: Histogram,
    trend: trend::Trend,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set, with every metric described.
    pub fn new() -> Self {
        let buckets = [
            0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0,
        ];
        let fast = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .and_then(|b| {
                let accept = metrics_exporter_prometheus::Matcher::Full(ACCEPT.into());
                b.set_buckets_for_metric(accept, &fast)
            })
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                |b| b.build_recorder(),
            );
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_counter(
                KeyName::from_const_str(name),
                unit,
                SharedString::const_str(help),
            );
        };
        describe(
            RECEIVED,
            None,
            "Messages accepted (answered 250) at the SMTP door, by pool and tenant.",
        );
        describe(
            OUTCOMES,
            None,
            "Recipient delivery outcomes by outcome (delivered, deferred, bounced, expired), provider, source, pool and tenant.",
        );
        describe(
            QUEUE_TIME,
            Some(Unit::Seconds),
            "Time from reception to delivery of each delivered recipient.",
        );
        describe(
            TRANSACTION,
            Some(Unit::Seconds),
            "Duration of outbound SMTP transactions (MAIL to the reply after the data), by provider.",
        );
        describe(
            QUEUED,
            None,
            "Messages in the queue with a pending recipient.",
        );
        describe(QUEUED_RCPTS, None, "Pending recipients in the queue.");
        describe(
            HELD_RCPTS,
            None,
            "Recipients held by an operator (tern hold).",
        );
        describe(
            RECOVERING,
            None,
            "1 while the spool is recovered after a restart (mail queued before it is counted as it comes back, not all of it yet), else 0.",
        );
        describe(SPOOL, Some(Unit::Bytes), "Bytes of spool files on disk.");
        describe(
            UNRECORDED,
            None,
            "Messages held because the spool could not write their delivery outcomes (written as soon as it can; a restart before then may deliver them twice).",
        );
        describe(
            RSS,
            Some(Unit::Bytes),
            "Resident memory of the Tern process.",
        );
        describe(
            RELOADS,
            None,
            "Config reloads by result: applied, or refused (the running config stayed).",
        );
        describe(
            LOG_DROPPED,
            None,
            "Delivery log lines dropped because the log's disk could not keep up (delivery never waits for it).",
        );
        describe(
            OLDEST,
            Some(Unit::Seconds),
            "Age of the oldest message waiting at a destination or path (due, not yet sent): with the queue size and the door's latency, what to scale out on.",
        );
        describe(
            DRAINING,
            None,
            "1 while this node drains (refuses new mail, hands its queue to its peers); 0 while it takes mail.",
        );
        describe(
            ACCEPT,
            Some(Unit::Seconds),
            "Time from the end of a message's data to its 250 (signing and the fsync included): the door's latency.",
        );
        describe(
            BOUNCES,
            None,
            "Recipient failures and deferrals by bounce class (config/bounces.toml) and outcome (bounced, deferred, expired).",
        );
        describe(
            TLS_SESSIONS,
            None,
            "Outbound sessions by the TLS policy they were held to (opportunistic, verify, mta-sts, mta-sts-testing, ...) and result: ok, or the RFC 8460 failure (starttls-not-supported, certificate-host-mismatch, certificate-expired, certificate-not-trusted, validation-failure).",
        );
        describe(
            EVENTS,
            None,
            "Events exported to a webhook, by sink and result: exported (acknowledged), parked (kept on disk after the retry window), failed_posts (posts that failed and were retried), lost (rotated out of the delivery log before export).",
        );
        describe(
            REFUSED,
            None,
            "New mail refused at the door with a 4xx, by reason (spool, backlog, memory, connections, draining).",
        );
        for r in Refusal::ALL {
            let key = Key::from_parts(REFUSED, vec![Label::new("reason", r.name())]);
            recorder.register_counter(&key, &META).increment(0);
        }
        for result in ["applied", "refused"] {
            let key = Key::from_parts(RELOADS, vec![Label::new("result", result)]);
            recorder.register_counter(&key, &META).increment(0);
        }
        let histogram = |name| recorder.register_histogram(&Key::from_static_name(name), &META);
        Self {
            accept: histogram(ACCEPT),
            queue_time: histogram(QUEUE_TIME),
            recorder,
            received: Cached::default(),
            outcomes: Cached::default(),
            transactions: Cached::default(),
            trend: trend::Trend::default(),
        }
    }

    /// A message of `pool` and `tenant` ("" for none) was accepted.
    pub fn received(&self, pool: &str, tenant: &str) {
        self.trend.count(trend::Series::Received);
        self.received
            .get(&[pool, tenant], || {
                let labels = vec![
                    Label::new("pool", pool.to_owned()),
                    Label::new("tenant", tenant.to_owned()),
                ];
                self.recorder
                    .register_counter(&Key::from_parts(RECEIVED, labels), &META)
            })
            .increment(1);
    }

    /// A recipient's delivery outcome.
    pub fn outcome(&self, outcome: Outcome, l: &Labels<'_>) {
        self.trend.count(match outcome {
            Outcome::Delivered => trend::Series::Delivered,
            Outcome::Deferred => trend::Series::Deferred,
            Outcome::Bounced | Outcome::Expired => trend::Series::Bounced,
        });
        let values = [outcome.name(), l.provider, l.source, l.pool, l.tenant];
        self.outcomes
            .get(&values, || {
                let labels = vec![
                    Label::new("outcome", outcome.name()),
                    Label::new("provider", l.provider.to_owned()),
                    Label::new("source", l.source.to_owned()),
                    Label::new("pool", l.pool.to_owned()),
                    Label::new("tenant", l.tenant.to_owned()),
                ];
                self.recorder
                    .register_counter(&Key::from_parts(OUTCOMES, labels), &META)
            })
            .increment(1);
    }

    /// A delivered recipient spent `secs` in the queue.
    pub fn queue_time(&self, secs: f64) {
        self.queue_time.record(secs);
    }

    /// A config reload was applied (`true`) or refused.
    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        let key = Key::from_parts(RELOADS, vec![Label::new("result", result)]);
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// The delivery log has dropped `total` lines since the start.
    pub fn set_log_dropped(&self, total: u64) {
        self.recorder
            .register_counter(&Key::from_static_name(LOG_DROPPED), &META)
            .absolute(total);
    }

    /// An outbound transaction took `secs`.
    pub fn transaction(&self, provider: &str, secs: f64) {
        self.transactions
            .get(&[provider], || {
                let labels = vec![Label::new("provider", provider.to_owned())];
                (self.recorder).register_histogram(&Key::from_parts(TRANSACTION, labels), &META)
            })
            .record(secs);
    }

    /// A message was accepted `secs` after its data ended.
    pub fn accepted(&self, secs: f64) {
        self.accept.record(secs);
    }

    /// A failure or deferral of `class`.
    pub fn bounce(&self, class: &'static str, outcome: &'static str) {
        let key = Key::from_parts(
            BOUNCES,
            vec![Label::new("class", class), Label::new("outcome", outcome)],
        );
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// An outbound session under TLS policy `policy` came to `result`.
    pub fn tls_session(&self, policy: &'static str, result: &'static str) {
        let key = Key::from_parts(
            TLS_SESSIONS,
            vec![Label::new("policy", policy), Label::new("result", result)],
        );
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// `n` events of webhook `sink` came to `result`.
    pub fn events(&self, sink: &str, result: &'static str, n: u64) {
        let key = Key::from_parts(
            EVENTS,
            vec![
                Label::new("sink", sink.to_owned()),
                Label::new("result", result),
            ],
        );
        self.recorder.register_counter(&key, &META).increment(n);
    }

    /// The door refused new mail.
    pub fn refused(&self, why: Refusal) {
        let key = Key::from_parts(REFUSED, vec![Label::new("reason", why.name())]);
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// Folds the histogram samples recorded since the last call into
    /// their buckets. The recorder keeps every sample until then (a render
    /// does it too): without a scrape, memory would grow with every
    /// message. The daemon calls this every few seconds; it also samples
    /// the status page's trend.
    pub fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.trend.sample(now);
    }

    /// The last hour's rates (for the status page).
    pub fn trend(&self) -> &trend::Trend {
        &self.trend
    }

    /// The Prometheus text exposition, with the queue's gauges set from
    /// `queue` and the process's memory first, and gauges of the busiest
    /// egress `paths`.
    pub fn render(
        &self,
        queue: &queue::Queue,
        delivery: &crate::views::DeliveryState,
        node: (bool, Option<crate::views::FleetState>),
    ) -> String {
        let s = queue.stats();
        let gauge = |name: &'static str, v: f64| {
            self.recorder
                .register_gauge(&Key::from_static_name(name), &META)
                .set(v);
        };
        gauge(QUEUED, s.messages as f64);
        gauge(QUEUED_RCPTS, s.recipients as f64);
        gauge(HELD_RCPTS, s.held as f64);
        gauge(RECOVERING, f64::from(u8::from(queue.is_recovering())));
        gauge(SPOOL, s.disk_bytes as f64);
        gauge(RSS, resident_bytes() as f64);
        gauge(UNRECORDED, delivery.unrecorded as f64);
        let oldest = crate::views::oldest_waiting_secs(&delivery.dests, &delivery.paths);
        gauge(OLDEST, oldest as f64);
        gauge(DRAINING, f64::from(u8::from(node.0)));
        let mut out = self.recorder.handle().render();
        if let Some(f) = node.1 {
            text::fleet(&mut out, &f);
        }
        text::spool_state(&mut out, &queue.health());
        text::sources(&mut out, &delivery.sources);
        text::paths(&mut out, &delivery.paths);
        text::destinations(&mut out, &delivery.dests);
        out
    }
}

/// This process's resident memory (VmRSS), 0 if unknown.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_found_again_by_their_label_values() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.received("bulk", "shop");
        }
        m.received("bulk", "");
        let l = Labels {
            provider: "gmail",
            source: "ip-1",
            pool: "bulk",
            tenant: "shop",
        };
        m.outcome(Outcome::Delivered, &l);
        m.outcome(Outcome::Delivered, &l);
        m.outcome(Outcome::Deferred, &l);
        let text = m.recorder.handle().render();
        let line = |prefix: &str, part: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(part))
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(
            line(RECEIVED, "tenant=\"shop\"").as_deref(),
            Some("3"),
            "{text}"
        );
        assert_eq!(
            line(RECEIVED, "tenant=\"\"").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            line(OUTCOMES, "outcome=\"delivered\"").as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            line(OUTCOMES, "outcome=\"deferred\"").as_deref(),
            Some("1"),
            "{text}"
        );
    }
}
