//! The hash cache: file identity → digests, in memory and in a redb file that
//! survives restarts.
//!
//! Every entry lives in memory (a lookup never touches the disk); the file is
//! the memory's backup, written in batches, fsynced one batch in sixteen and
//! on flush and drop. Losing the unsynced batches in a crash only costs
//! rehashing. What must never happen is a wrong hash, so each
//! stored entry carries a checksum over its key and value, entries that fail
//! it are discarded on load, and a file redb cannot read is removed and
//! started afresh.

use crate::key::{FileKey, KEY_LEN};
use crate::read::{Algorithms, Digests};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default bound on cached files. Each costs about 200 bytes of memory
/// (≈ 20 MB at this bound) and 121 bytes on disk before redb's overhead.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;
/// Default number of changed entries written in one transaction.
pub const DEFAULT_FLUSH_EVERY: usize = 256;
/// Of the batches written as entries accumulate, one in this many is fsynced;
/// the others are committed without (a crash loses them, never corrupts the
/// file). An explicit flush, and drop, always fsync.
const SYNC_EVERY_BATCHES: u64 = 16;

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: &str = "format";
const NEXT_SEQ: &str = "next_seq";
/// Bumped whenever the entry layout changes; a file of another format is recreated.
const FORMAT_VERSION: u64 = 1;

/// Entry value: seq (8) | flags (1) | blake3 (32) | sha256 (32) | check (8).
const VALUE_LEN: usize = 81;
const HAS_BLAKE3: u8 = 1;
const HAS_SHA256: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("hash cache {path}: in use by another process")]
    InUse { path: PathBuf },
    #[error("hash cache {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("hash cache {path}: cannot remove the unreadable file: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What opening the cache found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheOpened {
    /// Entries loaded from the file.
    pub entries: usize,
    /// Set when the file could not be read and was replaced by an empty one: why.
    pub recreated: Option<String>,
    /// Entries dropped on load: a bad checksum or layout, or beyond the bound.
    pub discarded: u64,
}

/// Counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    /// Entries removed to stay within the bound.
    pub evicted: u64,
    /// Batches that could not be written (their entries live on in memory only).
    pub write_errors: u64,
}

/// What the writer has done so far.
#[derive(Debug, Default)]
struct Written {
    batches: u64,
    /// A batch was committed without fsync since the last one with.
    unsynced: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    digests: Digests,
    /// Insertion (or refresh) order; the smallest is evicted first.
    seq: u64,
}

/// The maps' hasher: foldhash, seeded at random per process. A rescan is a
/// `stat` and one lookup per file, and SipHash (std's default) over the
/// 40-byte key cost about a third of the lookup's own instructions. Seeded,
/// so file identities an attacker can partly choose (size, mtime) do not give
/// them colliding chains to slow every lookup.
type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<FileKey, Slot, Hasher>,
    order: BTreeMap<u64, FileKey>,
    next_seq: u64,
    /// Changes not yet written: `None` removes the key.
    pending: HashMap<FileKey, Option<Slot>, Hasher>,
    stats: CacheStats,
}

/// A bounded map from [`FileKey`] to [`Digests`], optionally backed by a file.
/// `Sync`: lookups hold a lock only for a map access, never across disk I/O.
#[derive(Debug)]
pub struct HashCache {
    db: Option<(Database, PathBuf)>,
    inner: Mutex<Inner>,
    /// Serialises writers so batches reach the file in the order they were taken.
    flushing: Mutex<Written>,
    max_entries: usize,
    flush_every: usize,
}

fn encode(key: &FileKey, slot: &Slot) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    v[0..8].copy_from_slice(&slot.seq.to_be_bytes());
    let mut flags = 0;
    if let Some(b) = slot.digests.blake3 {
        flags |= HAS_BLAKE3;
        v[9..41].copy_from_slice(&b);
    }
    if let Some(s) = slot.digests.sha256 {
        flags |= HAS_SHA256;
        v[41..73].copy_from_slice(&s);
    }
    v[8] = flags;
    let check = checksum(&key.to_bytes(), &v[..73]);
    v[73..81].copy_from_slice(&check);
    v
}

