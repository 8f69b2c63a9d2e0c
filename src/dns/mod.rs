//! DNS: the resolver behind a trait, name syntax, and routing of recipient
//! domains to MX hosts and sites.

pub mod dnssec;
pub mod name;
pub mod resolver;
pub mod route;
