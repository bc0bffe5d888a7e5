#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_spool::fuzzing::spool_file(data));