fn checksum(key: &[u8], body: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new_derive_key("vigil-hash cache entry v1");
    h.update(key);
    h.update(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

fn decode(key: &[u8], v: &[u8]) -> Option<(FileKey, Slot)> {
    if key.len() != KEY_LEN || v.len() != VALUE_LEN || checksum(key, v.get(..73)?) != v.get(73..)? {
        return None;
    }
    let digest = |r: std::ops::Range<usize>| -> Option<[u8; 32]> { v.get(r)?.try_into().ok() };
    let flags = *v.get(8)?;
    let slot = Slot {
        seq: u64::from_be_bytes(v.get(0..8)?.try_into().ok()?),
        digests: Digests {
            blake3: if flags & HAS_BLAKE3 != 0 {
                Some(digest(9..41)?)
            } else {
                None
            },
            sha256: if flags & HAS_SHA256 != 0 {
                Some(digest(41..73)?)
            } else {
                None
            },
        },
    };
    Some((FileKey::from_bytes(key)?, slot))
}

/// Why a load failed: the file is unusable (recreate it) or in the way (report).
enum LoadError {
    Unusable(String),
    Fatal(CacheError),
}

/// An opened file and what was in it.
struct Loaded {
    db: Database,
    entries: Vec<(FileKey, Slot)>,
    /// Entries whose checksum or layout was wrong.
    bad: u64,
    next_seq: u64,
}

/// Opens the file and reads every entry out of it.
fn load(path: &Path) -> Result<Loaded, LoadError> {
    let unusable = |e: redb::Error| match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            LoadError::Fatal(CacheError::InUse { path: path.into() })
        }
        // Bytes that are not a cache (redb reports a foreign or truncated
        // file as InvalidData / UnexpectedEof) are replaced; any other I/O
        // error (no such directory, permission, EIO) is the caller's to see,
        // and the file is left alone.
        redb::Error::Io(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            LoadError::Fatal(CacheError::Db {
                path: path.into(),
                message: e.to_string(),
            })
        }
        other => LoadError::Unusable(other.to_string()),
    };
    // redb's default page cache is 1 GiB; the sensor's budget is tens of MiB.
    let db = Database::builder()
        .set_cache_size(16 << 20)
        .create(path)
        .map_err(|e| unusable(e.into()))?;
    // A read transaction: opening an existing cache costs no commit (no fsync).
    let read = || -> Result<_, redb::Error> {
        let tx = db.begin_read()?;
        let (meta, table) = match (tx.open_table(META), tx.open_table(ENTRIES)) {
            (Ok(m), Ok(t)) => (m, t),
            // A new file: no tables yet.
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        match meta.get(FORMAT)?.map(|v| v.value()) {
            Some(FORMAT_VERSION) => {}
            None if table.is_empty()? => return Ok(None),
            // Tables written by no known version: start afresh.
            other => {
                return Err(redb::Error::Corrupted(format!(
                    "unknown cache format {other:?}"
                )));
            }
        }
        let next_seq = meta.get(NEXT_SEQ)?.map(|v| v.value()).unwrap_or(0);
        let mut entries = Vec::new();
        let mut bad = 0u64;
        for item in table.iter()? {
            let (k, v) = item?;
            match decode(k.value(), v.value()) {
                Some(e) => entries.push(e),
                None => bad += 1,
            }
        }
        Ok(Some((entries, bad, next_seq)))
    };
    let init = || -> Result<_, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.open_table(META)?.insert(FORMAT, FORMAT_VERSION)?;
        tx.commit()?;
        Ok((Vec::new(), 0, 0))
    };
    let found = read().map_err(unusable)?;
    let (entries, bad, next_seq) = match found {
        Some(f) => f,
        None => init().map_err(unusable)?,
    };
    Ok(Loaded {
        db,
        entries,
        bad,
        next_seq,
    })
}

