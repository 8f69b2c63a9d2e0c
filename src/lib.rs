//! Tern: a high-throughput SMTP mail transfer agent for bulk routing.
//!
//! # Layout
//!
//! | component | owns | never does |
//! |---|---|---|
//! | [`cli`] | the `tern` command: `run`, `check-config`, `queue summary` | business logic |
//! | [`daemon`] | wiring: builds the components from the config, runs until shutdown | protocol work |
//! | [`config`] | the typed configuration model, loading and validation (every error at once) | I/O beyond reading the file |
//! | [`logging`] | the diagnostic log (tracing to stderr) | the delivery log (product output) |
//! | [`smtp::server`] | inbound ESMTP: sessions, limits, STARTTLS, AUTH, relay policy | touch the queue (it hands messages to the intake) |
//! | [`smtp::reply`] | every reply, and the one mapping of internal errors to replies | I/O |
//! | [`intake`] | completed transaction -> Received header, loop check, metadata -> `queue.enqueue()` | speak SMTP |
//! | [`shaping`] | rate limiting (GCRA) | I/O |
//! | `queue` (crate) | durability: the spool, group commit, recovery, compaction | SMTP, DNS, config files |
//!
//! Coming with the next pieces of work, in the places DESIGN.md gives them:
//! DKIM in `intake`, `dns`, `delivery`, `egress`, traffic `shaping`,
//! `admin`, `metrics`.
//!
//! # The message flow
//!
//! ```text
//! upstream app --SMTP--> smtp/server --> intake --> queue.enqueue() ==fsync==> 250
//!                                                        |
//!        delivery log <-- outcome per recipient <-- delivery (MX, source IP, shaping)
//! ```
//!
//! A message is answered 250 only after [`queue::Queue::enqueue`] returns,
//! that is, once its record is on stable storage. Today `tern run` accepts
//! mail into the queue; delivery arrives with its issue.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod intake;
pub mod logging;
pub mod shaping;
pub mod smtp;
