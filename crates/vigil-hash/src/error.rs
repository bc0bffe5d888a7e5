//! Why a file has no hashes: one typed reason, with the stable name the record carries.

use std::time::Duration;

/// Why a file was not hashed. [`HashError::as_str`] is the name written to
/// `Hashes.error` in the record; the `Display` text is for logs.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The path did not exist when opened, or the file was unlinked while it was read.
    #[error("the file vanished before it could be hashed")]
    Vanished,
    /// Size, mtime or ctime differed between the `fstat` before and after the
    /// read, or the file held more (or fewer) bytes than its size said: it has
    /// no single content to hash.
    #[error("the file changed while it was hashed")]
    ChangedDuringHash,
    #[error("permission denied")]
    PermissionDenied,
    #[error("the file has {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// A directory, FIFO, socket, device or anything else but a regular file.
    #[error("not a regular file")]
    NotARegularFile,
    /// Under /proc or /sys, or on a pseudo filesystem (procfs, sysfs, debugfs, ...)
    /// whose "files" are kernel interfaces, not content.
    #[error("the path is excluded from hashing (a kernel pseudo filesystem)")]
    ExcludedPath,
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The read budget has no room for this file now; try again after `retry_after`.
    #[error("the read budget is spent; retry in {retry_after:?}")]
    BudgetExceeded { retry_after: Duration },
}

impl HashError {
    /// The stable name of the reason, as the record's `Hashes.error` carries it.
    pub fn as_str(&self) -> &'static str {
        match self {
            HashError::Vanished => "vanished",
            HashError::ChangedDuringHash => "changed_during_hash",
            HashError::PermissionDenied => "permission_denied",
            HashError::TooLarge { .. } => "too_large",
            HashError::NotARegularFile => "not_a_regular_file",
            HashError::ExcludedPath => "excluded_path",
            HashError::Io(_) => "io_error",
            HashError::BudgetExceeded { .. } => "budget_exceeded",
        }
    }

    /// Maps an error from `open`, `fstat` or `read` to its reason.
    pub(crate) fn from_io(e: std::io::Error) -> HashError {
        match e.kind() {
            std::io::ErrorKind::NotFound => HashError::Vanished,
            std::io::ErrorKind::PermissionDenied => HashError::PermissionDenied,
            // ESTALE: an NFS file removed on the server side is gone, too.
            _ if e.raw_os_error() == Some(nix::libc::ESTALE) => HashError::Vanished,
            // ENOTDIR: a path component was replaced by a file, so the path no
            // longer names what was executed.
            _ if e.raw_os_error() == Some(nix::libc::ENOTDIR) => HashError::Vanished,
            // ENXIO: a socket, or a device with no driver behind it: not a
            // regular file either way.
            _ if e.raw_os_error() == Some(nix::libc::ENXIO) => HashError::NotARegularFile,
            _ => HashError::Io(e),
        }
    }
}

impl From<nix::Error> for HashError {
    fn from(e: nix::Error) -> HashError {
        HashError::from_io(std::io::Error::from(e))
    }
}