impl HashCache {
    /// A cache that lives only as long as the process.
    pub fn in_memory(max_entries: usize) -> HashCache {
        HashCache {
            db: None,
            inner: Mutex::new(Inner::default()),
            flushing: Mutex::new(Written::default()),
            max_entries,
            flush_every: DEFAULT_FLUSH_EVERY,
        }
    }

    /// Opens (or creates) the cache file at `path`. A file that cannot be read
    /// as a cache is removed and recreated, and [`CacheOpened::recreated`] says
    /// why; only a file in use by another process, or one we may not touch,
    /// is an error (the caller can go on with [`HashCache::in_memory`]).
    pub fn open(path: &Path, max_entries: usize) -> Result<(HashCache, CacheOpened), CacheError> {
        let mut opened = CacheOpened::default();
        // redb panics on some corrupt pages (debug assertions, and an
        // `unreachable!` in its B-tree walk even in release builds): contained
        // here (this needs panic = "unwind", the default), the verdict is the
        // same as for an error.
        let first = catch_unwind(AssertUnwindSafe(|| load(path)))
            .unwrap_or_else(|_| Err(LoadError::Unusable("the reader panicked".into())));
        let loaded = match first {
            Ok(l) => l,
            Err(LoadError::Fatal(e)) => return Err(e),
            Err(LoadError::Unusable(why)) => {
                tracing::warn!(path = %path.display(), reason = %why, "Hash cache unreadable, recreating it");
                std::fs::remove_file(path).map_err(|source| CacheError::Remove {
                    path: path.into(),
                    source,
                })?;
                opened.recreated = Some(why);
                match load(path) {
                    Ok(l) => l,
                    Err(LoadError::Fatal(e)) => return Err(e),
                    Err(LoadError::Unusable(message)) => {
                        return Err(CacheError::Db {
                            path: path.into(),
                            message,
                        });
                    }
                }
            }
        };
        let Loaded {
            db,
            mut entries,
            bad,
            next_seq: stored_next,
        } = loaded;
        let mut cache = HashCache::in_memory(max_entries);
        cache.db = Some((db, path.into()));
        opened.discarded = bad;
        entries.sort_by_key(|(_, s)| s.seq);
        {
            let mut inner = cache.lock();
            inner.next_seq = entries
                .last()
                .map_or(0, |(_, s)| s.seq.saturating_add(1))
                .max(stored_next);
            for (key, slot) in entries {
                // Two entries with one seq cannot come from us; keep both,
                // renumbering the later one, rather than lose the order map.
                let slot = if inner.order.contains_key(&slot.seq) {
                    let seq = inner.next_seq;
                    inner.next_seq += 1;
                    Slot { seq, ..slot }
                } else {
                    slot
                };
                inner.order.insert(slot.seq, key);
                inner.map.insert(key, slot);
            }
            let before = inner.map.len();
            evict_to(&mut inner, max_entries);
            opened.discarded += (before - inner.map.len()) as u64;
            inner.stats.evicted = 0;
            opened.entries = inner.map.len();
        }
        Ok((cache, opened))
    }

