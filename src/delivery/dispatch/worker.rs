//! A connection worker of an egress path: takes ready jobs, connects from
//! the path's source to the site's hosts in order, then sends job after
//! job over that connection (up to `max_messages_per_connection`), and
//! closes it when idle. Each send waits for room in the in-flight budget
//! (messages and bytes), and only then reads the message; its outcomes go
//! to `outcome` as values.

use std::sync::Arc;

use super::super::Delivery;
use super::super::job::Job;
use super::super::outcome::{Message, Outcome, Verdict};
use super::path::Path;
use super::send::{ConnectFailure, connect, count_session, deliver, with_path};
use crate::config::TlsPolicy;
use crate::shaping::limiter::Lease;
use crate::smtp::client::{Connection, local_reply};

/// Runs until the worker retires or shutdown aborts it.
pub(super) async fn run(svc: Arc<Delivery>, path: Arc<Path>) {
    tokio::select! {
        () = work(&svc, &path) => {}
        () = svc.aborted() => tracing::warn!(source = %path.source.name, site = %path.site, "connection dropped at shutdown"),
    }
}

/// What to do after a job.
enum Then {
    /// Take the next job.
    Next,
    /// Stop: the path cannot send (its ready jobs went back).
    Retire,
}

async fn work(svc: &Arc<Delivery>, path: &Arc<Path>) {
    let mut conn: Option<Connection> = None;
    let mut sent = 0;
    // Room for one connection (leases of the shared connection limits,
    // and its turn under the connection rates), taken before a job: a
    // worker waiting for room holds no job another could send.
    let mut room: Option<Vec<Lease>> = None;
    // The domains the open connection has been counted for (TLS reports).
    let mut counted: Vec<Arc<str>> = Vec::new();
    loop {
        let next = match conn.is_some() {
            true => path.next(svc).await,
            false => {
                // No connection: take room for one only while a job waits.
                if room.is_none() {
                    if path.leave_if_empty() {
                        break;
                    }
                    room = Some(path.connection_slot().await);
                }
                path.next_now(svc)
            }
        };
        let Some(job) = next else {
            break;
        };
        if path.send_hold(svc).is_some() || !svc.working() {
            path.give_back(svc, vec![job]);
            path.retire();
            break;
        }
        if conn.as_ref().is_some_and(|c| !suits(c, &job)) {
            // This domain requires (verified) TLS the open connection does
            // not have, or its policy does not name the connected host.
            path.close(conn.take(), true).await;
            drop(room.take()); // the new connection takes its own turn
            room = Some(path.connection_slot().await);
            sent = 0;
        }
        let job = match conn.is_none() {
            false => job,
            true => match open(svc, path, job).await {
                Ok((c, job)) => {
                    conn = Some(c);
                    sent = 0;
                    counted.clear();
                    counted.push(job.domain.clone());
                    job
                }
                Err(Then::Next) => {
                    room = None;
                    continue;
                }
                Err(Then::Retire) => {
                    path.retire();
                    break;
                }
            },
        };
        let c = conn.as_mut().expect("connected above");
        if job.route.policy.published() && !counted.contains(&job.domain) {
            // A session now serves this domain too: count it for its policy.
            count_session(svc, path, &job.domain, &job.route, c);
            counted.push(job.domain.clone());
        }
        let reusable = send(svc, path, &mut conn, job, sent > 0).await;
        sent += 1;
        if !reusable || sent >= path.plan.limits.max_messages_per_connection {
            path.close(conn.take(), reusable).await;
            room = None;
            sent = 0;
        }
    }
    path.close(conn.take(), true).await;
}

/// Opens a connection for `job`. A source that cannot be bound rests and
/// the path's jobs go back to their destinations (the pool's other
/// sources take them); a site that does not answer defers this job (a
/// real attempt) and, once it has failed `dead_site_failures` times in a
/// row, pauses the path (its ready jobs go back and wait).
async fn open(svc: &Arc<Delivery>, path: &Arc<Path>, job: Job) -> Result<(Connection, Job), Then> {
    match connect(svc, path, &job.domain, &job.route).await {
        Ok(c) => {
            path.connected();
            Ok((c, job))
        }
        Err(ConnectFailure::Source(why)) => {
            tracing::warn!(queue_id = %job.id, source = %path.source.name, site = %path.site, reason = %why, "the source cannot send; its jobs go back to their destinations");
            path.source.mark_unusable(tokio::time::Instant::now(), &why);
            path.give_back(svc, vec![job]);
            svc.holds_changed();
            Err(Then::Retire)
        }
        Err(ConnectFailure::Unreachable(reply, remote)) => {
            let paused = path.connection_failed(svc, &reply);
            if let Some(r) = &remote {
                path.react(svc, r, &job);
            }
            let outcomes = Outcome::all(&job.rcpts, Verdict::Deferred, &reply);
            settle_unsent(svc, path, job, outcomes).await;
            if paused {
                path.give_back(svc, Vec::new());
                svc.holds_changed();
                return Err(Then::Retire);
            }
            Err(Then::Next)
        }
    }
}

