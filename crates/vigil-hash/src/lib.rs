//! File hashing for the sensor's enrich step: BLAKE3 and SHA-256 of a file's
//! content in one streamed read, guarded, budgeted and cached.
//!
//! What it is:
//! - a reader that only ever reads **regular files** on real filesystems: the
//!   path is `stat`ed before it is opened (a FIFO, socket or device is refused
//!   unopened), opened with `O_NONBLOCK | O_NOCTTY`, and the descriptor is
//!   checked again; nothing under `/proc` or `/sys`, nor on procfs, sysfs,
//!   debugfs, tracefs, securityfs or cgroupfs, is read;
//! - a check that the bytes hashed are the file's: the `fstat` before and after
//!   the read must agree on size, mtime and ctime, and exactly `size` bytes must
//!   be read, or the answer is `changed_during_hash`;
//! - a read budget (token bucket, bytes/s) with a non-blocking
//!   [`FileHasher::try_hash`] and a pacing [`FileHasher::hash_blocking`];
//! - a bounded cache keyed by (device, inode, size, mtime, ctime), kept in
//!   memory and in a redb file across restarts ([`HashCache`]).
//!
//! What it is not: it does not decide *which* files to hash or when (the
//! sensor does), keeps no threads of its own, and does no network I/O. A
//! cache hit trusts `stat`: content changed without any change to size, mtime
//! or ctime (only possible by writing the block device) is not noticed.
//!
//! ```no_run
//! use vigil_hash::{FileHasher, HashCache, HashConfig, to_proto};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (cache, _opened) = HashCache::open("/var/lib/vigil/hashes.redb".as_ref(), 100_000)?;
//! let hasher = FileHasher::new(HashConfig::default(), Some(cache));
//! let record = to_proto(&hasher.try_hash("/usr/bin/ls".as_ref()));
//! # let _ = record; Ok(()) }
//! ```

mod budget;
mod cache;
mod error;
mod hasher;
mod key;
mod read;
#[cfg(test)]
mod tests;

pub use budget::{Clock, ManualClock, ReadBudget, SystemClock};
pub use cache::{
    CacheError, CacheOpened, CacheStats, DEFAULT_CACHE_ENTRIES, DEFAULT_FLUSH_EVERY, HashCache,
};
pub use error::HashError;
pub use hasher::{
    DEFAULT_MAX_FILE_BYTES, DEFAULT_RACY_WINDOW, FileHasher, FileHashes, HashConfig, HashStats,
    to_proto,
};
pub use key::FileKey;
pub use read::{Algorithms, Digests};