    /// Changed entries written per transaction (at least 1).
    pub fn with_flush_every(mut self, n: usize) -> HashCache {
        self.flush_every = n.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (every
        // mutation is a single insert/remove pair), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The digests cached for `key`, if they include every one `algorithms`
    /// asks for. Never does disk I/O.
    pub fn get(&self, key: &FileKey, algorithms: Algorithms) -> Option<Digests> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(slot) = inner
            .map
            .get_mut(key)
            .filter(|s| s.digests.covers(algorithms))
        else {
            inner.stats.misses += 1;
            return None;
        };
        inner.stats.hits += 1;
        let digests = slot.digests;
        // Recency is refreshed only once an entry has aged past half the
        // bound: eviction stays close to least-recently-used, and a rescan of
        // a stable tree writes nothing.
        if slot.seq.saturating_add((self.max_entries / 2) as u64) < inner.next_seq {
            inner.order.remove(&slot.seq);
            slot.seq = inner.next_seq;
            inner.next_seq += 1;
            inner.order.insert(slot.seq, *key);
            let refreshed = *slot;
            inner.pending.insert(*key, Some(refreshed));
        }
        Some(digests)
    }

    /// Caches `digests` for `key` (merged with digests already cached for it),
    /// evicting the oldest entries past the bound; writes a batch when enough
    /// changes are pending.
    pub fn insert(&self, key: FileKey, digests: Digests) {
        let flush_now = {
            let mut inner = self.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let merged = match inner.map.get(&key) {
                Some(old) => Digests {
                    blake3: digests.blake3.or(old.digests.blake3),
                    sha256: digests.sha256.or(old.digests.sha256),
                },
                None => digests,
            };
            let slot = Slot {
                digests: merged,
                seq,
            };
            if let Some(old) = inner.map.insert(key, slot) {
                inner.order.remove(&old.seq);
            }
            inner.order.insert(seq, key);
            inner.pending.insert(key, Some(slot));
            evict_to(&mut inner, self.max_entries);
            inner.pending.len() >= self.flush_every
        };
        if flush_now {
            self.flush_logged(false);
        }
    }

    /// Writes every pending change to the file in one durable (fsynced) transaction.
    pub fn flush(&self) -> Result<(), CacheError> {
        self.write_batch(true)
    }

    fn write_batch(&self, sync: bool) -> Result<(), CacheError> {
        let Some((db, path)) = &self.db else {
            self.lock().pending.clear();
            return Ok(());
        };
        let mut written = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let (batch, next_seq) = {
            let mut inner = self.lock();
            (std::mem::take(&mut inner.pending), inner.next_seq)
        };
        if batch.is_empty() && !(sync && written.unsynced) {
            return Ok(());
        }
        written.batches += 1;
        let durable = sync || written.batches.is_multiple_of(SYNC_EVERY_BATCHES);
        let write = || -> Result<(), redb::Error> {
            let mut tx = db.begin_write()?;
            if !durable {
                tx.set_durability(Durability::None)?;
            }
            {
                let mut table = tx.open_table(ENTRIES)?;
                for (key, change) in &batch {
                    let k = key.to_bytes();
                    match change {
                        Some(slot) => {
                            table.insert(k.as_slice(), encode(key, slot).as_slice())?;
                        }
                        None => {
                            table.remove(k.as_slice())?;
                        }
                    }
                }
                tx.open_table(META)?.insert(NEXT_SEQ, next_seq)?;
            }
            tx.commit()?;
            Ok(())
        };
        // redb can panic on a page it cannot make sense of (an `unreachable!`
        // in its B-tree walk), in release builds too: contained like at open.
        let result = catch_unwind(AssertUnwindSafe(write))
            .unwrap_or_else(|_| Err(redb::Error::Corrupted("the writer panicked".into())));
        if result.is_ok() {
            written.unsynced = !durable;
        }
        result.map_err(|e| {
            // The batch is lost to the file, not to memory: the file may miss
            // entries or keep evicted ones, and every one it keeps is correct.
            self.lock().stats.write_errors += 1;
            CacheError::Db {
                path: path.clone(),
                message: e.to_string(),
            }
        })
    }

    fn flush_logged(&self, sync: bool) {
        if let Err(e) = self.write_batch(sync) {
            tracing::warn!(error = %e, "Hash cache batch not written");
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            ..inner.stats
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict_to(inner: &mut Inner, max_entries: usize) {
    while inner.map.len() > max_entries {
        let Some((_, key)) = inner.order.pop_first() else {
            break;
        };
        inner.map.remove(&key);
        inner.pending.insert(key, None);
        inner.stats.evicted += 1;
    }
}

impl Drop for HashCache {
    fn drop(&mut self) {
        self.flush_logged(true);
    }
}
