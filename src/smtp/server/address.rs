//! Envelope address checks shared by MAIL and RCPT: a domain is required
//! (Tern relays; it has no local users), and non-ASCII needs SMTPUTF8.
//! Route tricks are not interpreted: `%` and `!` are ordinary local-part
//! characters, a quoted `@` stays in the local part, and source routes are
//! stripped by the parser, so the domain is always the part after the last
//! `@`. Relay permission never depends on the address anyway.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What is wrong with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AddressProblem {
    Syntax,
    NeedsSmtpUtf8,
}

/// Checks a mailbox `local@domain`.
pub(super) fn check(addr: &str, smtputf8: bool) -> Result<(), AddressProblem> {
    let Some(at) = addr.rfind('@') else {
        return Err(AddressProblem::Syntax);
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    if local.is_empty() || !valid_domain(domain) || addr.chars().any(char::is_control) {
        return Err(AddressProblem::Syntax);
    }
    if !smtputf8 && !addr.is_ascii() {
        return Err(AddressProblem::NeedsSmtpUtf8);
    }
    Ok(())
}

/// A domain name (labels of letters, digits, hyphens or UTF-8) or an
/// address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub(super) fn valid_domain(d: &str) -> bool {
    if let Some(lit) = d.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return match lit.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => lit.parse::<Ipv4Addr>().is_ok(),
        };
    }
    crate::config::names::is_mail_domain(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use AddressProblem::*;
        let cases: &[(&str, bool, Result<(), AddressProblem>)] = &[
            ("a@b.example", false, Ok(())),
            ("a%c@b.example", false, Ok(())),
            ("\"a@c\"@b.example", false, Ok(())),
            ("a@[192.0.2.1]", false, Ok(())),
            ("a@[IPv6:2001:db8::1]", false, Ok(())),
            ("a@[IPv6:nonsense]", false, Err(Syntax)),
            ("a@b.example.", false, Err(Syntax)),
            ("a@-b.example", false, Err(Syntax)),
            ("a@", false, Err(Syntax)),
            ("@b.example", false, Err(Syntax)),
            ("postmaster", false, Err(Syntax)),
            ("", false, Err(Syntax)),
            ("ü@b.example", false, Err(NeedsSmtpUtf8)),
            ("ü@bü.example", true, Ok(())),
        ];
        for (addr, utf8, want) in cases {
            assert_eq!(check(addr, *utf8), *want, "{addr}");
        }
    }
}
