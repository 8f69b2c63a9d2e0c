//! The SMTP server session on arbitrary input. The checks live in
//! `tests/fuzz/checks.rs`, which the normal suite replays the corpus with.
#![no_main]

#[path = "../../tests/fuzz/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::smtp_session(data));
