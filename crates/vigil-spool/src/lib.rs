//! The sensor's spool: a durable, bounded, ordered queue of encoded records.
//!
//! What it is: records keyed by their sequence number in a redb file. Every
//! append is one fsynced transaction; the sequence counter lives in the same
//! file, so numbers keep increasing across restarts and are never reused.
//! Records leave only when the server acknowledges them ([`Spool::ack_through`])
//! or, when the spool is full, oldest first — and those are counted.
//!
//! Full has two meanings: the spool's capacity, and the disk it lives on. The
//! spool keeps `min_free` bytes of its filesystem free (counting the holes
//! redb leaves in its file as taken: they fill as it writes), and when a write
//! would cut into that, or the disk fills anyway, it stops growing and makes
//! room the same way. Either way [`Priority::Bulk`] records go first, oldest
//! first; [`Priority::Keep`] records (detections, health) only when nothing
//! else is left. After an I/O error redb refuses every further call until the
//! file is reopened: the spool reopens it at the next call, so a disk that
//! filled and emptied again needs no restart.
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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// The sequence numbers of [`Priority::Keep`] records (few: a set beside the records).
const KEPT: TableDefinition<u64, ()> = TableDefinition::new("kept");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const BYTES: &str = "bytes";
const DROPPED: &str = "dropped";
const DROPPED_DISK: &str = "dropped_disk_full";
const DROPPED_KEPT: &str = "dropped_priority";

/// Default capacity: 512 MiB of encoded records.
pub const DEFAULT_CAPACITY_BYTES: u64 = 512 * 1024 * 1024;

/// Default free space the spool leaves on its filesystem: 256 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// Which records go last when the spool must make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Kept while anything else can go (detections, health).
    Keep,
    /// Telemetry: dropped oldest first when room is needed.
    Bulk,
}

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
    #[error("the disk holding the spool is full: nothing of this batch was written")]
    DiskFull,
    #[error("the spool's disk failed: {0} (the file is reopened at the next call)")]
    Io(String),
}

impl SpoolError {
    /// After these redb refuses every call until the file is reopened.
    fn breaks_the_file(&self) -> bool {
        matches!(self, SpoolError::DiskFull | SpoolError::Io(_))
    }
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

/// redb's page cache is 1 GiB by default: a queue written once and read once
/// needs little of it, and the sensor's budget is tens of MiB.
const CACHE_BYTES: usize = 16 << 20;

fn create_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// Drops a redb handle with a panic caught: closing a corrupted file writes
/// its allocator state, and redb 4.5 can panic doing that (found by `fuzz/`'s
/// `spool_file`; reproducers in `fuzz/regressions/spool_file`).
fn drop_guarded<T>(handle: T) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(handle)));
}

impl From<redb::StorageError> for SpoolError {
    fn from(e: redb::StorageError) -> Self {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        match e {
            redb::StorageError::Io(io) if matches!(io.kind(), StorageFull | QuotaExceeded) => {
                SpoolError::DiskFull
            }
            redb::StorageError::Io(io) => SpoolError::Io(io.to_string()),
            redb::StorageError::PreviousIo => SpoolError::Io("an earlier write failed".into()),
            e => SpoolError::Db(e.to_string()),
        }
    }
}

/// redb's other errors, with the storage error inside told apart (a full disk).
macro_rules! db_err {
    ($($t:ident),*) => {$(
        impl From<redb::$t> for SpoolError {
            fn from(e: redb::$t) -> Self {
                match e {
                    redb::$t::Storage(s) => s.into(),
                    e => SpoolError::Db(e.to_string()),
                }
            }
        }
    )*};
}
db_err!(DatabaseError, TransactionError, TableError, CommitError);

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
    /// Bulk records evicted unsent because the spool was at its capacity (since creation).
    pub dropped: u64,
    /// Bulk records evicted unsent because the disk was full (since creation).
    pub dropped_disk_full: u64,
    /// Keep records evicted because nothing else was left to make room.
    pub dropped_priority: u64,
    pub next_seq: u64,
}

pub struct Spool {
    path: PathBuf,
    /// `None` only between a failed reopen and the next try.
    db: RwLock<Option<Database>>,
    /// An I/O error happened: redb needs the file reopened.
    broken: AtomicBool,
    capacity: u64,
    min_free: AtomicU64,
    /// Guards sequence allocation so numbers are handed out exactly once.
    next: Mutex<Cursor>,
}

