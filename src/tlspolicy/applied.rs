//! Which TLS policy governs a route, so that every delivery over it can
//! say so (the delivery log's `tls_policy`, the metrics, TLS reports).
//! A value type shared by routing, delivery and the policy component.

use super::sts::Mode;
use crate::config::TlsPolicy;

/// The policy in force for a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Applied {
    /// The configured `[delivery] tls`: the domain publishes no policy
    /// (or policies are not looked up).
    #[default]
    Configured,
    /// An operator's `[[route]]` (or a rebind) chose the hosts and the
    /// `tls`: published policies are not consulted.
    Operator,
    /// The domain's MTA-STS policy (`enforce` or `testing`).
    MtaSts(Mode),
    /// DANE: the domain's MX records are signed and some of its hosts
    /// have TLSA records (those hosts get authenticated TLS only).
    Dane,
}

impl Applied {
    /// As the delivery log and the metrics name it, given the route's
    /// resulting `tls`.
    pub fn label(self, tls: TlsPolicy) -> &'static str {
        match self {
            Self::MtaSts(Mode::Enforce) => "mta-sts",
            Self::MtaSts(_) => "mta-sts-testing",
            Self::Dane => "dane",
            Self::Configured | Self::Operator => match tls {
                TlsPolicy::Off => "off",
                TlsPolicy::Opportunistic => "opportunistic",
                TlsPolicy::Required => "required",
                TlsPolicy::Verify => "verify",
            },
        }
    }

    /// Whether a published policy applies (its sessions are reported).
    pub fn published(self) -> bool {
        matches!(self, Self::MtaSts(_) | Self::Dane)
    }
}
