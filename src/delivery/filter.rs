//! Which queued messages an operator's command (list, retry, hold,
//! release, purge, bounce, rebind) applies to: every criterion given must
//! match. The one definition, so the API, the CLI and delivery agree on
//! it. Rebinds, which are kept and matched against mail as it is
//! delivered, take only the criteria a message carries itself (see
//! [`Filter::durable_only`]).

use std::sync::Arc;

use queue::{MessageInfo, RecipientState, Timestamp};
use serde::{Deserialize, Serialize};

use crate::message::MessageMeta;

/// Where a queued message stands, as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Held by an operator (`tern hold`).
    Held,
    /// Being sent now.
    Sending,
    /// Due, waiting for its turn at its destination (a connection, a rate,
    /// a suspension or a warm-up limit).
    Waiting,
    /// Tried and deferred: due again later.
    Deferred,
    /// Not tried yet.
    New,
}

impl MessageState {
    /// The state of a message (held first: a held message with other
    /// recipients still pending shows as held).
    pub fn of(m: &MessageInfo) -> Self {
        if m.is_held() {
            Self::Held
        } else if m.in_flight {
            Self::Sending
        } else if m.scheduled {
            Self::Waiting
        } else if m.pending().any(|(i, _)| m.statuses[i].attempts > 0) {
            Self::Deferred
        } else {
            Self::New
        }
    }

    /// Its name, as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Sending => "sending",
            Self::Waiting => "waiting",
            Self::Deferred => "deferred",
            Self::New => "new",
        }
    }
}

impl std::str::FromStr for MessageState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            Self::Held,
            Self::Sending,
            Self::Waiting,
            Self::Deferred,
            Self::New,
        ];
        all.into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s:?} is not a state: held, sending, waiting, deferred or new"))
    }
}

/// A selection of queued messages; an empty one selects them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Messages with a recipient still waiting (pending or held) at this
    /// domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Messages from this envelope sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Messages of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Messages of this pool (a message without one is in the default
    /// pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// One message, by its queue id (`000660F166A12D28`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Messages with a recipient waiting at a domain routed to this site
    /// (as `tern queue by site` names it; a domain not routed yet matches
    /// no site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Messages with a recipient waiting at a site of this provider
    /// (`[[shaping.provider]]` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Messages in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MessageState>,
    /// Messages queued at least this many seconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_secs: Option<u64>,
}

/// What matching needs besides the message itself.
pub struct Scope<'a> {
    /// The pool of messages that name none.
    pub default_pool: &'a str,
    /// Now, for `older_than_secs`.
    pub now: Timestamp,
    /// Where domains were routed, for `site` and `provider` (`None`:
    /// nothing is routed, so those match nothing).
    pub routes: Option<&'a super::Delivery>,
}

impl Filter {
    /// True when no criterion is given (it selects every message).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// What is wrong with a criterion, if anything (a queue id that is
    /// none).
    pub fn invalid(&self) -> Option<String> {
        let id = self.id.as_deref()?;
        id.parse::<queue::MessageId>()
            .err()
            .map(|e| format!("id {id:?}: {e}"))
    }

    /// The criteria a kept rule (a rebind) cannot take, named, if any is
    /// given: a site, a provider, a state and an age change as the mail
    /// waits.
    pub fn durable_only(&self) -> Option<&'static str> {
        match () {
            _ if self.site.is_some() => Some("site"),
            _ if self.provider.is_some() => Some("provider"),
            _ if self.state.is_some() => Some("state"),
            _ if self.older_than_secs.is_some() => Some("older_than_secs"),
            _ => None,
        }
    }

    /// True if the message matches; `meta` is its decoded metadata.
    /// Whether [`Filter::matches`] reads the message's metadata (its
    /// tenant or pool): a sweep decodes it only then.
    pub fn needs_meta(&self) -> bool {
        self.tenant.is_some() || self.pool.is_some()
    }

    pub fn matches(&self, m: &MessageInfo, meta: &MessageMeta, scope: &Scope<'_>) -> bool {
        let sender = self
            .sender
            .as_deref()
            .is_none_or(|x| m.envelope.sender.eq_ignore_ascii_case(x));
        let tenant = self
            .tenant
            .as_deref()
            .is_none_or(|t| meta.tenant.as_deref() == Some(t));
        let pool = self
            .pool
            .as_deref()
            .is_none_or(|p| meta.pool.as_deref().unwrap_or(scope.default_pool) == p);
        let id =
            (self.id.as_deref()).is_none_or(|x| x.parse::<queue::MessageId>().ok() == Some(m.id));
        let state = self.state.is_none_or(|s| MessageState::of(m) == s);
        let age = self.older_than_secs.is_none_or(|secs| {
            scope.now.saturating_since(m.arrival) >= std::time::Duration::from_secs(secs)
        });
        sender && tenant && pool && id && state && age && self.matches_recipients(m, scope)
    }

    /// The criteria on where a waiting recipient goes.
    fn matches_recipients(&self, m: &MessageInfo, scope: &Scope<'_>) -> bool {
        if self.domain.is_none() && self.site.is_none() && self.provider.is_none() {
            return true;
        }
        let site_of = |domain: &str| -> Option<Arc<str>> {
            scope.routes?.known_site(&domain.to_ascii_lowercase())
        };
        m.envelope
            .recipients
            .iter()
            .zip(&m.statuses)
            .filter(|(_, st)| {
                st.state == RecipientState::Pending || st.state == RecipientState::Held
            })
            .any(|(r, _)| {
                let domain =
                    (self.domain.as_deref()).is_none_or(|d| r.domain().eq_ignore_ascii_case(d));
                let site = (self.site.as_deref())
                    .is_none_or(|s| site_of(r.domain()).as_deref() == Some(s));
                let provider = (self.provider.as_deref()).is_none_or(|p| {
                    let routes = scope.routes;
                    site_of(r.domain())
                        .and_then(|site| routes?.settings.shaper.provider_name(&site))
                        .is_some_and(|name| name.eq_ignore_ascii_case(p))
                });
                domain && site && provider
            })
    }
}
