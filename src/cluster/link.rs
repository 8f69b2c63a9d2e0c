//! The connection to the fleet's Redis: one multiplexed connection that
//! reconnects by itself, whether Redis answers now (`up`), the scripts,
//! and the names of keys and channels. Logs once when Redis goes away
//! and once when it is back; never decides what a failure means for
//! mail (the callers fall back to local limits).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ClusterConfig;

/// GCRA over one or more keys, in microseconds of Redis's own clock, for a
/// batch: grants `want` events on every key at once if they all allow it
/// now (then each key's state moves on by `want` intervals), else none,
/// and says how long until they would. KEYS: the rates. ARGV: want, then
/// per key its interval and tolerance (microseconds). Returns
/// `{granted, wait_us}`.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local iv = tonumber(ARGV[2 * i])
  local tol = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  tats[i] = tat
  local w = tat + (want - 1) * iv - tol - now
  if w > wait then wait = w end
end
if wait > 0 then return {0, math.ceil(wait)} end
for i = 1, #KEYS do
  local iv = tonumber(ARGV[2 * i])
  local tol = tonumber(ARGV[2 * i + 1])
  local tat = tats[i] + want * iv
  local ttl = math.ceil((tat - now + tol) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', ttl)
end
return {want, 0}
";

/// Hands back unused events of a rate: its state moves back by `count`
/// intervals, never before now. KEYS: the rate. ARGV: interval (us),
/// count.
const REFUND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat <= now then return 0 end
local back = tat - tonumber(ARGV[1]) * tonumber(ARGV[2])
if back < now then back = now end
redis.call('SET', KEYS[1], string.format('%.0f', back), 'KEEPTTL')
return 1
";

/// Takes a connection slot: drops the slots whose time ran out, then adds
/// this one if fewer than `limit` are held. KEYS: the slots (a sorted
/// set, member = holder, score = expiry in ms). ARGV: holder, limit,
/// ttl (ms). Returns 1 when taken.
const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
";

/// Renews slots still held: ARGV: ttl (ms), then pairs of key and holder;
/// a slot that has run out (dropped by another node) is not renewed, and
/// its holder's count is returned so the caller knows.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local lost = 0
for i = 2, #ARGV, 2 do
  local key = ARGV[i]
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
    redis.call('PEXPIRE', key, ttl * 2)
  else
    lost = lost + 1
  end
end
return lost
";

/// Grants up to `want` of a count capped at `cap` (a warming source's
/// day): KEYS: the count. ARGV: cap, want, ttl (ms). Returns `{granted,
/// exhausted}`.
const COUNT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local cap = tonumber(ARGV[1])
if used >= cap then return {0, 1} end
local grant = math.min(tonumber(ARGV[2]), cap - used)
redis.call('INCRBY', KEYS[1], grant)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
if used + grant >= cap then return {grant, 1} end
return {grant, 0}
";

/// The scripts, loaded once and run by hash.
pub(super) struct Scripts {
    pub take: redis::Script,
    pub refund: redis::Script,
    pub lease: redis::Script,
    pub renew: redis::Script,
    pub count: redis::Script,
}

/// The connection to Redis and what is known of it.
pub struct Link {
    client: redis::Client,
    conn: ConnectionManager,
    up: AtomicBool,
    /// Calls that failed since start.
    errors: AtomicU64,
    /// Round trips made since start.
    pub(super) round_trips: AtomicU64,
    prefix: String,
    pub(super) scripts: Scripts,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("up", &self.up())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Why the link could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cluster.redis: {0}")]
pub struct LinkError(#[from] redis::RedisError);

impl Link {
    /// A link to `config.redis`, connected lazily: Redis being away at
    /// start does not stop the node (it shapes alone until Redis answers).
    pub fn new(config: &ClusterConfig) -> Result<Self, LinkError> {
        let client = redis::Client::open(config.redis.as_str())?;
        let options = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), options)?;
        Ok(Self {
            client,
            conn,
            up: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            prefix: config.prefix.clone(),
            scripts: Scripts {
                take: redis::Script::new(TAKE),
                refund: redis::Script::new(REFUND),
                lease: redis::Script::new(LEASE),
                renew: redis::Script::new(RENEW),
                count: redis::Script::new(COUNT),
            },
        })
    }

    /// The full name of a key or channel: `{prefix}:name` (the braces keep
    /// every key of a fleet in one slot of a Redis Cluster, so scripts
    /// may touch several).
    pub fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }

    /// True while Redis answered the last call.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A connection of its own for subscribing to a channel.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let connect = self.client.get_async_pubsub();
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to Redis to subscribe",
            ))),
        }
    }

    /// A handle to send commands on (cheap: the connection is shared).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Notes the result of a call: the first failure after success is
    /// logged (Redis went away), and the first success after failure.
    pub fn note<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match &r {
            Ok(_) => {
                if !self.up.swap(true, Ordering::AcqRel) {
                    tracing::info!("cluster: Redis answers; limits are fleet-wide");
                }
            }
            Err(e) if is_outage(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if self.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "cluster: Redis does not answer; each node keeps to its share of the shared limits until it is back");
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cluster: Redis refused a command");
            }
        }
        r
    }

    /// Calls that failed since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Loads the scripts (after a connect; Redis forgets them on restart).
    pub async fn load_scripts(&self) -> redis::RedisResult<()> {
        let mut c = self.conn();
        for s in [
            &self.scripts.take,
            &self.scripts.refund,
            &self.scripts.lease,
            &self.scripts.renew,
            &self.scripts.count,
        ] {
            s.load_async(&mut c).await?;
        }
        Ok(())
    }
}

/// True when an error means Redis cannot be reached (rather than that it
/// refused one command).
pub fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}
