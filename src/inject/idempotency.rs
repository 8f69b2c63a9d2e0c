//! `Idempotency-Key`: a request repeated with the same key within the
//! TTL gets the first answer and queues nothing again. Each key's answer
//! is kept durably in the spool (a state record, written before the
//! answer is sent), so a client that retries across a restart of Tern
//! still sends once; the same key with a different body is refused, and
//! a key whose first request is still being served gets a 409. Keys past
//! the TTL, or beyond the most kept, are forgotten oldest first.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use queue::Queue;
use serde::{Deserialize, Serialize};

use super::api::SendResponse;

const PREFIX: &str = "idempotency/";

/// What a key remembers.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// When it was first answered, ms since the epoch.
    at: u64,
    /// The first request's body hash (hex SHA-256).
    body: String,
    response: SendResponse,
}

/// What to do with a request that carries a key.
pub enum Begin {
    /// Serve it; [`Idempotency::finish`] keeps its answer.
    Fresh(InFlight),
    /// Answered before: this is the answer.
    Replay(SendResponse),
    /// The same key with another body.
    Mismatch,
    /// Its first request is being served now.
    Busy,
}

/// A key being served; forgotten as in flight when dropped.
pub struct InFlight {
    owner: Arc<Inner>,
    state_key: String,
    body: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.owner.lock().1.remove(&self.state_key);
    }
}

/// (first answered ms, state key), oldest first; and the keys in flight.
type Keys = (VecDeque<(u64, String)>, HashSet<String>);

struct Inner {
    order: Mutex<Keys>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keys remembered.
pub struct Idempotency {
    queue: Arc<Queue>,
    ttl: Duration,
    max: usize,
    inner: Arc<Inner>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex_sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Idempotency {
    /// The keys kept in `queue`'s spool (read back after a restart).
    pub fn new(queue: Arc<Queue>, ttl: Duration, max: usize) -> Self {
        let mut order: Vec<(u64, String)> = queue
            .state_keys(PREFIX)
            .into_iter()
            .filter_map(|k| {
                let v = queue.state(&k)?;
                let kept: Kept = serde_json::from_slice(&v).ok()?;
                Some((kept.at, k))
            })
            .collect();
        order.sort();
        Self {
            queue,
            ttl,
            max: max.max(1),
            inner: Arc::new(Inner {
                order: Mutex::new((order.into(), HashSet::new())),
            }),
        }
    }

    /// Looks `key` up for a request whose body is `body`.
    pub fn begin(&self, key: &str, body: &[u8], now: SystemTime) -> Begin {
        let state_key = format!("{PREFIX}{}", hex_sha256(key.as_bytes()));
        let body = hex_sha256(body);
        let kept = self
            .queue
            .state(&state_key)
            .and_then(|v| serde_json::from_slice::<Kept>(&v).ok())
            .filter(|k| ms(now).saturating_sub(k.at) < self.ttl.as_millis() as u64);
        if let Some(k) = kept {
            return match k.body == body {
                true => Begin::Replay(k.response),
                false => Begin::Mismatch,
            };
        }
        let mut g = self.inner.lock();
        if !g.1.insert(state_key.clone()) {
            return Begin::Busy;
        }
        drop(g);
        Begin::Fresh(InFlight {
            owner: self.inner.clone(),
            state_key,
            body,
        })
    }

    /// Keeps the answer of a request served under its key (durable when
    /// this returns), then forgets expired and surplus keys.
    pub async fn finish(
        &self,
        f: InFlight,
        response: &SendResponse,
        now: SystemTime,
    ) -> Result<(), queue::QueueError> {
        let at = ms(now);
        let kept = Kept {
            at,
            body: f.body.clone(),
            response: response.clone(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&kept).unwrap_or_default());
        self.queue.put_state(&f.state_key, bytes).await?;
        let gone = {
            let mut g = self.inner.lock();
            g.0.push_back((at, f.state_key.clone()));
            let ttl = self.ttl.as_millis() as u64;
            let mut gone = Vec::new();
            while let Some((t, _)) = g.0.front() {
                if g.0.len() > self.max || at.saturating_sub(*t) >= ttl {
                    gone.extend(g.0.pop_front());
                } else {
                    break;
                }
            }
            gone
        };
        drop(f);
        for (t, k) in gone {
            // A key answered again since (after it expired) stays.
            let current = (self.queue.state(&k))
                .and_then(|v| serde_json::from_slice::<Kept>(&v).ok())
                .map(|k| k.at);
            if current != Some(t) {
                continue;
            }
            if let Err(e) = self.queue.put_state(&k, Bytes::new()).await {
                tracing::warn!(key = %k, error = %e, "cannot forget an idempotency key");
            }
        }
        Ok(())
    }
}
