//! What Tern keeps about a message and its recipients beyond the envelope
//! addresses, encoded into the queue's opaque `meta` and `params` bytes.
//! Its own home because every part reads it: the intake writes it, the
//! SMTP server parses its parameters, delivery, the SMTP client, bounces
//! and the admin API read it. It owns the types and their encoding; it
//! never does I/O.
//!
//! The encoding is a version byte followed by tag-length-value fields
//! (tag u8, length u16, value), so later versions can add fields and older
//! readers skip what they do not know. Values are stored as given (already
//! xtext-decoded); they are never written into headers or logs raw.

use std::net::IpAddr;

/// DSN `RET` (RFC 3461): what a bounce should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Headers only.
    Headers,
}

/// Message-level data kept with the envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageMeta {
    /// The client that submitted the message.
    pub client_ip: Option<IpAddr>,
    /// Its EHLO/HELO name.
    pub helo: String,
    /// The AUTH user, if the client authenticated.
    pub auth_user: Option<String>,
    /// DSN `ENVID`.
    pub envid: Option<String>,
    /// DSN `RET`.
    pub ret: Option<Ret>,
    /// `BODY=8BITMIME` was declared.
    pub body_8bitmime: bool,
    /// `SMTPUTF8` was declared.
    pub smtputf8: bool,
    /// The content holds bytes above 127 (needs 8BITMIME or conversion
    /// on the way out).
    pub content_8bit: bool,
    /// The pool to send from (`None`: the default pool).
    pub pool: Option<String>,
    /// The tenant the message belongs to.
    pub tenant: Option<String>,
    /// The Message-ID header, for logs.
    pub message_id: Option<String>,
    /// Where the message came from when another node handed it over.
    pub origin: Option<Origin>,
    /// The injecting application's own id (HTTP API), for its events.
    pub custom_id: Option<String>,
    /// The injecting application's own data (a JSON object, as text), for
    /// its events.
    pub metadata: Option<String>,
}

/// A message handed over by another node of the fleet: that node and the
/// message's id there (what a repeated hand-over is recognised by), and
/// when the message was due there (it is held here until the hand-over is
/// committed, then due then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The node that handed it over.
    pub node: String,
    /// Its queue id there.
    pub id: u64,
    /// When it was due there, in milliseconds since the epoch.
    pub due_ms: u64,
}

/// Per-recipient data kept with the envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientParams {
    /// DSN `NOTIFY` flags (smtp-proto's `RCPT_NOTIFY_*` bits).
    pub notify: u8,
    /// DSN `ORCPT`: the original recipient address (the parser keeps the
    /// address and drops its `rfc822;` type).
    pub orcpt: Option<String>,
}

const VERSION: u8 = 1;

const T_CLIENT_IP: u8 = 1;
const T_HELO: u8 = 2;
const T_AUTH_USER: u8 = 3;
const T_ENVID: u8 = 4;
const T_RET: u8 = 5;
const T_FLAGS: u8 = 6;
const T_POOL: u8 = 7;
const T_TENANT: u8 = 8;
const T_MESSAGE_ID: u8 = 9;
const T_ORIGIN: u8 = 10;
const T_CUSTOM_ID: u8 = 11;
const T_METADATA: u8 = 12;
const T_NOTIFY: u8 = 1;
const T_ORCPT: u8 = 2;

const F_8BITMIME: u8 = 1;
const F_SMTPUTF8: u8 = 2;
const F_CONTENT_8BIT: u8 = 4;

fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    let value = &value[..value.len().min(u16::MAX as usize)];
    out.push(tag);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// Walks the fields of an encoding; stops quietly at anything malformed.
