//! DNS: names today (syntax checks shared by config and SMTP); resolution,
//! MX handling and the resolver arrive with outbound delivery.

pub mod name;