/// Whether the open connection `c` may carry `job`: TLS (verified) if
/// its route requires it, to a host its route names.
fn suits(c: &Connection, job: &Job) -> bool {
    let Some(host) = job.route.hosts.iter().find(|h| h.name == c.host) else {
        return false;
    };
    let tls = match &host.dane {
        Some(t) if t.authenticates() => return c.dane,
        Some(_) => TlsPolicy::Required,
        None => job.route.tls,
    };
    (c.tls || !tls.requires_tls()) && (c.verified || tls != TlsPolicy::Verify)
}

/// Settles a job that was not sent (its connection failed), if it still
/// holds its message.
async fn settle_unsent(svc: &Arc<Delivery>, path: &Path, job: Job, outcomes: Vec<Outcome>) {
    let Some(info) = svc.begin(&job) else {
        return;
    };
    let msg = Message::new(info, job.dest.pool.clone());
    let outcomes = outcomes
        .into_iter()
        .map(|o| with_path(o, path, &job.route, None))
        .collect();
    svc.settle(job.handout, msg, outcomes).await;
}

/// Sends one job over the open connection (its send slot under the path's
/// rates was taken when it was moved to the ready queue), within the
/// in-flight budget; reacts to a refusal; settles the outcomes. A pooled
/// connection (`reused`) the receiver closed before answering MAIL is
/// replaced by a new one and the job tried again at once: nothing can
/// have been accepted. Returns whether the connection can be reused.
async fn send(
    svc: &Arc<Delivery>,
    path: &Arc<Path>,
    conn: &mut Option<Connection>,
    job: Job,
    reused: bool,
) -> bool {
    let _budget = svc.in_flight.acquire(job.kib()).await;
    let Some(info) = svc.begin(&job) else {
        return true; // purged, bounced or moved meanwhile
    };
    let mut msg = Message::new(info, job.dest.pool.clone());
    path.state().sending += 1;
    let (outcomes, reusable) = match svc.bodies.read(job.id).await {
        Some(body) => {
            msg.body = Some(body);
            let c = conn.as_mut().expect("connected by the caller");
            let (mut done, retry) = transact(svc, path, c, &job, &msg, reused).await;
            if retry {
                tracing::info!(queue_id = %job.id, host = %c.host, "the receiver had closed the pooled connection; trying on a new one");
                if let Ok(fresh) = connect(svc, path, &job.domain, &job.route).await {
                    let c = conn.insert(fresh);
                    done = transact(svc, path, c, &job, &msg, false).await.0;
                }
            }
            done
        }
        None => {
            let reply = local_reply(554, [5, 3, 0], "message unreadable in the spool".into());
            (Outcome::all(&job.rcpts, Verdict::Failed, &reply), true)
        }
    };
    path.state().sending -= 1;
    let handout = job.handout;
    drop(job);
    svc.settle(handout, msg, outcomes).await;
    reusable
}

/// One job's transactions over the connection, with what they teach the
/// path (rules, slow-downs, the sending meter); and whether to try again
/// on a new connection (`may_retry`, and the receiver had closed this one
/// before anything was accepted).
async fn transact(
    svc: &Arc<Delivery>,
    path: &Path,
    c: &mut Connection,
    job: &Job,
    msg: &Message,
    may_retry: bool,
) -> ((Vec<Outcome>, bool), bool) {
    let max_rcpts = path.plan.limits.max_recipients_per_transaction as usize;
    let started = tokio::time::Instant::now();
    let (mut outcomes, reusable) = deliver(c, job, msg, max_rcpts).await;
    if may_retry
        && c.closed_before_mail
        && !outcomes.iter().any(|o| o.verdict == Verdict::Delivered)
    {
        // Nothing was accepted: the caller tries again on a new connection.
        return ((outcomes, false), true);
    }
    let provider = path.plan.provider.as_deref().unwrap_or("other");
    (svc.settings.metrics).transaction(provider, started.elapsed().as_secs_f64());
    path.bounce_by_rule(svc, &mut outcomes);
    if outcomes.iter().any(|o| o.verdict == Verdict::Delivered) {
        path.sent.add(1);
    }
    match outcomes.iter().find(|o| o.verdict != Verdict::Delivered) {
        Some(o) => path.react(svc, &o.reply, job),
        None => path.delivered(svc),
    }
    let host = Some((c.host.clone(), c.peer));
    let tls = match (c.verified, c.tls) {
        (true, _) => "verified",
        (false, true) => "tls",
        (false, false) => "none",
    };
    let outcomes = outcomes
        .into_iter()
        .map(|o| {
            let mut o = with_path(o, path, &job.route, host.clone());
            o.tls = Some(tls);
            o.next_hop_dsn = c.caps.dsn;
            o
        })
        .collect();
    ((outcomes, reusable), false)
}
