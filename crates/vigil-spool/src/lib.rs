//! The sensor's spool: a durable, bounded, ordered queue of encoded records.
//!
//! What it is: records keyed by their sequence number in a redb file. Every
//! append is one fsynced transaction; the sequence counter lives in the same
//! file, so numbers keep increasing across restarts and are never reused.
//! Records leave only when the server acknowledges them ([`Spool::ack_through`])
//! or, when the spool is full, oldest first — and those are counted.
//!
//! What it is not: it does not know what a record is (bytes in, bytes out), and
//! does no networking.
//!
//! [`SpoolView`] opens a spool read only, for `vigil-sensor inspect` while the
//! sensor is stopped: it never writes to the file (redb refuses to open one
//! that needs repair rather than repair it), and it cannot open a spool a
//! running sensor holds.

/// The fuzz target's entry point (`fuzz/`), shared with the replay of its corpus in `cargo test`.
#[doc(hidden)]
pub mod fuzzing;

use redb::{
    Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use std::path::Path;
use std::sync::Mutex;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const BYTES: &str = "bytes";
const DROPPED: &str = "dropped";

/// Default capacity: 512 MiB of encoded records.
pub const DEFAULT_CAPACITY_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool database: {0}")]
    Db(String),
    #[error("record {seq} is out of order (next is {next})")]
    OutOfOrder { seq: u64, next: u64 },
    #[error("a single record of {0} bytes exceeds the spool capacity")]
    TooLarge(usize),
    #[error("the spool is open in another process (a running sensor)")]
    InUse,
    #[error(
        "the spool was not closed cleanly (the sensor stopped abruptly); the sensor repairs it at its next start, and a read-only open does not"
    )]
    NeedsRepair,
    #[error("the spool file is corrupted: {0}")]
    Corrupted(String),
}

/// Runs a call into redb that reads the file, with a panic turned into
/// [`SpoolError::Corrupted`]. redb 4.5 panics on some corrupted files (an
/// `unreachable!` in its B-tree walk, found by `fuzz/`'s `spool_file` target;
/// reproducer in `fuzz/regressions/spool_file`) where it should return
/// `StorageError::Corrupted`. A spool file is the device's disk, outside the
/// process: never a reason to stop it.
fn guarded<T>(f: impl FnOnce() -> Result<T, SpoolError>) -> Result<T, SpoolError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the database reader panicked".into());
            Err(SpoolError::Corrupted(why))
        }
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for SpoolError {
            fn from(e: $t) -> Self { SpoolError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What [`Spool::open_recovering`] did with a spool it could not open or
/// trust: the damaged file is kept beside the new one, for a person to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Why the spool was not usable.
    pub reason: String,
    /// Where the damaged file went.
    pub moved_to: std::path::PathBuf,
    /// Records read back from it and kept (with their sequence numbers).
    pub kept: u64,
    /// Records it said it held that could not be read; `None` when not even
    /// its counters could be read.
    pub lost: Option<u64>,
    /// The first sequence number the new spool hands out.
    pub next_seq: u64,
}

/// Counters for health reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub records: u64,
    pub bytes: u64,
    /// Records evicted unsent because the spool was full (since creation).
    pub dropped: u64,
    pub next_seq: u64,
}

pub struct Spool {
    db: Database,
    capacity: u64,
    /// Guards sequence allocation so numbers are handed out exactly once.
    next: Mutex<u64>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Unix time in nanoseconds: the floor of sequence numbers after a spool was
/// lost, above any number handed out before (those count records one by one
/// from 1, or from an earlier such floor).
fn time_floor() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
        .unwrap_or(1)
}

