//! Tern: a high-throughput SMTP mail transfer agent for bulk routing.
//!
//! # Layout
//!
//! | component | owns | never does |
//! |---|---|---|
//! | [`cli`] | the `tern` command: `run`, `check-config`, `queue ...`, the admin verbs, `dkim keygen` | business logic |
//! | [`daemon`] | wiring: builds the components from the config, runs until shutdown | protocol work |
//! | [`config`] | the typed configuration model, loading and validation (every error at once); a leaf: it imports no other component | I/O beyond reading the file (and its shaping include and bounce rules) |
//! | [`prepare`] | loading what a valid config names, once: certificates, DKIM keys, CA roots, trust anchors (every failure at once, by key) | decide how they are used |
//! | [`logging`] | the diagnostic log (tracing to stderr) | the delivery log (product output) |
//! | [`smtp::server`] | inbound ESMTP: sessions, limits, STARTTLS, AUTH, relay policy | touch the queue (it hands messages to the intake) |
//! | [`smtp::reply`] | every reply, and the one mapping of internal errors to replies | I/O |
//! | [`inject`] | the HTTP injection API's work: request checks, templates (minijinja, MJML by mrml, compiled once and cached per version, kept in the spool), MIME per recipient (mail-builder), idempotency keys | speak HTTP (the admin handlers do); queue but through the intake |
//! | [`content`] | content changes the door may make before signing: quoted-printable for parts with over-long lines (`long_lines = "encode"`) | I/O; decide whether to (the listener's config does) |
//! | [`intake`] | completed transaction -> Received header, loop check, metadata, DKIM -> `queue.enqueue()` | speak SMTP |
//! | [`dkim`] | signing keys (loaded and checked at config load), the signing domain of a message, signing on its own threads | decide what a failure means (intake does) |
//! | [`shaping`] | per-path limits layered from `[shaping]` over `[delivery]`, provider matching by MX suffix, shared scopes (provider, domain, source totals), GCRA rates and connection leases, the local side of fleet-wide limits (a stock of slots granted by the fleet) | connect or send (delivery waits on its limiters); talk to Redis |
//! | [`cluster`] | the fleet (`[cluster]`): Redis link, shared rates and connection slots, heartbeats, fleet-wide actions, and the drain (hand the queue to peers exactly once; take over a peer's) | deliver mail; decide limits (shaping does) |
//! | [`node`] | whether this node takes new mail (accepting or draining), read by the door, health and the fleet | decide to drain |
//! | [`delivery`] | the scheduler (due messages -> jobs -> scheduled queues per destination, moved to paths only as fast as they can send), the dispatcher (egress paths, ready queues, connection workers), outcomes (statuses, retries, bounces) | parse SMTP replies (the client does) |
//! | [`message`] | what Tern keeps about a message beyond its envelope, and its encoding | I/O |
//! | [`views`] | the rows operators see of destinations and paths (shared by delivery, the API, the metrics) | anything but hold the types |
//! | [`dns`] | resolving MX and addresses (behind the `Resolver` trait), DNSSEC-validated lookups, routing a domain to a site, A-labels | connect to anything |
//! | [`tlspolicy`] | the TLS policy a domain publishes (DANE, MTA-STS with its cache in the spool) applied to its route; TLS-RPT counts and the daily reports (queued through the intake) | open SMTP connections; decide retries |
//! | [`egress`] | sources (a local address, or a public one behind a SOCKS5 or HAProxy egress proxy, and its handshake) and weighted pools | DNS, SMTP |
//! | [`smtp::client`] | outbound SMTP: connect, greet, STARTTLS, pipelined transactions | decide retries or bounces |
//! | [`log`] | the delivery log (JSON lines from a bounded buffer, a writer thread, rotation) | diagnostics; never makes delivery wait |
//! | [`admin`] | the operations HTTP API (health, queue views, suspensions and actions, retry, purge, bounce, rebind, reload, status page, `/metrics`, OpenAPI) and the CLI's client for it | send mail, change the spool format |
//! | [`metrics`] | metric definitions with help text, one recorder per daemon, Prometheus rendering | I/O |
//! | [`trace`] | live SMTP dialogues for `tern trace` (commands and replies, both sides), built only while someone watches | message content, credentials |
//! | [`clock`] | wall-clock time through tokio's clock; date formats | |
//! | [`swap`] | the current value of a part a reload replaces (egress, routes, intake routing, DKIM keys) | decide what a reload changes |
//! | [`state`] | Tern's own state kept in the spool (shaping actions, rebinds, warm-up counts): a slot per key, written by a keeper task | decide what the values mean |
//! | [`limits`] | the open-file limit: raised at start, compared with what the config needs | anything else |
//! | `queue` (crate) | durability: the spool, group commit, recovery, compaction | SMTP, DNS, config files |
//!
//! # The message flow
//!
//! ```text
//! upstream app --SMTP--> smtp/server --> intake --> queue.enqueue() ==fsync==> 250
//! upstream app --HTTP--> admin /v1/messages --> inject (render, MIME) --^      (202)
//!                                          |  ^
//!                          dkim signing threads (signed once, never again)
//!                                                        |
//!                 delivery::scheduler: take_due -> jobs (one per recipient domain)
//!                 routed by dns::route (MX -> site), held to its TLS policy
//!                 by tlspolicy (DANE, MTA-STS); scheduled queue per
//!                 destination (pool, site): metadata only, tenants by weight
//!                                                        |
//!                 pump: a job moves only when a path has room, a rate slot and
//!                 no hold; egress picks the source (pool, by weight)
//!                                                        |
//!                 delivery::dispatch: ready queue per path (source, site),
//!                 connection workers, in-flight budget, smtp::client
//!                                                        |
//!    delivery log <-- delivery::outcome: queue.record() ==fsync==> (bounce queued first)
//! ```
//!
//! In a fleet, limiters ask the cluster for slots in batches (one Redis
//! round trip per batch, never on the scheduler's path), and a drain moves
//! queued messages to peers: held there, removed here, then committed.
//!
//! A message is answered 250 only after [`queue::Queue::enqueue`] returns,
//! that is, once its record is on stable storage. Each job's outcomes are
//! recorded durably as it ends, so a restart resends only recipients not
//! yet recorded as done. Waiting (for a rate, a suspension, a pause) is
//! never written anywhere: after a restart every queued message is due and
//! the scheduled queues are built again. A restart takes new mail before
//! the spool is recovered: the queue opens after a glance (the highest id
//! and the saved state), and each queued message joins as soon as the
//! last spool file holding a record of it has been read (`[queue]
//! recover_in_background`).

pub mod admin;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod content;
pub mod daemon;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub mod egress;
pub mod events;
pub mod inject;
pub mod intake;
pub mod limits;
pub mod log;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod node;
pub mod prepare;
pub mod shaping;
pub mod smtp;
pub mod state;
pub mod swap;
pub mod tenants;
pub mod tlspolicy;
pub mod trace;
pub mod views;
