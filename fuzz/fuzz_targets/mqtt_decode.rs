//! Fuzz target `mqtt_decode`: see `tests/support/harness.rs` (shared with `tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../../tests/support/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::mqtt_decode(data));
