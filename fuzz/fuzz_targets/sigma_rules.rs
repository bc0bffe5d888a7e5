#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_rules::fuzzing::rule_text(data));
