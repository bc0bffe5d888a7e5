//! Vigil's server-side store.
//!
//! What it is: a control database (tenants with their region, retention and
//! wrapped keys; people's API tokens with their role; enrollment tokens;
//! devices; operators' access grants) and one database file per tenant
//! (records and alerts), all redb, under the tenant's region's directory.
//! Every value in a tenant's file is sealed with that tenant's own AES-256-GCM
//! data key; data keys are kept only wrapped by a master key held by a
//! [`KeyProvider`] (files today, a KMS tomorrow). Time comes from a [`Clock`].
//!
//! What it is not: it knows nothing of protobuf or gRPC, nor of who is asking.
//! Records and alerts are opaque bytes to it; the server decides what they
//! mean and who may read them.
//!
//! Isolation is structural: a [`TenantStore`] can only be obtained for one
//! tenant id and only reads that tenant's file with that tenant's keys.

mod access;
mod chunk;
mod clock;
mod control;
mod crypto;
mod data;
mod index;
mod keys;
mod postings;
mod reopen;
mod rulesets;
mod tenant;
#[cfg(test)]
mod tests;

pub use access::{
    ApiToken, Decision, DeviceRecord, EnrollmentToken, Grant, GrantState, MAX_GRANT_MINUTES,
    Redeemed, Role, TokenCheck,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use control::{
    ControlStore, DEFAULT_RETENTION_DAYS, DeletedTenant, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
    PrivacyPolicy, Region, StoreOptions, TenantRecord, check_retention,
};
pub use data::TenantData;
pub use index::{AlertQuery, RecordIndex, Scan, ScanStats, Sighting};
pub use keys::{FileKeyProvider, KeyProvider, WrappedKey};
pub use rulesets::{MAX_RULE_SET_BYTES, MAX_RULE_SET_VERSIONS, RuleSetVersion, RuleSets};
pub use tenant::{
    AlertMerge, AlertUpdate, BatchOutcome, Derive, LevelCounts, NewAlert, NewBatch, NoMerge,
    Purged, StoredAlert, TenantStore,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    /// The disk (or the quota) has no room for the write: nothing was stored.
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("I/O on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("encryption: {0}")]
    Crypto(&'static str),
    #[error("corrupt entry in {table}: {reason}")]
    Corrupt { table: String, reason: String },
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("tenant `{tenant}` lives in region `{region}`, which this server does not serve")]
    RegionNotServed { tenant: String, region: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no such {0}")]
    NotFound(String),
    #[error("tenant `{0}` already exists")]
    TenantExists(String),
    #[error("invalid identifier `{0}`")]
    BadIdentifier(String),
}

/// redb keeps up to 1 GiB of pages in memory per database unless told, and a
/// server holds three a tenant: these bound it (the kernel's page cache
/// serves the rest). The records and index caches hold the pages ingest and
/// the indexer are writing and the recent chunks hunts read.
pub(crate) const CONTROL_CACHE_BYTES: usize = 32 << 20;
pub(crate) const DATA_CACHE_BYTES: usize = 128 << 20;
pub(crate) const INDEX_CACHE_BYTES: usize = 128 << 20;
pub(crate) const RULES_CACHE_BYTES: usize = 4 << 20;

/// Opens (or creates) a redb file with a bounded page cache.
pub(crate) fn open_db(
    path: impl AsRef<std::path::Path>,
    cache_bytes: usize,
) -> Result<redb::Database, redb::DatabaseError> {
    redb::Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
}

/// A redb error as a store error; a full disk (ENOSPC, EDQUOT) is told apart,
/// whichever of redb's error types carries it. One that leaves its database
/// refusing every later call makes the store reopen it (`reopen.rs`).
fn from_redb(e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    reopen::note(&text);
    if text.contains("No space left on device")
        || text.contains("os error 28")
        || text.contains("Disk quota exceeded")
        || text.contains("os error 122")
    {
        StoreError::DiskFull(text)
    } else {
        StoreError::Db(text)
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { from_redb(e) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Current time in nanoseconds since the Unix epoch.
pub fn now_unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SHA-256 of a secret, hex: how tokens are stored (never in clear).
pub fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random secret: 32 bytes, hex, with a readable prefix.
pub fn new_secret(prefix: &str) -> Result<String, StoreError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|_| StoreError::Crypto("no randomness"))?;
    Ok(format!("{prefix}_{}", hex::encode(b)))
}

/// A new random identifier (128 bits, hex).
pub fn new_id() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| StoreError::Crypto("no randomness"))?;
    Ok(hex::encode(b))
}

fn check_id(s: &str) -> Result<(), StoreError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(StoreError::BadIdentifier(s.to_owned()));
    }
    Ok(())
}
