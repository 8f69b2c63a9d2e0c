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
use crate::delivery::rebind::{self, Rebind, Rebinds};
use crate::shaping::Shaper;
use crate::shaping::actions::Change;

/// One change as it travels: the node that made it, and what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope<C> {
    node: String,
    change: C,
}

/// What listening needs.
pub(super) struct Listener {
    pub link: Arc<Link>,
    pub node: String,
    pub shaper: Arc<Shaper>,
    /// Told when the fleet changed the actions here.
    pub changed: Arc<dyn Fn() + Send + Sync>,
    pub rebinds: Arc<Rebinds>,
    /// Told of a rebind made on another node (to keep it and move its
    /// mail here).
    pub rebound: Arc<dyn Fn(Rebind) + Send + Sync>,
    /// Told of a rebind ended on another node (to keep that).
    pub rebound_ended: Arc<dyn Fn() + Send + Sync>,
    pub clock: crate::clock::Clock,
}

/// The changes made on this node, to publish.
pub(super) struct Outboxes {
    pub actions: mpsc::UnboundedReceiver<Change>,
    pub rebinds: mpsc::UnboundedReceiver<rebind::Change>,
}

fn field(change: &Change) -> String {
    serde_json::to_string(&change.key()).unwrap_or_default()
}

fn rebind_field(change: &rebind::Change) -> String {
    match change {
        rebind::Change::Put { rebind } => rebind.id.to_string(),
        rebind::Change::End { id } => id.to_string(),
    }
}

/// Keeps and publishes each change made here, until the node stops.
pub(super) async fn publish(link: Arc<Link>, node: String, mut out: Outboxes) {
    loop {
        tokio::select! {
            Some(c) = out.actions.recv() => {
                if link.up() {
                    send(&link, &node, &c).await;
                }
            }
            Some(c) = out.rebinds.recv() => {
                if link.up() {
                    send_rebind(&link, &node, &c).await;
                }
            }
            else => return,
        }
    }
}

/// Keeps (or, with no text, drops) `field` in the hash `name`, and
/// publishes `published` on the channel of the same name.
async fn keep_and_publish(
    link: &Link,
    name: &str,
    (field, kept): (String, Option<String>),
    published: &str,
) {
    let hash = link.key(name);
    let mut pipe = redis::pipe();
    match kept {
        Some(t) => pipe.hset(&hash, field, t).ignore(),
        None => pipe.hdel(&hash, field).ignore(),
    };
    pipe.publish(link.key(name), published).ignore();
    let mut conn = link.conn();
    let _ = link.note(pipe.query_async::<()>(&mut conn).await);
}

async fn send(link: &Link, node: &str, change: &Change) {
    let env = Envelope {
        node: node.to_owned(),
        change: change.clone(),
    };
    let text = serde_json::to_string(&env).unwrap_or_default();
    let kept = matches!(change, Change::Put { .. }).then(|| text.clone());
    keep_and_publish(link, "actions", (field(change), kept), &text).await;
}

async fn send_rebind(link: &Link, node: &str, change: &rebind::Change) {
    let env = Envelope {
        node: node.to_owned(),
        change: change.clone(),
    };
    let text = serde_json::to_string(&env).unwrap_or_default();
    let kept = matches!(change, rebind::Change::Put { .. }).then(|| text.clone());
    keep_and_publish(link, "rebinds", (rebind_field(change), kept), &text).await;
}

/// Listens for the other nodes' changes, reconnecting with back-off;
/// after each (re)connection, reads the kept ones first.
pub(super) async fn listen(l: Listener) {
    let mut wait = Duration::from_millis(200);
    let rebinds = l.link.key("rebinds");
    loop {
        if let Ok(mut ps) = l.link.pubsub().await
            && ps.subscribe(l.link.key("actions")).await.is_ok()
            && ps.subscribe(&rebinds).await.is_ok()
        {
            wait = Duration::from_millis(200);
            resync(&l).await;
            resync_rebinds(&l).await;
            let mut stream = ps.on_message();
            while let Some(msg) = stream.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                match msg.get_channel_name() == rebinds {
                    true => on_rebind(&l, &text),
                    false => on_action(&l, &text),
                }
            }
            tracing::warn!(
                "cluster: the subscription to the fleet's changes was lost; reconnecting"
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

fn on_action(l: &Listener, text: &str) {
    match serde_json::from_str::<Envelope<Change>>(text) {
        Ok(env) if env.node != l.node => apply(l, env),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cluster: an unreadable action change was published; ignored")
        }
    }
}

fn on_rebind(l: &Listener, text: &str) {
    match serde_json::from_str::<Envelope<rebind::Change>>(text) {
        Ok(env) if env.node != l.node => apply_rebind(l, env.change),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cluster: an unreadable rebind was published; ignored")
        }
    }
}

fn apply_rebind(l: &Listener, change: rebind::Change) {
    let (changed, new) = l.rebinds.apply(change);
    match new {
        Some(rule) => (l.rebound)(rule),
        None if changed => {
            tracing::info!("cluster: a rebind was ended by another node");
            (l.rebound_ended)();
        }
        None => {}
    }
}

/// Applies the rebinds kept in Redis; keeps there this node's that it
/// lacks.
async fn resync_rebinds(l: &Listener) {
    let mut conn = l.link.conn();
    let hash = l.link.key("rebinds");
    let all = redis::cmd("HGETALL")
        .arg(&hash)
        .query_async(&mut conn)
        .await;
    let Ok(kept) = l.link.note::<Vec<(String, String)>>(all) else {
        return;
    };
    let mut ids = std::collections::HashSet::new();
    for (f, text) in kept {
        if let Ok(env) = serde_json::from_str::<Envelope<rebind::Change>>(&text) {
            ids.insert(f);
            apply_rebind(l, env.change);
        }
    }
    for rebind in l.rebinds.list(l.clock.system_time()) {
        if !ids.contains(&rebind.id.to_string()) {
            send_rebind(
                &l.link,
                &l.node,
                &rebind::Change::Put {
                    rebind: Box::new(rebind),
                },
            )
            .await;
        }
    }
}

fn apply(l: &Listener, env: Envelope<Change>) {
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
        let Ok(env) = serde_json::from_str::<Envelope<Change>>(&text) else {
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
