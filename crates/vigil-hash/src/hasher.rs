//! The hasher: cache first, then budget, then one guarded read.

use crate::HashError;
use crate::budget::{Bucket, Clock, ReadBudget, SystemClock};
use crate::cache::{CacheError, HashCache};
use crate::key::FileKey;
use crate::read::{self, Algorithms, Digests};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Files larger than this are not hashed (`too_large`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Files changed more recently than this are hashed but not cached.
pub const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(2);

/// How the hasher works.
#[derive(Debug, Clone)]
pub struct HashConfig {
    /// Larger files are refused with [`HashError::TooLarge`], unread.
    pub max_file_bytes: u64,
    pub algorithms: Algorithms,
    /// `None`: read as fast as the disk allows.
    pub read_budget: Option<ReadBudget>,
    /// A file whose ctime is within this of now is not cached. Timestamps
    /// advance in coarse ticks on many filesystems, so a file rewritten to the
    /// same size within one tick keeps its key: caching it could later serve
    /// the old content's hash (git's "racy clean" problem).
    pub racy_window: Duration,
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            algorithms: Algorithms::Both,
            read_budget: None,
            racy_window: DEFAULT_RACY_WINDOW,
        }
    }
}

/// A file's digests and the identity they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHashes {
    pub digests: Digests,
    /// The (device, inode, size, mtime, ctime) the digests were computed for.
    pub key: FileKey,
    /// Served from the cache, without reading the file.
    pub from_cache: bool,
}

/// Counters since the hasher was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files read and hashed to the end.
    pub files_hashed: u64,
    /// Bytes read from files (including reads that then failed).
    pub bytes_read: u64,
    pub cache_hits: u64,
    /// `try_hash` calls turned away by the read budget.
    pub deferred: u64,
    /// Calls that ended in any other error.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    files_hashed: AtomicU64,
    bytes_read: AtomicU64,
    cache_hits: AtomicU64,
    deferred: AtomicU64,
    failed: AtomicU64,
}

type ChunkHook = Box<dyn Fn(usize) + Send + Sync>;

/// Hashes files. `Sync`: share it behind an `Arc`; no lock is held while a
/// file is read, so a thread calling [`FileHasher::lookup`] never waits for one
/// that is hashing.
pub struct FileHasher {
    config: HashConfig,
    cache: Option<HashCache>,
    clock: Arc<dyn Clock>,
    bucket: Option<Mutex<Bucket>>,
    counters: Counters,
    /// Test seam: runs after every chunk read (to change a file mid-read).
    chunk_hook: Option<ChunkHook>,
}

impl std::fmt::Debug for FileHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHasher")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

enum Wait {
    /// Return `BudgetExceeded` rather than wait.
    Never,
    /// Sleep until the budget allows, and pace the read.
    Sleep,
}

impl FileHasher {
    /// A hasher on the system clock. `cache: None` hashes every time.
    pub fn new(config: HashConfig, cache: Option<HashCache>) -> FileHasher {
        FileHasher::with_clock(config, cache, Arc::new(SystemClock::default()))
    }