/// What can be read of a damaged spool: its records in order until the first
/// that cannot be, and how many it said it held.
fn salvage(path: &Path) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
    // redb cannot walk a tree whose inner pages are damaged, nor open a file
    // cut short: then nothing is kept (and the loss is said).
    let Ok(db) = guarded(|| Database::create(path).map_err(SpoolError::from)) else {
        return (Vec::new(), None);
    };
    let held = guarded(|| stats(&db)).ok().map(|s| s.records);
    let mut kept = Vec::new();
    let mut after = 0;
    // In slices, so one bad page loses only what lies past it.
    while let Ok(part) = guarded(|| read_after(&db, after, 1024, 16 << 20)) {
        let Some(&(last, _)) = part.last() else { break };
        after = last;
        kept.extend(part);
    }
    (kept, held)
}

impl Spool {
    /// Opens the spool at `path`; when it cannot be opened or fails its
    /// integrity check (a disk that rotted, a file cut short), moves it aside,
    /// keeps what can be read of it in a new spool under the same sequence
    /// numbers, and says what it did. Sequence numbers stay above every one
    /// handed out before, so the server never takes a new record for a re-send.
    pub fn open_recovering(
        path: &Path,
        capacity_bytes: u64,
    ) -> Result<(Spool, Option<Recovery>), SpoolError> {
        let checked = guarded(|| {
            let mut db = match Database::create(path) {
                Ok(db) => db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(SpoolError::InUse),
                Err(e) => return Err(e.into()),
            };
            // Ok(false): redb found damage and repaired it; the file is sound again.
            db.check_integrity().map_err(SpoolError::from)?;
            Ok(())
        });
        let reason = match checked {
            Ok(()) => return Ok((Spool::open(path, capacity_bytes)?, None)),
            Err(SpoolError::InUse) => return Err(SpoolError::InUse),
            Err(e) => e.to_string(),
        };
        let moved_to = path.with_extension(format!("redb.damaged-{}", time_floor()));
        std::fs::rename(path, &moved_to)
            .map_err(|e| SpoolError::Db(format!("moving the damaged spool aside: {e}")))?;
        let (kept, held) = salvage(&moved_to);
        let spool = Spool::open(path, capacity_bytes)?;
        let last = kept.last().map_or(0, |(s, _)| *s);
        let next_seq = time_floor().max(last.saturating_add(1));
        {
            let tx = spool.db.begin_write()?;
            {
                let mut recs = tx.open_table(RECORDS)?;
                let mut meta = tx.open_table(META)?;
                let mut bytes = 0u64;
                for (seq, b) in &kept {
                    recs.insert(*seq, b.as_slice())?;
                    bytes += b.len() as u64;
                }
                meta.insert(BYTES, bytes)?;
                meta.insert(NEXT_SEQ, next_seq)?;
            }
            tx.commit()?;
        }
        if let Ok(mut n) = spool.next.lock() {
            *n = next_seq;
        }
        let kept_n = kept.len() as u64;
        Ok((
            spool,
            Some(Recovery {
                reason,
                moved_to,
                kept: kept_n,
                lost: held.map(|h| h.saturating_sub(kept_n)),
                next_seq,
            }),
        ))
    }

    pub fn open(path: &Path, capacity_bytes: u64) -> Result<Spool, SpoolError> {
        guarded(|| Spool::open_unguarded(path, capacity_bytes))
    }

    fn open_unguarded(path: &Path, capacity_bytes: u64) -> Result<Spool, SpoolError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        let next = {
            let mut meta = tx.open_table(META)?;
            let recs = tx.open_table(RECORDS)?;
            let stored = meta.get(NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
            let after_last = recs.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let next = stored.max(after_last).max(1);
            meta.insert(NEXT_SEQ, next)?;
            next
        };
        tx.commit()?;
        Ok(Spool {
            db,
            capacity: capacity_bytes,
            next: Mutex::new(next),
        })
    }

