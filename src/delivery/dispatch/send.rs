//! The SMTP side of a path's work: connecting from its source to the first
//! host of a route that answers, and delivering one job over an open
//! connection in transactions of at most `max_recipients_per_transaction`.
//! Reports outcomes as values; decides nothing about retries.

use std::collections::VecDeque;

use super::super::Delivery;
use super::super::job::Job;
use super::super::outcome::{Message, Outcome, Verdict};
use super::path::Path;
use crate::config::TlsPolicy;
use crate::dns::route::Route;
use crate::message::RecipientParams;
use crate::smtp::client::{
    ClientError, Connection, Greeting, RcptRequest, RcptResult, RemoteReply, TlsFailure,
    TxnRequest, local_reply,
};
use crate::tlspolicy::Session;

/// Why a worker could not connect.
pub(super) enum ConnectFailure {
    /// The source address cannot be bound, or its proxy fails: not the
    /// destination's fault (why).
    Source(String),
    /// No host answered (or all refused): defer with this reply; the last
    /// refusal a host itself sent, if any, is matched against the rules.
    Unreachable(RemoteReply, Option<RemoteReply>),
}

/// An outcome with where it was tried, and under which TLS policy.
pub(super) fn with_path(
    mut o: Outcome,
    path: &Path,
    route: &Route,
    host: Option<(String, std::net::SocketAddr)>,
) -> Outcome {
    o.tls_policy = Some(route.policy.label(route.tls));
    o.site = Some(path.site.clone());
    o.source = Some(path.source.clone());
    o.provider = path.plan.provider.clone();
    o.host = host;
    o
}

/// Counts a TLS session for `domain`'s policy (TLS reports).
pub(super) fn count_session(
    svc: &Delivery,
    path: &Path,
    domain: &str,
    route: &Route,
    c: &Connection,
) {
    let failure = c.tls_failure.as_ref().map(|(f, why)| (*f, why.as_str()));
    count(svc, path, domain, route, &c.host, c.peer, failure);
}

fn count(
    svc: &Delivery,
    path: &Path,
    domain: &str,
    route: &Route,
    mx_host: &str,
    mx: std::net::SocketAddr,
    failure: Option<(TlsFailure, &str)>,
) {
    let session = Session {
        source_ip: path.source.address,
        mx_host,
        mx_ip: mx.ip(),
        failure,
    };
    svc.settings.tls.get().session(domain, route, &session);
    let result = failure.map_or("ok", |(f, _)| f.result_type());
    (svc.settings.metrics).tls_session(route.policy.label(route.tls), result);
}

/// Connects to the first host of the route that answers, trying each of
/// its addresses the source can reach; an opportunistic TLS failure is
/// retried in plaintext on the same address. Each TLS session (or its
/// failure) is counted for `domain`'s policy.
pub(super) async fn connect(
    svc: &Delivery,
    path: &Path,
    domain: &str,
    route: &Route,
) -> Result<Connection, ConnectFailure> {
    let timeouts = &svc.settings.timeouts;
    let trace = crate::trace::OutboundTrace {
        tracer: svc.settings.tracer.clone(),
        session: svc.settings.tracer.next_session(),
        domain: domain.into(),
        source: path.source.name.clone(),
    };
    let mut last = None;
    let mut remote = None;
    for host in &route.hosts {
        for addr in host
            .addrs
            .iter()
            .copied()
            .filter(|a| path.source.reaches(*a))
        {
            let greeting = |tls| Greeting {
                ehlo: &path.source.ehlo,
                host: &host.name,
                tls,
                verifier: &svc.settings.verifier,
                dane: host.dane.as_deref(),
                timeouts,
                trace: &trace,
            };
            let first = Connection::open(&path.source, addr, &greeting(route.tls)).await;
            match &first {
                Ok(c) if greeting(route.tls).effective() != TlsPolicy::Off => {
                    count_session(svc, path, domain, route, c)
                }
                Err(ClientError::Tls(f, why)) => {
                    count(svc, path, domain, route, &host.name, addr, Some((*f, why)))
                }
                Err(ClientError::Rejected {
                    stage: "STARTTLS",
                    reply,
                }) => {
                    let why = reply.to_string();
                    let f = Some((TlsFailure::StartTlsNotSupported, why.as_str()));
                    count(svc, path, domain, route, &host.name, addr, f);
                }
                _ => {}
            }
            let result = match first {
                Err(ClientError::Tls(_, e))
                    if route.tls == TlsPolicy::Opportunistic && host.dane.is_none() =>
                {
                    tracing::info!(host = %host.name, %addr, error = %e, "TLS failed; retrying in plaintext");
                    Connection::open(&path.source, addr, &greeting(TlsPolicy::Off)).await
                }
                other => other,
            };
            match result {
                Ok(c) => return Ok(c),
                Err(ClientError::Bind(ip, e)) => {
                    return Err(ConnectFailure::Source(format!("cannot bind {ip}: {e}")));
                }
                Err(ClientError::Proxy(e)) if e.is_proxy_fault() => {
                    path.source.proxy_failed(&e);
                    return Err(ConnectFailure::Source(e.to_string()));
                }
                Err(e) => {
                    if let ClientError::Proxy(p) = &e {
                        path.source.proxy_failed(p);
                    }
                    if let ClientError::Rejected { reply, .. } = &e {
                        remote = Some(reply.clone());
                    }
                    tracing::debug!(host = %host.name, %addr, error = %e, "host unavailable; trying the next");
                    last = Some(format!("{} [{}]: {e}", host.name, addr.ip()));
                }
            }
        }
    }
    let why = last.unwrap_or_else(|| {
        format!(
            "no address of {} is reachable from source {}",
            route.site, path.source.name
        )
    });
    let reply = local_reply(
        451,
        [4, 4, 1],
        format!("no answer from any host of {}: {why}", route.site),
    );
    Err(ConnectFailure::Unreachable(reply, remote))
}

