use std::io;
use std::path::{Path, PathBuf};

/// Why an audit operation failed. A log whose content is wrong is not an error
/// for [`crate::verify_file`]: that is its report's business.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit log {} is already open for writing (locked by another writer)", path.display())]
    Locked { path: PathBuf },
    #[error("audit log {}, line {line}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("audit log {}: sequence numbers exhausted", path.display())]
    SeqExhausted { path: PathBuf },
    #[error("audit entry could not be encoded: {0}")]
    Encode(String),
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_owned(),
        source,
    }
}
