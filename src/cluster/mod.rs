//! The fleet: nodes that act as one sender through a shared Redis.
//!
//! | part | owns |
//! |---|---|
//! | [`link`] | the connection, whether Redis answers, the Lua scripts, key names |
//! | [`rates`] | shared GCRA rates: batched requests for slots, one pipelined round trip for all |
//! | [`leases`] | shared connection limits: slots with a time to live, renewed while connections live |
//! | [`members`] | heartbeats, the nodes alive (the split of the limits while Redis is away), `tern cluster status` |
//! | [`events`] | the shaping actions, published and kept so every node applies them |
//! | [`drain`] | handing this node's queue to its peers before it is switched off, and taking a peer's |
//!
//! [`Cluster`] is what shaping sees as its [`Fleet`]: limiters ask it for
//! slots and never wait on the network themselves. Without `[cluster]`
//! none of this exists and no Redis is needed. Redis being away never
//! stops mail: limits fall back to each node's share, actions stay as
//! they are, and everything resumes when it is back. Never sends mail.

pub mod drain;
mod events;
mod leases;
pub mod link;
mod members;
mod rates;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use queue::Queue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, Config};
use crate::node::NodeState;
use crate::shaping::Shaper;
use crate::shaping::shared::{Ask, Fleet, FleetFuture, LeaseAnswer, SharedCount, SharedRate};
use crate::views::NodeRow;
use leases::Leases;
use link::{Link, LinkError};
use members::{Beat, Members};

/// This node's membership of the fleet.
pub struct Cluster {
    /// Its name in the fleet.
    pub node: String,
    config: ClusterConfig,
    /// Where peers reach its admin API.
    admin: Option<String>,
    link: Arc<Link>,
    rates: mpsc::UnboundedSender<rates::Req>,
    leases: Arc<Leases>,
    members: Members,
    state: Arc<NodeState>,
    started: SystemTime,
    /// The receivers of the tasks [`Cluster::start`] starts.
    parked: Mutex<Option<Parked>>,
}

struct Parked {
    rates: mpsc::UnboundedReceiver<rates::Req>,
    returns: mpsc::UnboundedReceiver<(Arc<str>, u64)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("link", &self.link)
            .finish()
    }
}

/// What the running fleet tasks need of the node.
pub struct Running {
    /// The queue (its size goes in the heartbeat; the fleet's size is
    /// kept in its state).
    pub queue: Arc<Queue>,
    /// The shaping whose actions the fleet shares.
    pub shaper: Arc<Shaper>,
    /// Told when the fleet changed the actions here.
    pub changed: Arc<dyn Fn() + Send + Sync>,
    /// The rebinds the fleet shares.
    pub rebinds: Arc<crate::delivery::rebind::Rebinds>,
    /// Told of a rebind made on another node.
    pub rebound: Arc<dyn Fn(crate::delivery::rebind::Rebind) + Send + Sync>,
    /// Told of a rebind ended on another node.
    pub rebound_ended: Arc<dyn Fn() + Send + Sync>,
    /// The clock.
    pub clock: crate::clock::Clock,
}