    /// Encodes and appends records in one durable transaction. `encode` gets
    /// each record's sequence number and returns its bytes.
    pub fn append<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        encode: impl FnMut(u64, T) -> Vec<u8>,
    ) -> Result<u64, SpoolError> {
        guarded(|| self.append_unguarded(items, encode))
    }

    fn append_unguarded<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        mut encode: impl FnMut(u64, T) -> Vec<u8>,
    ) -> Result<u64, SpoolError> {
        let mut next = self
            .next
            .lock()
            .map_err(|_| SpoolError::Db("sequence lock poisoned".into()))?;
        let tx = self.db.begin_write()?;
        let mut appended = 0;
        {
            let mut recs = tx.open_table(RECORDS)?;
            let mut meta = tx.open_table(META)?;
            let mut bytes = meta.get(BYTES)?.map(|v| v.value()).unwrap_or(0);
            let mut dropped = meta.get(DROPPED)?.map(|v| v.value()).unwrap_or(0);
            let mut seq = *next;
            for item in items {
                let data = encode(seq, item);
                let len = data.len() as u64;
                if len > self.capacity {
                    return Err(SpoolError::TooLarge(data.len()));
                }
                while bytes + len > self.capacity {
                    let Some((_, v)) = recs.pop_first()? else {
                        break;
                    };
                    bytes = bytes.saturating_sub(v.value().len() as u64);
                    dropped += 1;
                }
                recs.insert(seq, data.as_slice())?;
                bytes += len;
                seq += 1;
                appended += 1;
            }
            meta.insert(BYTES, bytes)?;
            meta.insert(DROPPED, dropped)?;
            meta.insert(NEXT_SEQ, seq)?;
            *next = seq;
        }
        tx.commit()?;
        Ok(appended)
    }

    /// Up to `max_records` records (and about `max_bytes`) with sequence > `after`, in order.
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        guarded(|| read_after(&self.db, after, max_records, max_bytes))
    }

    /// Removes every record with sequence ≤ `seq`: the server holds them.
    pub fn ack_through(&self, seq: u64) -> Result<u64, SpoolError> {
        guarded(|| self.ack_unguarded(seq))
    }

    fn ack_unguarded(&self, seq: u64) -> Result<u64, SpoolError> {
        let tx = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut recs = tx.open_table(RECORDS)?;
            let mut meta = tx.open_table(META)?;
            let mut bytes = meta.get(BYTES)?.map(|v| v.value()).unwrap_or(0);
            loop {
                let first = recs.first()?.map(|(k, v)| (k.value(), v.value().len()));
                let Some((k, v)) = first else { break };
                if k > seq {
                    break;
                }
                recs.remove(k)?;
                bytes = bytes.saturating_sub(v as u64);
                removed += 1;
            }
            meta.insert(BYTES, bytes)?;
        }
        tx.commit()?;
        Ok(removed)
    }

    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        guarded(|| stats(&self.db))
    }
}

/// A spool opened read only: what it holds, and nothing else.
pub struct SpoolView {
    db: ReadOnlyDatabase,
}

impl std::fmt::Debug for SpoolView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolView").finish_non_exhaustive()
    }
}

impl SpoolView {
    /// Opens an existing spool without changing it. Fails with
    /// [`SpoolError::InUse`] while a sensor has it open.
    pub fn open(path: &Path) -> Result<SpoolView, SpoolError> {
        guarded(|| match ReadOnlyDatabase::open(path) {
            Ok(db) => Ok(SpoolView { db }),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(SpoolError::InUse),
            Err(redb::DatabaseError::RepairAborted) => Err(SpoolError::NeedsRepair),
            Err(e) => Err(e.into()),
        })
    }

    /// As [`Spool::read_after`].
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        guarded(|| read_after(&self.db, after, max_records, max_bytes))
    }

    /// As [`Spool::stats`].
    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        guarded(|| stats(&self.db))
    }
}

fn read_after(
    db: &impl ReadableDatabase,
    after: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
    let tx = db.begin_read()?;
    let recs = tx.open_table(RECORDS)?;
    let mut out = Vec::new();
    let mut size = 0;
    for item in recs.range(after.saturating_add(1)..)? {
        let (k, v) = item?;
        if out.len() >= max_records || (size > 0 && size + v.value().len() > max_bytes) {
            break;
        }
        size += v.value().len();
        out.push((k.value(), v.value().to_vec()));
    }
    Ok(out)
}

