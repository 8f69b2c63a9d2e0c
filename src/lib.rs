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
//! | `queue` (crate) | durability: the spool, group commit, recovery, compaction | SMTP, DNS, config files |
//!
//! Coming with the next pieces of work, in the places DESIGN.md gives them:
//! `smtp/server` (inbound ESMTP), `intake` (Received header, DKIM, enqueue),
//! `dns`, `delivery`, `egress`, `shaping`, `admin`, `metrics`.
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
//! that is, once its record is on stable storage. Today `tern run` opens
//! and recovers the spool and runs until SIGTERM/SIGINT; the SMTP listener
//! and delivery arrive with their issues.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod intake;
pub mod logging;
pub mod shaping;
pub mod smtp;