/// Why a question to the fleet got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer.
    #[error("the fleet's Redis does not answer: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Cluster {
    /// The node of `config` (which has a `[cluster]`), not yet started;
    /// `state` is its accepting/draining flag.
    pub fn new(
        config: &Config,
        cluster: &ClusterConfig,
        state: Arc<NodeState>,
        queue: &Queue,
    ) -> Result<Arc<Self>, LinkError> {
        let link = Arc::new(Link::new(cluster)?);
        let node = cluster.node_name(&config.server.hostname);
        let (leases, returns) = Leases::new(link.clone(), &node, cluster.lease_ttl.get());
        let (rates, rates_rx) = mpsc::unbounded_channel();
        let alive = queue
            .state(crate::state::FLEET_NODES)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(1);
        let admin = config.admin.enabled.then(|| {
            cluster
                .advertise
                .unwrap_or(config.admin.address)
                .to_string()
        });
        Ok(Arc::new(Self {
            members: Members::new(&node, cluster.node_timeout.get(), alive),
            node,
            config: cluster.clone(),
            admin,
            link,
            rates,
            leases,
            state,
            started: SystemTime::now(),
            parked: Mutex::new(Some(Parked {
                rates: rates_rx,
                returns,
            })),
        }))
    }

    /// Starts the fleet's tasks; returns once the first heartbeat was
    /// answered (or a second passed), so that limits start fleet-wide.
    pub async fn start(self: &Arc<Self>, run: Running) -> Vec<JoinHandle<()>> {
        let Some(parked) = self.parked.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Vec::new();
        };
        let (outbox, actions) = mpsc::unbounded_channel();
        run.shaper.actions.publish_to(outbox);
        let (outbox, rebinds) = mpsc::unbounded_channel();
        run.rebinds.publish_to(outbox);
        let changes = events::Outboxes { actions, rebinds };
        let listener = events::Listener {
            link: self.link.clone(),
            node: self.node.clone(),
            shaper: run.shaper.clone(),
            changed: run.changed.clone(),
            rebinds: run.rebinds.clone(),
            rebound: run.rebound.clone(),
            rebound_ended: run.rebound_ended.clone(),
            clock: run.clock,
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.beat(&run.queue)).await;
        if self.link.up() {
            let _ = self.link.load_scripts().await;
        }
        vec![
            tokio::spawn(rates::run(self.link.clone(), parked.rates)),
            tokio::spawn(leases::run(self.leases.clone(), parked.returns)),
            tokio::spawn(events::publish(
                self.link.clone(),
                self.node.clone(),
                changes,
            )),
            tokio::spawn(events::listen(listener)),
            tokio::spawn(self.clone().heartbeat(run.queue)),
        ]
    }

    /// One heartbeat; keeps the fleet's size in the spool when it changed.
    async fn beat(&self, queue: &Arc<Queue>) {
        let was_up = self.link.up();
        let beat = Beat {
            mode: self.state.mode().as_str().to_owned(),
            queued: queue.message_count(),
            admin: self.admin.clone(),
            started: crate::clock::rfc3339(self.started),
        };
        // A failure is noted (and logged once) by the link.
        let Ok(changed) = (self.members)
            .beat(&self.link, &beat, SystemTime::now())
            .await
        else {
            return;
        };
        if !was_up {
            let _ = self.link.load_scripts().await;
        }
        if let Some(n) = changed {
            tracing::info!(nodes = n, "cluster: nodes alive");
            let _ = queue
                .put_state(crate::state::FLEET_NODES, n.to_string().into())
                .await;
        }
    }

    async fn heartbeat(self: Arc<Self>, queue: Arc<Queue>) {
        let mut tick = tokio::time::interval(self.config.heartbeat.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first was made by `start`
        loop {
            tick.tick().await;
            self.beat(&queue).await;
        }
    }

    /// Leaves the fleet at shutdown: returns the connection slots still
    /// held and drops the heartbeat, so the node shows as down at once.
    pub async fn stop(&self) {
        self.leases.return_all().await;
        if self.link.up() {
            let mut conn = self.link.conn();
            let key = self.link.key(&format!("node:{}", self.node));
            let _ = self.link.note(
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut conn)
                    .await,
            );
        }
    }

    /// Every node heard from lately, as it last said.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, ClusterError> {
        let timeout = self.config.node_timeout.get();
        Ok(Members::list(&self.link, timeout, SystemTime::now()).await?)
    }

    /// True while Redis answers.
    pub fn redis_up(&self) -> bool {
        self.link.up()
    }

    /// Round trips to Redis since start.
    pub fn round_trips(&self) -> u64 {
        self.link
            .round_trips
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What `/metrics` shows of the fleet.
    pub fn state(&self) -> crate::views::FleetState {
        crate::views::FleetState {
            redis_up: self.link.up(),
            nodes: self.members.alive(),
            round_trips: self.round_trips(),
            leases: self.leases.count() as u64,
        }
    }

    /// The `[cluster]` section it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }
}

impl Fleet for Cluster {
    fn up(&self) -> bool {
        self.link.up()
    }

    fn nodes(&self) -> u32 {
        self.members.alive()
    }

    fn batch(&self) -> Duration {
        self.config.rate_batch.get()
    }

    fn refill(&self, rate: Arc<SharedRate>, ask: Ask) {
        if self
            .rates
            .send(rates::Req::Refill(rate.clone(), ask))
            .is_err()
        {
            rate.failed();
        }
    }

    fn refund(&self, key: Arc<str>, interval: Duration, count: u32) {
        let _ = self.rates.send(rates::Req::Refund(key, interval, count));
    }

    fn lease(&self, key: Arc<str>, limit: u32) -> FleetFuture<LeaseAnswer> {
        let leases = self.leases.clone();
        Box::pin(async move { leases.take(key, limit).await })
    }

    fn release(&self, key: Arc<str>, id: u64) {
        self.leases.release(key, id);
    }

    fn count(&self, count: Arc<SharedCount>, cap: u32, want: u32) {
        if self
            .rates
            .send(rates::Req::Count(count.clone(), cap, want))
            .is_err()
        {
            count.failed();
        }
    }
}
