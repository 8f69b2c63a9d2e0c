//! Push-back shared by the fleet: every change of the shaping actions made
//! on one node (a rule's suspension or slow-down, a dead-site pause, an
//! operator's suspension or cancel) is kept in a Redis hash, for nodes
//! that start or reconnect later, and published on a channel, for the
//! nodes running now; each node applies what the others publish. Never
//! matches replies or holds mail (the rules and delivery do).
//!
//! While Redis is away each node goes on with its own actions; when it is
//! back a node reads the hash and adds what it did meanwhile, so the
//! fleet agrees again (an operator's cancel made on another node during
//! the outage is not seen: that action runs to its end).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::link::Link;
use crate::shaping::Shaper;
use crate::shaping::actions::Change;

/// One change as it travels: the node that made it, and what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    node: String,
    change: Change,
}

/// What listening needs.
pub(super) struct Listener {
    pub link: Arc<Link>,
    pub node: String,
    pub shaper: Arc<Shaper>,
    /// Told when the fleet changed the actions here.
    pub changed: Arc<dyn Fn() + Send + Sync>,
    pub clock: crate::clock::Clock,
}

fn field(change: &Change) -> String {
    serde_json::to_string(&change.key()).unwrap_or_default()
}

/// Keeps and publishes each change made here, until the node stops.
pub(super) async fn publish(
    link: Arc<Link>,
    node: String,
    mut rx: mpsc::UnboundedReceiver<Change>,
) {
    while let Some(change) = rx.recv().await {
        if link.up() {
            send(&link, &node, &change).await;
        }
    }
}

async fn send(link: &Link, node: &str, change: &Change) {
    let env = Envelope {
        node: node.to_owned(),
        change: change.clone(),
    };
    let text = serde_json::to_string(&env).unwrap_or_default();
    let hash = link.key("actions");
    let mut pipe = redis::pipe();
    match change {
        Change::Put { .. } => pipe.hset(&hash, field(change), &text).ignore(),
        Change::End { .. } => pipe.hdel(&hash, field(change)).ignore(),
    };
    pipe.publish(link.key("actions"), &text).ignore();
    let mut conn = link.conn();
    let _ = link.note(pipe.query_async::<()>(&mut conn).await);
}

/// Listens for the other nodes' changes, reconnecting with back-off;
/// after each (re)connection, reads the kept ones first.
pub(super) async fn listen(l: Listener) {
    let mut wait = Duration::from_millis(200);
    loop {
        if let Ok(mut ps) = l.link.pubsub().await
            && ps.subscribe(l.link.key("actions")).await.is_ok()
        {
            wait = Duration::from_millis(200);
            resync(&l).await;
            let mut stream = ps.on_message();
            while let Some(msg) = stream.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Envelope>(&text) {
                    Ok(env) if env.node != l.node => apply(&l, env),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: an unreadable action change was published; ignored")
                    }
                }
            }
            tracing::warn!(
                "cluster: the subscription to the fleet's actions was lost; reconnecting"
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

fn apply(l: &Listener, env: Envelope) {
    let key = env.change.key();
    if l.shaper.actions.apply(env.change, l.clock.system_time()) {
        tracing::info!(from = %env.node, target = %key, "cluster: action from the fleet applied");
        (l.changed)();
    }
}

/// Applies the kept changes, drops the ended ones from the hash, and
/// keeps (and publishes) this node's actions the hash lacks.
async fn resync(l: &Listener) {
    let mut conn = l.link.conn();
    let hash = l.link.key("actions");
    let kept: Vec<(String, String)> = match l.link.note(
        redis::cmd("HGETALL")
            .arg(&hash)
            .query_async(&mut conn)
            .await,
    ) {
        Ok(k) => k,
        Err(_) => return,
    };
    let actions = &l.shaper.actions;
    let now = l.clock.system_time();
    let mut changed = false;
    let mut fields = std::collections::HashSet::new();
    for (f, text) in kept {
        let Ok(env) = serde_json::from_str::<Envelope>(&text) else {
            continue;
        };
        let over = match &env.change {
            Change::Put { action } => action.rate.is_none() && ended(&action.end, now),
            Change::End { .. } => true,
        };
        if over {
            let _ = l.link.note(
                redis::cmd("HDEL")
                    .arg(&hash)
                    .arg(&f)
                    .query_async::<()>(&mut conn)
                    .await,
            );
            continue;
        }
        fields.insert(f);
        changed |= actions.apply(env.change, now);
    }
    for change in actions.as_changes() {
        if !fields.contains(&field(&change)) {
            send(&l.link, &l.node, &change).await;
        }
    }
    if changed {
        (l.changed)();
    }
}

fn ended(end: &str, now: std::time::SystemTime) -> bool {
    crate::clock::parse_rfc3339(end).is_none_or(|e| e <= now)
}
