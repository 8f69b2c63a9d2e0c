//! Which queued messages an operator's command (retry, purge, bounce,
//! rebind) applies to: every criterion given must match. The one
//! definition, so the API, the CLI and delivery agree on it.

use queue::{MessageInfo, RecipientState};
use serde::{Deserialize, Serialize};

use crate::message::MessageMeta;

/// A selection of queued messages; an empty one selects them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Messages with a recipient still waiting at this domain.
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
}

impl Filter {
    /// True when no criterion is given (it selects every message).
    pub fn is_empty(&self) -> bool {
        self.domain.is_none()
            && self.sender.is_none()
            && self.tenant.is_none()
            && self.pool.is_none()
            && self.id.is_none()
    }

    /// What is wrong with a criterion, if anything (a queue id that is
    /// none).
    pub fn invalid(&self) -> Option<String> {
        let id = self.id.as_deref()?;
        id.parse::<queue::MessageId>()
            .err()
            .map(|e| format!("id {id:?}: {e}"))
    }

    /// True if the message matches; `meta` is its decoded metadata and
    /// `default_pool` the pool of messages that name none.
    pub fn matches(&self, m: &MessageInfo, meta: &MessageMeta, default_pool: &str) -> bool {
        let domain = self.domain.as_deref().is_none_or(|d| {
            m.envelope
                .recipients
                .iter()
                .zip(&m.statuses)
                .any(|(r, st)| {
                    st.state == RecipientState::Pending && r.domain().eq_ignore_ascii_case(d)
                })
        });
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
            .is_none_or(|p| meta.pool.as_deref().unwrap_or(default_pool) == p);
        let id =
            (self.id.as_deref()).is_none_or(|x| x.parse::<queue::MessageId>().ok() == Some(m.id));
        domain && sender && tenant && pool && id
    }
}