/// The next sequence number, and where eviction resumes: no bulk record lies
/// below `bulk_floor` (every one there was evicted or acknowledged).
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: u64,
    bulk_floor: u64,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Ok(slot) = self.db.get_mut() {
            drop_guarded(slot.take());
        }
    }
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
    let Ok(db) = guarded(|| create_db(path).map_err(SpoolError::from)) else {
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
    drop_guarded(db);
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
        // redb can abort the process on some damaged files (a panic while a
        // panic unwinds, which nothing can catch; fuzz/known/spool_file). A
        // marker lives while the file is checked and salvaged: found at the
        // next start, it says that stopped the process, and the file is moved
        // aside unread instead of stopping every start after it.
        let marker = path.with_extension("redb.checking");
        if marker.exists() {
            let moved_to = path.with_extension(format!("redb.damaged-{}", time_floor()));
            if path.exists() {
                std::fs::rename(path, &moved_to)
                    .map_err(|e| SpoolError::Db(format!("moving the damaged spool aside: {e}")))?;
            }
            let spool = Spool::open(path, capacity_bytes)?;
            let next_seq = time_floor();
            spool.restore(&[], next_seq)?;
            let _ = std::fs::remove_file(&marker);
            return Ok((
                spool,
                Some(Recovery {
                    reason: "opening it stopped the sensor the last time".into(),
                    moved_to,
                    kept: 0,
                    lost: None,
                    next_seq,
                }),
            ));
        }
        std::fs::write(&marker, b"")
            .and_then(|()| std::fs::File::open(&marker)?.sync_all())
            .map_err(|e| SpoolError::Io(format!("{}: {e}", marker.display())))?;
        let opened = Spool::check_or_salvage(path, capacity_bytes);
        let _ = std::fs::remove_file(&marker);
        opened
    }

    /// [`Spool::open_recovering`] under its marker.
    fn check_or_salvage(
        path: &Path,
        capacity_bytes: u64,
    ) -> Result<(Spool, Option<Recovery>), SpoolError> {
        let checked = guarded(|| {
            let mut db = match create_db(path) {
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
        spool.restore(&kept, next_seq)?;
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

    /// Fills a new spool with what was kept of a damaged one, and numbers
    /// from `next_seq` on.
    fn restore(&self, kept: &[(u64, Vec<u8>)], next_seq: u64) -> Result<(), SpoolError> {
        self.with_db(|db| {
            let tx = db.begin_write()?;
            {
                let mut recs = tx.open_table(RECORDS)?;
                let mut meta = tx.open_table(META)?;
                let mut bytes = 0u64;
                for (seq, b) in kept {
                    recs.insert(*seq, b.as_slice())?;
                    bytes += b.len() as u64;
                }
                meta.insert(BYTES, bytes)?;
                meta.insert(NEXT_SEQ, next_seq)?;
            }
            tx.commit()?;
            Ok(())
        })?;
        if let Ok(mut n) = self.next.lock() {
            n.next = next_seq;
        }
        Ok(())
    }

    pub fn open(path: &Path, capacity_bytes: u64) -> Result<Spool, SpoolError> {
        guarded(|| Spool::open_unguarded(path, capacity_bytes))
    }

    fn open_unguarded(path: &Path, capacity_bytes: u64) -> Result<Spool, SpoolError> {
        let db = create_db(path)?;
        let tx = db.begin_write()?;
        let next = {
            let mut meta = tx.open_table(META)?;
            let recs = tx.open_table(RECORDS)?;
            tx.open_table(KEPT)?;
            let stored = meta.get(NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
            let after_last = recs.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let next = stored.max(after_last).max(1);
            meta.insert(NEXT_SEQ, next)?;
            next
        };
        tx.commit()?;
        Ok(Spool {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            capacity: capacity_bytes,
            min_free: AtomicU64::new(DEFAULT_MIN_FREE_BYTES),
            next: Mutex::new(Cursor {
                next,
                bulk_floor: 0,
            }),
        })
    }

    /// Free space to leave on the spool's filesystem (default
    /// [`DEFAULT_MIN_FREE_BYTES`]); 0 still keeps the spool from filling it.
    pub fn set_min_free(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    /// Runs `f` on the database, reopening it first when an earlier call
    /// failed on I/O, and marking it for that when this one does.
    fn with_db<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, SpoolError>,
    ) -> Result<R, SpoolError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self
            .db
            .read()
            .map_err(|_| SpoolError::Db("spool lock poisoned".into()))?;
        let Some(db) = guard.as_ref() else {
            return Err(SpoolError::Io("the spool could not be reopened".into()));
        };
        let r = guarded(|| f(db));
        if let Err(e) = &r
            && e.breaks_the_file()
        {
            self.broken.store(true, Ordering::Release);
        }
        r
    }

    fn reopen(&self) -> Result<(), SpoolError> {
        let mut slot = self
            .db
            .write()
            .map_err(|_| SpoolError::Db("spool lock poisoned".into()))?;
        if !self.broken.load(Ordering::Acquire) {
            return Ok(()); // another caller did it
        }
        // redb allows one open handle per file: close before opening again.
        drop_guarded(slot.take());
        let db = guarded(|| create_db(&self.path).map_err(SpoolError::from))?;
        *slot = Some(db);
        self.broken.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "Spool reopened after a disk error");
        Ok(())
    }

    /// Bytes the spool may still take from its filesystem before it cuts into
    /// `min_free`: negative when it already has. The holes in redb's file
    /// (its length beyond the blocks it has) count as taken. `None` when the
    /// filesystem cannot say.
    fn disk_room(&self) -> Option<i64> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty())?;
        let vfs = nix::sys::statvfs::statvfs(dir).ok()?;
        let avail = vfs.blocks_available().saturating_mul(vfs.fragment_size());
        let meta = std::fs::metadata(&self.path).ok()?;
        let holes = meta.len().saturating_sub(meta.blocks().saturating_mul(512));
        let min_free = self.min_free.load(Ordering::Relaxed);
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Some(signed(avail) - signed(holes) - signed(min_free))
    }

    /// Encodes and appends records in one durable transaction. `encode` gets
    /// each record's sequence number and returns its bytes and priority.
    /// Room is made first as the module describes; a batch the disk refuses
    /// even then is [`SpoolError::DiskFull`], and its sequence numbers are
    /// handed out again.
    pub fn append<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        mut encode: impl FnMut(u64, T) -> (Vec<u8>, Priority),
    ) -> Result<u64, SpoolError> {
        let mut cursor = self
            .next
            .lock()
            .map_err(|_| SpoolError::Db("sequence lock poisoned".into()))?;
        let mut entries = Vec::new();
        for (seq, item) in (cursor.next..).zip(items) {
            let (data, priority) = encode(seq, item);
            if data.len() as u64 > self.capacity {
                return Err(SpoolError::TooLarge(data.len()));
            }
            entries.push((seq, data, priority));
        }
        let Some(&(last, ..)) = entries.last() else {
            return Ok(0);
        };
        let incoming: u64 = entries.iter().map(|e| e.1.len() as u64).sum();
        // A B-tree page holds less than its size in records, and redb copies
        // what it changes: growth of the file is taken as twice the bytes.
        let disk_limit = |room: i64, held: u64| {
            (room < 2 * incoming as i64).then(|| held + u64::try_from(room / 2).unwrap_or(0))
        };
        let room = self.disk_room();
        // The floor moves only with a transaction that commits.
        let mut floor = cursor.bulk_floor;
        let written = self.with_db(|db| {
            write(db, &entries, self.capacity, &mut floor, |held| {
                room.and_then(|r| disk_limit(r, held))
            })
        });
        match written {
            Ok(()) => cursor.bulk_floor = floor,
            // The disk filled between the look and the write: make room in a
            // transaction of its own (its pages are free for the next), then once more.
            Err(SpoolError::DiskFull) => {
                tracing::warn!("The spool's disk is full; dropping bulk records to make room");
                let mut floor = cursor.bulk_floor;
                self.with_db(|db| evict(db, 2 * incoming, &mut floor))?;
                cursor.bulk_floor = floor;
                self.with_db(|db| write(db, &entries, self.capacity, &mut floor, Some))?;
                cursor.bulk_floor = floor;
            }
            Err(e) => return Err(e),
        }
        cursor.next = last + 1;
        Ok(entries.len() as u64)
    }

    /// Up to `max_records` records (and about `max_bytes`) with sequence > `after`, in order.
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        self.with_db(|db| read_after(db, after, max_records, max_bytes))
    }

    /// Removes every record with sequence ≤ `seq`: the server holds them.
    pub fn ack_through(&self, seq: u64) -> Result<u64, SpoolError> {
        self.with_db(|db| {
            let tx = db.begin_write()?;
            let mut removed = 0;
            {
                let mut recs = tx.open_table(RECORDS)?;
                let mut kept = tx.open_table(KEPT)?;
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
                kept.retain_in(..=seq, |_, _| false)?;
                meta.insert(BYTES, bytes)?;
            }
            tx.commit()?;
            Ok(removed)
        })
    }

    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        self.with_db(stats)
    }
}