fn fields(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = match bytes.split_first() {
        Some((&VERSION, rest)) => rest,
        _ => &[][..],
    };
    std::iter::from_fn(move || {
        let (&tag, tail) = rest.split_first()?;
        let len = u16::from_le_bytes(tail.get(..2)?.try_into().ok()?) as usize;
        let value = tail.get(2..2 + len)?;
        rest = &tail[2 + len..];
        Some((tag, value))
    })
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl MessageMeta {
    /// Encodes for the queue's `meta`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        if let Some(ip) = self.client_ip {
            put(&mut out, T_CLIENT_IP, ip.to_string().as_bytes());
        }
        put(&mut out, T_HELO, self.helo.as_bytes());
        if let Some(u) = &self.auth_user {
            put(&mut out, T_AUTH_USER, u.as_bytes());
        }
        if let Some(e) = &self.envid {
            put(&mut out, T_ENVID, e.as_bytes());
        }
        if let Some(r) = self.ret {
            put(&mut out, T_RET, &[matches!(r, Ret::Full) as u8]);
        }
        let flags = (u8::from(self.body_8bitmime) * F_8BITMIME)
            | (u8::from(self.smtputf8) * F_SMTPUTF8)
            | (u8::from(self.content_8bit) * F_CONTENT_8BIT);
        put(&mut out, T_FLAGS, &[flags]);
        for (tag, value) in [
            (T_POOL, &self.pool),
            (T_TENANT, &self.tenant),
            (T_MESSAGE_ID, &self.message_id),
            (T_CUSTOM_ID, &self.custom_id),
            (T_METADATA, &self.metadata),
        ] {
            if let Some(v) = value {
                put(&mut out, tag, v.as_bytes());
            }
        }
        if let Some(o) = &self.origin {
            let mut v = Vec::with_capacity(16 + o.node.len());
            v.extend_from_slice(&o.id.to_le_bytes());
            v.extend_from_slice(&o.due_ms.to_le_bytes());
            v.extend_from_slice(o.node.as_bytes());
            put(&mut out, T_ORIGIN, &v);
        }
        out
    }

    /// Decodes; unknown fields are skipped, damage yields defaults.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut m = Self::default();
        for (tag, v) in fields(bytes) {
            match tag {
                T_CLIENT_IP => m.client_ip = text(v).parse().ok(),
                T_HELO => m.helo = text(v),
                T_AUTH_USER => m.auth_user = Some(text(v)),
                T_ENVID => m.envid = Some(text(v)),
                T_RET => {
                    m.ret = v
                        .first()
                        .map(|b| if *b == 1 { Ret::Full } else { Ret::Headers })
                }
                T_POOL => m.pool = Some(text(v)),
                T_TENANT => m.tenant = Some(text(v)),
                T_MESSAGE_ID => m.message_id = Some(text(v)),
                T_CUSTOM_ID => m.custom_id = Some(text(v)),
                T_METADATA => m.metadata = Some(text(v)),
                T_ORIGIN if v.len() >= 16 => {
                    let (id, rest) = v.split_at(8);
                    let (due, node) = rest.split_at(8);
                    m.origin = Some(Origin {
                        node: text(node),
                        id: u64::from_le_bytes(id.try_into().unwrap_or_default()),
                        due_ms: u64::from_le_bytes(due.try_into().unwrap_or_default()),
                    });
                }
                T_FLAGS => {
                    let f = v.first().copied().unwrap_or(0);
                    m.body_8bitmime = f & F_8BITMIME != 0;
                    m.smtputf8 = f & F_SMTPUTF8 != 0;
                    m.content_8bit = f & F_CONTENT_8BIT != 0;
                }
                _ => {}
            }
        }
        m
    }
}

impl RecipientParams {
    /// Encodes for the queue's per-recipient `params` (empty when there is
    /// nothing to keep, so plain recipients cost no bytes).
    pub fn encode(&self) -> Vec<u8> {
        if self.notify == 0 && self.orcpt.is_none() {
            return Vec::new();
        }
        let mut out = vec![VERSION];
        if self.notify != 0 {
            put(&mut out, T_NOTIFY, &[self.notify]);
        }
        if let Some(o) = &self.orcpt {
            put(&mut out, T_ORCPT, o.as_bytes());
        }
        out
    }

    /// Decodes; damage yields defaults.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut p = Self::default();
        for (tag, v) in fields(bytes) {
            match tag {
                T_NOTIFY => p.notify = v.first().copied().unwrap_or(0),
                T_ORCPT => p.orcpt = Some(text(v)),
                _ => {}
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_meta_round_trips() {
        let m = MessageMeta {
            client_ip: Some("192.0.2.7".parse().unwrap()),
            helo: "app.example".into(),
            auth_user: Some("shop".into()),
            envid: Some("abc\r\n".into()),
            ret: Some(Ret::Headers),
            body_8bitmime: true,
            smtputf8: false,
            content_8bit: true,
            pool: Some("transactional".into()),
            tenant: Some("shop".into()),
            message_id: Some("<a@b>".into()),
            origin: Some(Origin {
                node: "mta-17".into(),
                id: 42,
                due_ms: 1_700_000_000_000,
            }),
            custom_id: Some("order-42".into()),
            metadata: Some("{\"campaign\":\"bf\"}".into()),
        };
        assert_eq!(MessageMeta::decode(&m.encode()), m);
        assert_eq!(MessageMeta::decode(&[]), MessageMeta::default());
        assert_eq!(
            MessageMeta::decode(&[1, 2, 200]),
            MessageMeta::default(),
            "truncated field is ignored"
        );
    }

    #[test]
    fn recipient_params_round_trip_and_cost_nothing_when_empty() {
        assert!(RecipientParams::default().encode().is_empty());
        let p = RecipientParams {
            notify: 3,
            orcpt: Some("rfc822;a@b".into()),
        };
        assert_eq!(RecipientParams::decode(&p.encode()), p);
        let mut unknown = p.encode();
        unknown.extend_from_slice(&[99, 1, 0, 7]);
        assert_eq!(
            RecipientParams::decode(&unknown),
            p,
            "unknown tags are skipped"
        );
    }
}
