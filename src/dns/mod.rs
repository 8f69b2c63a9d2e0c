//! DNS: the resolver behind a trait, DNSSEC-validated lookups, and routing
//! of recipient domains to MX hosts and sites (name syntax is
//! [`crate::config::names`]).

pub mod dnssec;
pub mod resolver;
pub mod route;
