//! Intake: turns a completed SMTP transaction into a queued message.
//!
//! It owns what happens between the end of the data and the `250`: the
//! Received header (written before the data arrives, so the body is never
//! copied), the loop check, Date and Message-ID when missing, the envelope
//! metadata, and `queue.enqueue()`, which returns only once the message is
//! durable. It never speaks SMTP: the server maps its errors to replies
//! (`smtp::reply::intake_refusal`). DKIM signing will sit here too.

pub mod headers;
pub mod meta;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use queue::{
    Envelope, EnvelopeRecipient, Health, MessageId, NewMessage, Queue, QueueError, Timestamp,
};

use meta::{MessageMeta, RecipientParams, Ret};

/// Why a complete message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The queue refused or failed the write; nothing was acknowledged.
    #[error("the queue did not take the message: {0}")]
    Queue(#[from] QueueError),
    /// More Received headers than allowed: a mail loop.
    #[error("mail loop: {received} Received headers (limit {limit})")]
    Loop {
        /// Received headers seen, ours included.
        received: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The queue holds as many messages as it may.
    #[error("the queue is at its message limit")]
    QueueFull,
}

/// Settings of one listener's intake.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// This MTA's name, for Received and Message-ID.
    pub hostname: String,
    /// More Received headers than this is a loop.
    pub max_received_headers: usize,
    /// Add Message-ID when missing.
    pub add_message_id: bool,
    /// Add Date when missing.
    pub add_date: bool,
    /// Refuse new mail while this many messages are queued (0: no limit).
    pub max_messages: u64,
}

/// Facts about the SMTP session a message came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub peer: IpAddr,
    /// Its EHLO/HELO name.
    pub helo: String,
    /// It said EHLO.
    pub esmtp: bool,
    /// The session is encrypted.
    pub tls: bool,
    /// The AUTH user, if any.
    pub user: Option<Arc<str>>,
}

/// One recipient of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedRecipient {
    /// `local@domain`.
    pub address: String,
    /// DSN parameters.
    pub params: RecipientParams,
}

/// A message whose data is complete, as the SMTP session hands it over.
#[derive(Debug)]
pub struct Submission {
    /// The id taken by [`Intake::begin`].
    pub id: MessageId,
    /// The reverse path (empty for `<>`).
    pub sender: String,
    /// The accepted recipients.
    pub recipients: Vec<SubmittedRecipient>,
    /// DSN ENVID.
    pub envid: Option<String>,
    /// DSN RET.
    pub ret: Option<Ret>,
    /// BODY=8BITMIME was declared.
    pub body_8bitmime: bool,
    /// SMTPUTF8 was declared.
    pub smtputf8: bool,
    /// The content has bytes above 127.
    pub content_8bit: bool,
    /// Tern's Received header, then the client's data.
    pub data: Vec<u8>,
    /// Where the client's data starts in `data`.
    pub data_start: usize,
}

/// The intake of one listener.
pub struct Intake {
    queue: Arc<Queue>,
    settings: IntakeSettings,
}

impl Intake {
    /// An intake that queues into `queue`.
    pub fn new(queue: Arc<Queue>, settings: IntakeSettings) -> Self {
        Self { queue, settings }
    }

    /// The queue's health (cheap).
    pub fn health(&self) -> Health {
        self.queue.health()
    }

    /// True when the queue is at its message limit (cheap).
    pub fn over_limit(&self) -> bool {
        self.settings.max_messages > 0 && self.queue.message_count() >= self.settings.max_messages
    }

    /// Starts a message: takes its queue id and writes the Received header
    /// into a buffer sized for the expected data, which the session then
    /// appends to. `only_rcpt` is the single recipient, if there is one.
    pub fn begin(
        &self,
        origin: &Origin,
        only_rcpt: Option<&str>,
        expected: usize,
    ) -> (MessageId, Vec<u8>) {
        let id = self.queue.allocate_id();
        let info = headers::ReceivedInfo {
            helo: &origin.helo,
            peer: origin.peer,
            hostname: &self.settings.hostname,
            esmtp: origin.esmtp,
            tls: origin.tls,
            authenticated: origin.user.is_some(),
        };
        let received = headers::received(&info, id, only_rcpt, SystemTime::now());
        // Without a SIZE hint, start at 16 KiB: typical messages then never
        // grow (and copy) the buffer while their data arrives.
        let expected = if expected == 0 {
            16 << 10
        } else {
            expected.clamp(1024, 1 << 20)
        };
        let mut buf = Vec::with_capacity(received.len() + expected + 2);
        buf.extend_from_slice(received.as_bytes());
        (id, buf)
    }

    /// Queues a complete message; returns once it is durable.
    pub async fn accept(&self, sub: Submission, origin: &Origin) -> Result<MessageId, IntakeError> {
        if self.over_limit() {
            return Err(IntakeError::QueueFull);
        }
        let now = SystemTime::now();
        let facts = headers::scan(&sub.data[sub.data_start..]);
        let hops = facts.received + 1;
        if hops > self.settings.max_received_headers {
            return Err(IntakeError::Loop {
                received: hops,
                limit: self.settings.max_received_headers,
            });
        }
        let data = self.add_missing_headers(sub.data, sub.data_start, sub.id, facts, now);
        let meta = MessageMeta {
            client_ip: Some(origin.peer),
            helo: origin.helo.clone(),
            auth_user: origin.user.as_deref().map(str::to_owned),
            envid: sub.envid,
            ret: sub.ret,
            body_8bitmime: sub.body_8bitmime,
            smtputf8: sub.smtputf8,
            content_8bit: sub.content_8bit,
        };
        let recipients = sub
            .recipients
            .into_iter()
            .map(|r| EnvelopeRecipient {
                address: r.address.into(),
                params: r.params.encode().into(),
            })
            .collect();
        let arrival = Timestamp::from_system_time(now);
        let msg = NewMessage {
            id: Some(sub.id),
            envelope: Envelope {
                sender: sub.sender.into(),
                meta: meta.encode().into(),
                recipients,
            },
            arrival,
            first_attempt: arrival,
            body: Bytes::from(data),
        };
        Ok(self.queue.enqueue(msg).await?)
    }

    /// Inserts Message-ID and Date after the Received header when the
    /// client's headers lack them (a copy, only in that case).
    fn add_missing_headers(
        &self,
        data: Vec<u8>,
        start: usize,
        id: MessageId,
        facts: headers::HeaderFacts,
        now: SystemTime,
    ) -> Vec<u8> {
        let mut extra = String::new();
        if self.settings.add_message_id && !facts.message_id {
            extra.push_str(&headers::message_id(id, &self.settings.hostname, now));
        }
        if self.settings.add_date && !facts.date {
            extra.push_str(&headers::date(now));
        }
        if extra.is_empty() {
            return data;
        }
        let mut out = Vec::with_capacity(data.len() + extra.len());
        out.extend_from_slice(&data[..start]);
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(&data[start..]);
        out
    }
}
