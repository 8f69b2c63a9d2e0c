//! DKIM signing of arbitrary messages. The checks live in
//! `tests/fuzz/checks.rs`, which the normal suite replays the corpus with.
#![no_main]

#[path = "../../tests/fuzz/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::dkim_sign(data));
