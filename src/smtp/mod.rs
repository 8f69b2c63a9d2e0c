//! SMTP: the inbound server, and the replies it sends.

pub mod reply;
pub mod server;
pub mod tls;
