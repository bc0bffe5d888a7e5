//! Entry point for the fuzz target (`fuzz/`, cargo-fuzz) and for the replay
//! of its corpus and regressions in `cargo test` (`tests/fuzz_regressions.rs`).
//! Not an API.

use crate::{Spool, SpoolView};
use std::sync::atomic::{AtomicU64, Ordering};

/// A spool file of any bytes: opened read only and read whole, then opened
/// for writing as the sensor does and read, appended to and acknowledged. Errors are fine; a
/// panic is not.
pub fn spool_file(data: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    // A directory each: a damaged file is set aside beside the spool.
    let dir = std::env::temp_dir().join(format!(
        "vigil-spool-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join("spool.redb");
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(&path, data).is_err() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if let Ok(view) = SpoolView::open(&path) {
        let _ = view.stats();
        read_all(|after| view.read_after(after, 1024, 1 << 20));
        drop(view);
    }
    // As the sensor opens it: checked first, set aside when damaged. (Plain
    // `Spool::open` trusts the file, and redb 4.5 can abort the process on
    // a damaged one: fuzz/regressions/spool_file/crash-3697….)
    if let Ok((spool, _)) = Spool::open_recovering(&path, 1 << 20) {
        let _ = spool.stats();
        read_all(|after| spool.read_after(after, 1024, 1 << 20));
        let _ = spool.append([b"fuzz".to_vec()], |_, b| (b, crate::Priority::Bulk));
        let _ = spool.ack_through(u64::MAX / 2);
        let _ = spool.stats();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads every record in order, as export and inspect do.
fn read_all<E>(mut read: impl FnMut(u64) -> Result<Vec<(u64, Vec<u8>)>, E>) {
    let mut after = 0;
    for _ in 0..1024 {
        match read(after) {
            Ok(batch) => match batch.last() {
                Some(&(seq, _)) => {
                    assert!(
                        batch.iter().all(|(s, _)| *s > after),
                        "records out of order"
                    );
                    after = seq;
                }
                None => return,
            },
            Err(_) => return,
        }
    }
}