    /// A hasher whose read budget runs on `clock`.
    pub fn with_clock(
        config: HashConfig,
        cache: Option<HashCache>,
        clock: Arc<dyn Clock>,
    ) -> FileHasher {
        let bucket = config
            .read_budget
            .map(|b| Mutex::new(Bucket::new(b, clock.now())));
        FileHasher {
            config,
            cache,
            clock,
            bucket,
            counters: Counters::default(),
            chunk_hook: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_chunk_hook(&mut self, hook: impl Fn(usize) + Send + Sync + 'static) {
        self.chunk_hook = Some(Box::new(hook));
    }

    /// The cached digests for a file identity, with no I/O at all: for callers
    /// that already hold the file's metadata ([`FileKey::from_metadata`]).
    pub fn lookup(&self, key: &FileKey) -> Option<FileHashes> {
        let digests = self.cache.as_ref()?.get(key, self.config.algorithms)?;
        self.counters.cache_hits.fetch_add(1, Relaxed);
        Some(FileHashes {
            digests,
            key: *key,
            from_cache: true,
        })
    }

    /// The cached digests for what `path` names now: one `stat`, no open, no read.
    /// `Ok(None)` when the cache does not have it.
    pub fn lookup_path(&self, path: &Path) -> Result<Option<FileHashes>, HashError> {
        Ok(self.lookup(&read::stat_regular(path)?))
    }

    /// Hashes `path` (or serves it from the cache) without ever sleeping: when
    /// the read budget has no room, returns [`HashError::BudgetExceeded`] with
    /// the time after which it will. For a thread that must not stall.
    pub fn try_hash(&self, path: &Path) -> Result<FileHashes, HashError> {
        self.count(self.hash_with(path, Wait::Never))
    }

    /// Hashes `path` (or serves it from the cache), sleeping for the read
    /// budget when it is spent, and pacing the read itself so that no more
    /// than one chunk is read ahead of the budget. For a background worker.
    pub fn hash_blocking(&self, path: &Path) -> Result<FileHashes, HashError> {
        self.count(self.hash_with(path, Wait::Sleep))
    }

    fn count(&self, r: Result<FileHashes, HashError>) -> Result<FileHashes, HashError> {
        match &r {
            Ok(_) => {}
            Err(HashError::BudgetExceeded { .. }) => {
                self.counters.deferred.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
        r
    }

    fn hash_with(&self, path: &Path, wait: Wait) -> Result<FileHashes, HashError> {
        let stat = read::stat_regular(path)?;
        if let Some(hit) = self.lookup(&stat) {
            return Ok(hit);
        }
        let max = self.config.max_file_bytes;
        if stat.size > max {
            return Err(HashError::TooLarge {
                size: stat.size,
                limit: max,
            });
        }
        if let Some(bucket) = &self.bucket {
            loop {
                let admitted = lock(bucket).admit(stat.size, self.clock.now());
                match (admitted, &wait) {
                    (Ok(()), _) => break,
                    (Err(d), Wait::Sleep) => self.clock.sleep(d),
                    (Err(retry_after), Wait::Never) => {
                        return Err(HashError::BudgetExceeded { retry_after });
                    }
                }
            }
        }
        let (mut file, before) = read::open_regular(path, stat.dev)?;
        let key = FileKey::from_metadata(&before);
        if before.size() > max {
            return Err(HashError::TooLarge {
                size: before.size(),
                limit: max,
            });
        }
        let mut after_chunk = |n: usize| {
            self.counters.bytes_read.fetch_add(n as u64, Relaxed);
            if let Some(bucket) = &self.bucket {
                lock(bucket).charge(n as u64, self.clock.now());
                if let Wait::Sleep = wait {
                    // Pay the debt of this chunk before reading the next.
                    while let Err(d) = lock(bucket).admit(0, self.clock.now()) {
                        self.clock.sleep(d);
                    }
                }
            }
            if let Some(hook) = &self.chunk_hook {
                hook(n);
            }
        };
        let digests =
            read::hash_open_file(&mut file, &before, self.config.algorithms, &mut after_chunk)?;
        self.counters.files_hashed.fetch_add(1, Relaxed);
        if let Some(cache) = &self.cache
            && !self.is_racy(&key)
        {
            cache.insert(key, digests);
        }
        Ok(FileHashes {
            digests,
            key,
            from_cache: false,
        })
    }

    fn is_racy(&self, key: &FileKey) -> bool {
        let window = i64::try_from(self.config.racy_window.as_nanos()).unwrap_or(i64::MAX);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        key.ctime_ns > now.saturating_sub(window)
    }

    /// Writes the cache's pending entries (also done in batches, and on drop).
    pub fn flush(&self) -> Result<(), CacheError> {
        self.cache.as_ref().map_or(Ok(()), HashCache::flush)
    }

    pub fn cache(&self) -> Option<&HashCache> {
        self.cache.as_ref()
    }

    pub fn config(&self) -> &HashConfig {
        &self.config
    }

    pub fn stats(&self) -> HashStats {
        let c = &self.counters;
        HashStats {
            files_hashed: c.files_hashed.load(Relaxed),
            bytes_read: c.bytes_read.load(Relaxed),
            cache_hits: c.cache_hits.load(Relaxed),
            deferred: c.deferred.load(Relaxed),
            failed: c.failed.load(Relaxed),
        }
    }
}

fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    // The bucket is a few integers, consistent after any panic.
    bucket.lock().unwrap_or_else(|p| p.into_inner())
}

impl From<&FileHashes> for vigil_proto::v1::Hashes {
    fn from(h: &FileHashes) -> Self {
        vigil_proto::v1::Hashes {
            blake3: h.digests.blake3.map(|d| d.to_vec()).unwrap_or_default(),
            sha256: h.digests.sha256.map(|d| d.to_vec()).unwrap_or_default(),
            error: String::new(),
        }
    }
}

impl From<&HashError> for vigil_proto::v1::Hashes {
    fn from(e: &HashError) -> Self {
        vigil_proto::v1::Hashes {
            error: e.as_str().to_owned(),
            ..Default::default()
        }
    }
}

/// The record's `Hashes` for a hashing result: digests, or the reason there are none.
pub fn to_proto(r: &Result<FileHashes, HashError>) -> vigil_proto::v1::Hashes {
    match r {
        Ok(h) => h.into(),
        Err(e) => e.into(),
    }
}
