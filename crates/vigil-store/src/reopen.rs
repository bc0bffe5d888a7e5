//! A redb database that reopens itself after a disk error.
//!
//! After a failed write (a full disk, EIO) redb refuses every later call on
//! that `Database` with `StorageError::PreviousIo` until it is closed and
//! opened again. Many holders keep a store's `Arc`s, so the file is reopened
//! inside: [`ReopeningDb`] hands out transactions like a `Database` and, at
//! the next transaction after such an error, drops the broken handle and
//! opens the file again (redb repairs it, as after a crash). Once space
//! returns, the next call works; no restart.
//!
//! An error can surface anywhere a transaction is used (a commit, a table
//! read), far from the wrapper. Rather than mark the wrapper at every such
//! place, [`note`] (called where every redb error becomes a `StoreError`)
//! bumps a process-wide count of breaking errors; a wrapper that sees the
//! count move checks its own handle once (redb's `try_begin_write` reports
//! `PreviousIo` without waiting). The hot path pays two uncontended atomic
//! loads and an `Arc` clone per transaction, nothing per record.

use crate::StoreError;
use redb::{
    Database, ReadTransaction, ReadableDatabase, StorageError, TransactionError, WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Errors seen (anywhere in the process) after which a redb handle refuses
/// every call until it is reopened.
static BREAKS: AtomicU64 = AtomicU64::new(0);

/// Whether a redb error, as text, leaves its database refusing every later
/// call: an I/O error (ENOSPC and EDQUOT included), or one reported earlier.
pub(crate) fn breaks_the_file(text: &str) -> bool {
    text.contains("I/O error")
        || text.contains("No space left on device")
        || text.contains("os error 28")
        || text.contains("Disk quota exceeded")
        || text.contains("os error 122")
}

/// Called for every redb error turned into a [`StoreError`]: one that breaks
/// its file makes every [`ReopeningDb`] check its handle at its next call.
pub(crate) fn note(text: &str) {
    if breaks_the_file(text) {
        BREAKS.fetch_add(1, Ordering::AcqRel);
    }
}

/// One redb file, reopened in place after a disk error.
pub(crate) struct ReopeningDb {
    path: PathBuf,
    /// redb's page cache for this file (see [`crate::open_db`]).
    cache_bytes: usize,
    /// `None` only between a failed reopen and the next try. An `Arc` so that
    /// no lock is held while a caller waits in `begin_write`.
    db: RwLock<Option<Arc<Database>>>,
    /// The handle failed: reopen before the next transaction.
    broken: AtomicBool,
    /// The value of [`BREAKS`] this handle was last checked at.
    checked: AtomicU64,
}

impl std::fmt::Debug for ReopeningDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReopeningDb")
            .field("path", &self.path)
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReopeningDb {
    /// Opens (or creates) the file, as `Database::create` does, with a page
    /// cache of `cache_bytes`.
    pub(crate) fn create(
        path: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<ReopeningDb, StoreError> {
        let path = path.as_ref().to_owned();
        let checked = BREAKS.load(Ordering::Acquire);
        let db = crate::open_db(&path, cache_bytes)?;
        Ok(ReopeningDb {
            path,
            cache_bytes,
            db: RwLock::new(Some(Arc::new(db))),
            broken: AtomicBool::new(false),
            checked: AtomicU64::new(checked),
        })
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.with(|db| db.begin_read())
    }

    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.with(|db| db.begin_write())
    }

    /// Begins a transaction on the handle, reopening it first when it is
    /// broken, and once more when beginning shows that it is.
    fn with<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, TransactionError>,
    ) -> Result<T, StoreError> {
        self.check();
        for attempt in 0..2 {
            if self.broken.load(Ordering::Acquire) {
                self.reopen()?;
            }
            let db = self.handle()?;
            match begin(&db) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    let text = e.to_string();
                    if attempt == 0 && breaks_the_file(&text) {
                        self.broken.store(true, Ordering::Release);
                        continue;
                    }
                    return Err(e.into());
                }
            }
        }
        Err(StoreError::Db(format!(
            "{} could not be reopened",
            self.path.display()
        )))
    }

    fn handle(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .map_err(|_| StoreError::Db("database lock poisoned".into()))?
            .clone()
            .ok_or_else(|| {
                StoreError::Db(format!(
                    "{} is closed after a disk error and could not be opened again yet",
                    self.path.display()
                ))
            })
    }

    /// When a breaking error was seen since this handle was last checked:
    /// asks redb, without waiting, whether this one is broken.
    fn check(&self) {
        let now = BREAKS.load(Ordering::Acquire);
        if self.checked.load(Ordering::Acquire) == now {
            return;
        }
        self.checked.store(now, Ordering::Release);
        let Ok(db) = self.handle() else {
            return; // closed: `broken` is already set
        };
        // redb checks for an earlier I/O error first; WouldBlock means it
        // found none and another writer is busy: healthy.
        match db.try_begin_write() {
            Ok(tx) => {
                let _ = tx.abort();
            }
            Err(TransactionError::WouldBlock) => {}
            Err(TransactionError::Storage(StorageError::PreviousIo | StorageError::Io(_))) => {
                self.broken.store(true, Ordering::Release);
            }
            Err(_) => {}
        }
    }

    /// Drops the broken handle and opens the file again. redb allows one
    /// handle per file: the old one must be gone first. When it is not (a
    /// transaction of the old handle is still running, or a caller is still
    /// beginning one), the open fails and is tried again at the next call.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self
            .db
            .write()
            .map_err(|_| StoreError::Db("database lock poisoned".into()))?;
        if !self.broken.load(Ordering::Acquire) {
            return Ok(()); // another caller did it
        }
        drop(slot.take());
        let db = crate::open_db(&self.path, self.cache_bytes).map_err(|e| {
            tracing::warn!(path = %self.path.display(), error = %e, "Store file not reopened yet");
            StoreError::from(e)
        })?;
        *slot = Some(Arc::new(db));
        self.broken.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "Store file reopened after a disk error");
        Ok(())
    }
}
