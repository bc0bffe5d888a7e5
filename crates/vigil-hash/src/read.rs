//! Opening a path safely and hashing it in one streamed read.
//!
//! The order matters: the path is refused by name and by `stat` before it is
//! opened, because opening is not free of effects for everything a path can
//! name (opening a FIFO can block, opening `/dev/watchdog` arms it, opening a
//! tty can make it our controlling terminal). What was opened is checked again
//! on the descriptor, since the path can be replaced in between.

use crate::HashError;
use crate::key::FileKey;
use nix::fcntl::{OFlag, PosixFadviseAdvice, open, posix_fadvise};
use nix::sys::stat::{self, Mode};
use nix::sys::statfs::{self, FsType};
use sha2::Digest;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes read per `read(2)`: large enough for BLAKE3's widest SIMD path and
/// few syscalls, small enough that both digests find the chunk in L2.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Which digests to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithms {
    #[default]
    Both,
    Blake3Only,
    Sha256Only,
}

impl Algorithms {
    fn blake3(self) -> bool {
        self != Algorithms::Sha256Only
    }
    fn sha256(self) -> bool {
        self != Algorithms::Blake3Only
    }
}

/// The digests of one file's content; a digest not asked for is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub blake3: Option<[u8; 32]>,
    pub sha256: Option<[u8; 32]>,
}

impl Digests {
    /// Whether these digests include every one `algorithms` asks for.
    pub fn covers(&self, algorithms: Algorithms) -> bool {
        (!algorithms.blake3() || self.blake3.is_some())
            && (!algorithms.sha256() || self.sha256.is_some())
    }
}

/// Kernel pseudo filesystems: their "regular files" are interfaces (reading
/// can have effects or never end), never content worth a hash.
const PSEUDO_FS: [FsType; 7] = [
    statfs::PROC_SUPER_MAGIC,
    statfs::SYSFS_MAGIC,
    statfs::DEBUGFS_MAGIC,
    statfs::TRACEFS_MAGIC,
    statfs::SECURITYFS_MAGIC,
    statfs::CGROUP_SUPER_MAGIC,
    statfs::CGROUP2_SUPER_MAGIC,
];

fn is_pseudo(fs: FsType) -> bool {
    PSEUDO_FS.contains(&fs)
}

/// `/proc`, `/sys` and anything below them, by name. Other spellings
/// (`//proc`, a symlink into /proc) are caught by the filesystem check.
pub(crate) fn is_excluded_path(path: &Path) -> bool {
    let b = path.as_os_str().as_bytes();
    [b"/proc".as_slice(), b"/sys".as_slice()]
        .iter()
        .any(|root| {
            b.strip_prefix(*root)
                .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'/'))
        })
}

/// `stat`s the path (following symlinks, as `exec` does) and refuses what
/// is not a regular file or lies under /proc or /sys, without opening it.
/// Returns the identity the `stat` found.
///
/// One `fstatat(2)`, which on a cached rescan is nearly all the work: it
/// asks the kernel for the basic fields only, where `std::fs::metadata`'s
/// `statx(STATX_ALL)` costs about 10% more per call, and it returns nothing
/// more than the key (no `Metadata` to copy around).
pub(crate) fn stat_regular(path: &Path) -> Result<FileKey, HashError> {
    if is_excluded_path(path) {
        return Err(HashError::ExcludedPath);
    }
    let st = stat::stat(path).map_err(|e| HashError::from_io(e.into()))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return Err(HashError::NotARegularFile);
    }
    Ok(FileKey::from_stat(&st))
}

/// Opens a path `stat_regular` accepted, and checks the descriptor: a regular
/// file on a real filesystem. `dev` is the device the path's `stat` found.
/// Returns the file and its `fstat`.
pub(crate) fn open_regular(path: &Path, dev: u64) -> Result<(File, Metadata), HashError> {
    // Checked by path first so a pseudo-filesystem file is never opened.
    if is_pseudo(statfs::statfs(path)?.filesystem_type()) {
        return Err(HashError::ExcludedPath);
    }
    // O_NONBLOCK: a FIFO swapped in after the stat must not block the open.
    // O_NOCTTY: a tty swapped in must not become our terminal. O_NOATIME: an
    // EDR should not disturb the access time investigators read later; the
    // kernel allows it only to the owner (or CAP_FOWNER), so retry without.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match open(path, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(nix::Error::EPERM) => open(path, flags, Mode::empty())?,
        other => other?,
    };
    let file = File::from(fd);
    let before = file.metadata().map_err(HashError::from_io)?;
    if !before.file_type().is_file() {
        return Err(HashError::NotARegularFile);
    }
    if before.dev() != dev && is_pseudo(statfs::fstatfs(&file)?.filesystem_type()) {
        return Err(HashError::ExcludedPath);
    }
    Ok((file, before))
}

/// Reads `file` to its end once, feeding each chunk to the digests asked for,
/// and checks that what was read is what `before` described. `after_chunk`
/// runs after every chunk with its length (the read budget's pacing, and a
/// test seam).
pub(crate) fn hash_open_file(
    file: &mut File,
    before: &Metadata,
    algorithms: Algorithms,
    after_chunk: &mut dyn FnMut(usize),
) -> Result<Digests, HashError> {
    let size = before.size();
    // Advice only: readahead sized for a sequential scan. Failing it changes nothing.
    let _ = posix_fadvise(&*file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
    let mut b3 = algorithms.blake3().then(blake3::Hasher::new);
    let mut sha = algorithms.sha256().then(sha2::Sha256::new);
    // One byte more than the size, so growth shows as a read past it.
    let want = usize::try_from(size.saturating_add(1)).unwrap_or(CHUNK);
    let mut buf = vec![0u8; want.clamp(1, CHUNK)];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::from_io(e)),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        total = total.saturating_add(n as u64);
        if total > size {
            return Err(HashError::ChangedDuringHash);
        }
        if let Some(h) = b3.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha.as_mut() {
            h.update(chunk);
        }
        after_chunk(n);
    }
    let after = file.metadata().map_err(HashError::from_io)?;
    // Unlinked while we read. A file already unlinked when opened (a deleted
    // executable still running) did not vanish *while* hashed.
    if before.nlink() > 0 && after.nlink() == 0 {
        return Err(HashError::Vanished);
    }
    if total != size || FileKey::from_metadata(&after) != FileKey::from_metadata(before) {
        return Err(HashError::ChangedDuringHash);
    }
    Ok(Digests {
        blake3: b3.map(|h| *h.finalize().as_bytes()),
        sha256: sha.map(|h| h.finalize().into()),
    })
}
