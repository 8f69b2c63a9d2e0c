//! `[[listener]]`: where Tern accepts SMTP from upstream applications.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::load::{Issue, KeyPath, at};

/// One SMTP listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address and port to accept SMTP connections on.
    pub address: SocketAddr,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: default_address(),
        }
    }
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2525))
}

/// The listeners used when the file declares none: one on 127.0.0.1:2525.
pub fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig::default()]
}

pub(super) fn validate(listeners: &[ListenerConfig], issues: &mut Vec<Issue>) {
    if listeners.is_empty() {
        issues.push(Issue::new(
            at("listener"),
            "at least one listener is needed",
        ));
    }
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i]
            .iter()
            .any(|other| other.address == l.address)
        {
            issues.push(Issue::new(
                at("listener").index(i).field("address"),
                format!("{} is used by an earlier listener", l.address),
            ));
        }
    }
}
