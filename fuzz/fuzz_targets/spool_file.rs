#![no_main]

// libfuzzer-sys aborts on every panic, even one caught: redb panics on some
// corrupted files, and vigil-spool catches those and returns
// `SpoolError::Corrupted` (see `guarded` in its lib.rs). A panic raised in
// redb's sources is let through to that catch; any other still aborts, and
// one that escapes vigil-spool aborts too (libfuzzer-sys checks the result).
libfuzzer_sys::fuzz_target!(
    init: {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/redb-")) {
                abort(info);
            }
        }));
    },
    |data: &[u8]| vigil_spool::fuzzing::spool_file(data)
);