/// Delivers a job over an open connection, in transactions of at most
/// `max_rcpts`; recipients refused with "too many recipients" go in the
/// next transaction. Returns the outcomes and whether the connection can
/// be reused.
pub(super) async fn deliver(
    conn: &mut Connection,
    job: &Job,
    msg: &Message,
    max_rcpts: usize,
) -> (Vec<Outcome>, bool) {
    let env = &msg.info.envelope;
    let meta = &msg.meta;
    let body = msg.body.as_deref().unwrap_or_default();
    // Indexes into this message's envelope, made from it at admission.
    let rcpts = &job.rcpts;
    let params: Vec<RecipientParams> = rcpts
        .iter()
        .map(|i| RecipientParams::decode(&env.recipients[*i as usize].params))
        .collect();
    let smtputf8 = meta.smtputf8
        || !env.sender.is_ascii()
        || rcpts
            .iter()
            .any(|i| !env.recipients[*i as usize].address.is_ascii());
    let mut pending: VecDeque<usize> = (0..rcpts.len()).collect();
    let mut outcomes = Vec::with_capacity(rcpts.len());
    while !pending.is_empty() {
        let n = pending.len().min(max_rcpts.max(1));
        let batch: Vec<usize> = pending.drain(..n).collect();
        let reqs: Vec<RcptRequest<'_>> = batch
            .iter()
            .map(|k| RcptRequest {
                address: &env.recipients[rcpts[*k] as usize].address,
                notify: params[*k].notify,
                orcpt: params[*k].orcpt.as_deref(),
            })
            .collect();
        let req = TxnRequest {
            sender: &env.sender,
            recipients: &reqs,
            body,
            eight_bit: meta.content_8bit,
            smtputf8,
            ret: meta.ret,
            envid: meta.envid.as_deref(),
        };
        let (results, reusable) = conn.transaction(&req).await;
        // "Too many recipients" for the first of a transaction: the server
        // takes none at all now; those recipients are tried again later.
        let progress = results.iter().any(|r| !matches!(r, RcptResult::Again(_)));
        for (k, r) in batch.into_iter().zip(results) {
            let index = rcpts[k];
            match r {
                RcptResult::Delivered(rep) => {
                    outcomes.push(Outcome::new(index, Verdict::Delivered, rep))
                }
                RcptResult::Deferred(rep) => {
                    outcomes.push(Outcome::new(index, Verdict::Deferred, rep))
                }
                RcptResult::Failed(rep) => outcomes.push(Outcome::new(index, Verdict::Failed, rep)),
                RcptResult::Again(_) if progress => pending.push_back(k),
                RcptResult::Again(rep) => {
                    outcomes.push(Outcome::new(index, Verdict::Deferred, rep))
                }
            }
        }
        if !reusable {
            let reply = local_reply(451, [4, 4, 2], format!("connection to {} lost", conn.host));
            outcomes.extend(
                pending
                    .drain(..)
                    .map(|k| Outcome::new(rcpts[k], Verdict::Deferred, reply.clone())),
            );
            return (outcomes, false);
        }
    }
    (outcomes, true)
}
