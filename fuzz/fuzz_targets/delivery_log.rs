//! The delivery log's line encoding and the event exporter's reading of it,
//! with hostile field values. The checks live in `tests/fuzz/checks.rs`, which the normal
//! suite replays the corpus with.
#![no_main]

#[path = "../../tests/fuzz/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::delivery_log(data));
