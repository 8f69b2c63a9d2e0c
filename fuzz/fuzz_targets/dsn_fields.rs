//! The bounce built from hostile host names, envelope ids, original recipients,
//! replies and messages. The checks live in `tests/fuzz/checks.rs`, which the normal
//! suite replays the corpus with.
#![no_main]

#[path = "../../tests/fuzz/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::dsn_fields(data));
