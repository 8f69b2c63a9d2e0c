//! Traffic shaping primitives. Today: the GCRA rate limiter (used for
//! failed-AUTH limits); per-destination shaping builds on it.

pub mod rate;
