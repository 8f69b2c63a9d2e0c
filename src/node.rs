//! Whether this node takes new mail: accepting, or draining (its queue is
//! being handed to its peers before it is switched off). Shared by the
//! SMTP listeners (a draining node greets with `421 4.3.2`), the health
//! endpoint (a load balancer drops a draining node), the fleet's
//! heartbeat and the drain. Holds the flag only; never decides to drain.

use std::sync::atomic::{AtomicU8, Ordering};

/// What a node does with new mail.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Takes new mail.
    Accepting,
    /// Refuses new mail (421) while its queue moves to its peers.
    Draining,
}

impl Mode {
    /// Its name, as the API and the fleet's status show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Accepting => "accepting",
            Mode::Draining => "draining",
        }
    }
}

/// The node's mode, read lock-free on every SMTP connection.
#[derive(Debug, Default)]
pub struct NodeState {
    draining: AtomicU8,
}

impl NodeState {
    /// The mode now.
    pub fn mode(&self) -> Mode {
        match self.draining.load(Ordering::Acquire) {
            0 => Mode::Accepting,
            _ => Mode::Draining,
        }
    }

    /// True while draining.
    pub fn draining(&self) -> bool {
        self.mode() == Mode::Draining
    }

    /// Puts the node in `mode`.
    pub fn set(&self, mode: Mode) {
        let v = match mode {
            Mode::Accepting => 0,
            Mode::Draining => 1,
        };
        self.draining.store(v, Ordering::Release);
    }
}
