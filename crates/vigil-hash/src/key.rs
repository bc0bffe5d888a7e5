//! The identity of a file's content: what the cache is keyed by.

use std::os::unix::fs::MetadataExt;

/// A file's content as far as `stat` can tell: the same (device, inode, size,
/// mtime, ctime) is taken to be the same bytes. ctime is part of it because a
/// writer can set mtime back (`touch -d`), but not ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// Bytes of [`FileKey::to_bytes`].
pub(crate) const KEY_LEN: usize = 40;

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl FileKey {
    /// The key of a file already `stat`ed (for callers that have the metadata,
    /// e.g. from an event, and want [`crate::FileHasher::lookup`] without an open).
    pub fn from_metadata(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The key from a `stat(2)` buffer: the same fields, read the same way,
    /// as [`FileKey::from_metadata`] (a test holds the two equal).
    // The libc field types are u64/i64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn from_stat(st: &nix::sys::stat::FileStat) -> FileKey {
        FileKey {
            // `as`, the way std's `MetadataExt` reads them.
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime_ns: nanos(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: nanos(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; KEY_LEN] {
        let mut b = [0u8; KEY_LEN];
        b[0..8].copy_from_slice(&self.dev.to_be_bytes());
        b[8..16].copy_from_slice(&self.ino.to_be_bytes());
        b[16..24].copy_from_slice(&self.size.to_be_bytes());
        b[24..32].copy_from_slice(&self.mtime_ns.to_be_bytes());
        b[32..40].copy_from_slice(&self.ctime_ns.to_be_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<FileKey> {
        let word = |i: usize| -> Option<[u8; 8]> { b.get(i..i + 8)?.try_into().ok() };
        if b.len() != KEY_LEN {
            return None;
        }
        Some(FileKey {
            dev: u64::from_be_bytes(word(0)?),
            ino: u64::from_be_bytes(word(8)?),
            size: u64::from_be_bytes(word(16)?),
            mtime_ns: i64::from_be_bytes(word(24)?),
            ctime_ns: i64::from_be_bytes(word(32)?),
        })
    }
}
