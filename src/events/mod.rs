//! Delivery events out of Tern: the bounce classification every failure
//! and deferral gets ([`classify`]), and the export of the delivery log's
//! events (each line is one, with its `event_id`) to webhooks, read from
//! the log files from a durable cursor kept in the spool ([`export`]), so
//! a restart resumes where the sink acknowledged: at least once, in
//! order, never slowing delivery (the files are the buffer). Kafka is not
//! there yet (no Kafka-protocol broker can be run in CI here).

pub mod classify;
pub mod export;
pub mod reader;
pub mod webhook;