fn stats(db: &impl ReadableDatabase) -> Result<SpoolStats, SpoolError> {
    let tx = db.begin_read()?;
    let recs = tx.open_table(RECORDS)?;
    let meta = tx.open_table(META)?;
    let get = |k| -> Result<u64, SpoolError> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
    Ok(SpoolStats {
        records: recs.len()?,
        bytes: get(BYTES)?,
        dropped: get(DROPPED)?,
        next_seq: get(NEXT_SEQ)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> impl FnMut(u64, usize) -> Vec<u8> {
        move |seq, _| vec![seq as u8; n]
    }

    /// Found by the fuzzer (fuzz/regressions/spool_file): redb panicked
    /// opening this file; the spool reports it as corrupted instead.
    #[test]
    fn a_file_redb_panics_on_is_an_error() {
        let crash = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/regressions/spool_file/crash-e235a1e87acefd65e329a5f80d05310004b60c8c"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool.redb");
        std::fs::copy(crash, &p).unwrap();
        assert!(matches!(SpoolView::open(&p), Err(SpoolError::Corrupted(_))));
        // Opened for writing, redb may repair it or refuse it: never a panic.
        if let Ok(s) = Spool::open(&p, 1 << 20) {
            let _ = s.read_after(0, 100, 1 << 20);
        }
    }

    #[test]
    fn sequences_survive_restart_and_acks_remove() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool.redb");
        {
            let s = Spool::open(&p, 1 << 20).unwrap();
            assert_eq!(s.append(0..3, bytes(4)).unwrap(), 3);
            assert_eq!(s.ack_through(2).unwrap(), 2);
        }
        let s = Spool::open(&p, 1 << 20).unwrap();
        s.append(0..2, bytes(4)).unwrap();
        let all = s.read_after(0, 100, 1 << 20).unwrap();
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(s.read_after(3, 1, 1 << 20).unwrap()[0].0, 4);
        let st = s.stats().unwrap();
        assert_eq!(
            (st.records, st.bytes, st.dropped, st.next_seq),
            (3, 12, 0, 6)
        );
    }

    #[test]
    fn full_spool_evicts_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.redb"), 10).unwrap();
        s.append(0..3, bytes(4)).unwrap();
        let st = s.stats().unwrap();
        assert_eq!((st.records, st.bytes, st.dropped), (2, 8, 1));
        assert_eq!(s.read_after(0, 10, 100).unwrap()[0].0, 2);
        assert!(matches!(
            s.append(0..1, bytes(11)),
            Err(SpoolError::TooLarge(11))
        ));
    }

    #[test]
    fn a_read_only_view_lists_what_a_closed_spool_holds_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool.redb");
        {
            let s = Spool::open(&p, 1 << 20).unwrap();
            s.append(0..5, bytes(8)).unwrap();
            s.ack_through(2).unwrap();
            // A running sensor holds the file: the view cannot open it.
            assert!(matches!(SpoolView::open(&p), Err(SpoolError::InUse)));
        }
        let before = std::fs::read(&p).unwrap();
        let v = SpoolView::open(&p).unwrap();
        let all = v.read_after(0, 100, 1 << 20).unwrap();
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(all[0].1, vec![3u8; 8]);
        let st = v.stats().unwrap();
        assert_eq!((st.records, st.bytes, st.next_seq), (3, 24, 6));
        drop(v);
        assert_eq!(std::fs::read(&p).unwrap(), before, "not a byte changed");
        // And the sensor opens it again as before.
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(s.stats().unwrap().records, 3);
    }

    #[test]
    fn read_is_bounded_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        s.append(0..10, bytes(100)).unwrap();
        assert_eq!(s.read_after(0, 100, 250).unwrap().len(), 2);
        // One oversized record is still returned alone, never stuck.
        assert_eq!(s.read_after(0, 100, 10).unwrap().len(), 1);
    }
}
