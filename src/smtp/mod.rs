//! SMTP: the inbound server, and the replies it sends.

pub mod client;
pub mod reply;
pub mod server;
pub mod tls;