/// Why a record was evicted, as counted in META.
#[derive(Clone, Copy)]
enum Reason {
    Capacity,
    Disk,
}

/// The tables of one write transaction, with the counters kept in META.
struct Tables<'t> {
    recs: redb::Table<'t, u64, &'static [u8]>,
    kept: redb::Table<'t, u64, ()>,
    meta: redb::Table<'t, &'static str, u64>,
    bytes: u64,
    /// Bulk evicted for capacity, bulk evicted for the disk, kept evicted.
    dropped: [u64; 3],
}

impl<'t> Tables<'t> {
    fn open(tx: &'t redb::WriteTransaction) -> Result<Tables<'t>, SpoolError> {
        let meta = tx.open_table(META)?;
        let get =
            |k| -> Result<u64, SpoolError> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
        let (bytes, dropped) = (
            get(BYTES)?,
            [get(DROPPED)?, get(DROPPED_DISK)?, get(DROPPED_KEPT)?],
        );
        Ok(Tables {
            recs: tx.open_table(RECORDS)?,
            kept: tx.open_table(KEPT)?,
            meta,
            bytes,
            dropped,
        })
    }

    /// Evicts one record (see [`evict_one`]) and counts it; its size, `None`
    /// when nothing is left.
    fn evict(&mut self, floor: &mut u64, reason: Reason) -> Result<Option<u64>, SpoolError> {
        let Some((freed, priority)) = evict_one(&mut self.recs, &mut self.kept, floor)? else {
            return Ok(None);
        };
        self.bytes = self.bytes.saturating_sub(freed);
        self.dropped[match (priority, reason) {
            (Priority::Keep, _) => 2,
            (Priority::Bulk, Reason::Capacity) => 0,
            (Priority::Bulk, Reason::Disk) => 1,
        }] += 1;
        Ok(Some(freed))
    }

    fn save(mut self) -> Result<(), SpoolError> {
        self.meta.insert(BYTES, self.bytes)?;
        self.meta.insert(DROPPED, self.dropped[0])?;
        self.meta.insert(DROPPED_DISK, self.dropped[1])?;
        self.meta.insert(DROPPED_KEPT, self.dropped[2])?;
        Ok(())
    }
}

/// Appends `entries` in one transaction, evicting first what the capacity, or
/// the disk limit `disk(held bytes)`, requires; the evictions are counted by
/// their reason.
fn write(
    db: &Database,
    entries: &[(u64, Vec<u8>, Priority)],
    capacity: u64,
    floor: &mut u64,
    disk: impl Fn(u64) -> Option<u64>,
) -> Result<(), SpoolError> {
    let tx = db.begin_write()?;
    {
        let mut t = Tables::open(&tx)?;
        let disk_limit = disk(t.bytes);
        for (seq, data, priority) in entries {
            let len = data.len() as u64;
            loop {
                let reason = if t.bytes + len > capacity {
                    Reason::Capacity
                } else if disk_limit.is_some_and(|l| t.bytes + len > l) {
                    Reason::Disk
                } else {
                    break;
                };
                // Nothing left to evict: written all the same, the capacity
                // is one record over, or the disk's margin takes it.
                if t.evict(floor, reason)?.is_none() {
                    break;
                }
            }
            t.recs.insert(*seq, data.as_slice())?;
            if *priority == Priority::Keep {
                t.kept.insert(*seq, ())?;
            }
            t.bytes += len;
        }
        if let Some(&(last, ..)) = entries.last() {
            t.meta.insert(NEXT_SEQ, last + 1)?;
        }
        t.save()?;
    }
    tx.commit()?;
    Ok(())
}

/// Evicts records worth `bytes` in a transaction of its own, for a full disk.
fn evict(db: &Database, bytes: u64, floor: &mut u64) -> Result<(), SpoolError> {
    let tx = db.begin_write()?;
    {
        let mut t = Tables::open(&tx)?;
        let mut freed = 0;
        while freed < bytes {
            let Some(n) = t.evict(floor, Reason::Disk)? else {
                break;
            };
            freed += n;
        }
        t.save()?;
    }
    tx.commit()?;
    Ok(())
}

/// Removes the oldest bulk record at or above `floor`, or when there is none
/// the oldest kept one; its size and priority.
fn evict_one(
    recs: &mut redb::Table<u64, &[u8]>,
    kept: &mut redb::Table<u64, ()>,
    floor: &mut u64,
) -> Result<Option<(u64, Priority)>, SpoolError> {
    let mut victim = None;
    for item in recs.range(*floor..)? {
        let (k, v) = item?;
        let k = k.value();
        if kept.get(k)?.is_none() {
            victim = Some((k, v.value().len() as u64, Priority::Bulk));
            break;
        }
    }
    if victim.is_none() {
        let first = kept.first()?.map(|(k, _)| k.value());
        if let Some(k) = first {
            let len = recs.get(k)?.map_or(0, |v| v.value().len() as u64);
            victim = Some((k, len, Priority::Keep));
        }
    }
    let Some((k, len, priority)) = victim else {
        return Ok(None);
    };
    recs.remove(k)?;
    match priority {
        // Everything below it was kept: the next search starts after it.
        Priority::Bulk => *floor = k + 1,
        Priority::Keep => {
            kept.remove(k)?;
        }
    }
    Ok(Some((len, priority)))
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
        dropped_disk_full: get(DROPPED_DISK)?,
        dropped_priority: get(DROPPED_KEPT)?,
        next_seq: get(NEXT_SEQ)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> impl FnMut(u64, usize) -> (Vec<u8>, Priority) {
        move |seq, _| (vec![seq as u8; n], Priority::Bulk)
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
    fn bulk_goes_first_oldest_first_and_kept_records_last() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.redb"), 100).unwrap();
        // Seqs 1..=10 of 10 bytes, every third kept: 3, 6, 9.
        let every_third = |seq: u64, _| {
            let p = if seq.is_multiple_of(3) {
                Priority::Keep
            } else {
                Priority::Bulk
            };
            (vec![0; 10], p)
        };
        s.append(0..10, every_third).unwrap();
        s.append(0..4, every_third).unwrap(); // 11..=14: four bulk go, 1 2 4 5
        let seqs = |s: &Spool| -> Vec<u64> {
            s.read_after(0, 100, 1 << 20)
                .unwrap()
                .iter()
                .map(|r| r.0)
                .collect()
        };
        assert_eq!(seqs(&s), [3, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        let st = s.stats().unwrap();
        assert_eq!((st.dropped, st.dropped_priority), (4, 0));
        // A newer bulk record goes before an older kept one: 7 8 10 11 13 14,
        // then 15 of this very batch.
        s.append(0..7, |_, _| (vec![0; 10], Priority::Bulk))
            .unwrap();
        assert_eq!(seqs(&s), [3, 6, 9, 12, 16, 17, 18, 19, 20, 21]);
        // Kept records go only when no bulk is left, oldest first.
        s.append(0..8, |_, _| (vec![0; 10], Priority::Keep))
            .unwrap();
        assert_eq!(seqs(&s), [9, 12, 22, 23, 24, 25, 26, 27, 28, 29]);
        let st = s.stats().unwrap();
        assert_eq!((st.dropped, st.dropped_priority), (17, 2));
        // An acknowledged kept record leaves the kept set: a later eviction
        // neither counts it nor spares a bulk record for it.
        s.ack_through(12).unwrap();
        s.append(0..4, |_, _| (vec![0; 10], Priority::Bulk))
            .unwrap();
        s.append(0..3, |_, _| (vec![0; 10], Priority::Keep))
            .unwrap();
        assert_eq!(seqs(&s), [23, 24, 25, 26, 27, 28, 29, 34, 35, 36]);
        let st = s.stats().unwrap();
        assert_eq!((st.dropped, st.dropped_priority), (21, 3));
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
