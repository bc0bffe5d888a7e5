//! Master keys: what wraps each tenant's data keys. A [`KeyProvider`] holds
//! them and never hands them out; the store only asks it to wrap and unwrap.
//! [`FileKeyProvider`] keeps them in files today; a KMS (Vault transit, AWS
//! KMS, …) plugs in by implementing the same trait.

use crate::StoreError;
use crate::crypto::{self, KEY_LEN, SealKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use zeroize::Zeroizing;

/// A data key sealed by a master key, and which master key that was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub key_id: String,
    #[serde(with = "hex_bytes")]
    pub bytes: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// Holds master keys; wraps and unwraps data keys with them.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// Seals `plain` (a data key) under the current master key, bound to `aad`.
    fn wrap(&self, aad: &[u8], plain: &[u8]) -> Result<WrappedKey, StoreError>;
    /// Opens a key sealed by any master key this provider still holds.
    fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError>;
    /// The master key `wrap` uses now.
    fn current_key_id(&self) -> String;
    /// Makes a new master key current; older ones still unwrap until retired.
    fn rotate(&self) -> Result<String, StoreError>;
    /// Destroys a master key nothing is wrapped under any more.
    fn retire(&self, key_id: &str) -> Result<(), StoreError>;
}

/// Master keys in files `master-NNNNNN.key` (32 bytes, mode 0600) under one
/// directory; the highest number is current.
pub struct FileKeyProvider {
    dir: PathBuf,
    keys: RwLock<BTreeMap<u32, SealKey>>,
}

impl std::fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn key_name(n: u32) -> String {
    format!("master-{n:06}.key")
}

fn key_id(n: u32) -> String {
    format!("file:{n}")
}

fn parse_id(id: &str) -> Option<u32> {
    id.strip_prefix("file:")?.parse().ok()
}

/// Writes a new secret file: mode 0600, fsynced with its directory.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

impl FileKeyProvider {
    /// Loads the master keys under `dir`, creating the first on first start.
    pub fn open(dir: &Path) -> Result<FileKeyProvider, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut keys = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix("master-")?.strip_suffix(".key"))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let bytes = Zeroizing::new(std::fs::read(&path).map_err(io(&path))?);
            if bytes.len() != KEY_LEN {
                return Err(StoreError::Corrupt {
                    table: "master key".into(),
                    reason: format!("{} must be {KEY_LEN} bytes", path.display()),
                });
            }
            keys.insert(n, SealKey::new(&bytes)?);
        }
        let p = FileKeyProvider {
            dir: dir.to_owned(),
            keys: RwLock::new(keys),
        };
        if p.read()?.is_empty() {
            p.rotate()?;
        }
        Ok(p)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<u32, SealKey>>, StoreError> {
        self.keys
            .read()
            .map_err(|_| StoreError::Db("key provider poisoned".into()))
    }
}

impl KeyProvider for FileKeyProvider {
    fn wrap(&self, aad: &[u8], plain: &[u8]) -> Result<WrappedKey, StoreError> {
        let keys = self.read()?;
        let (n, key) = keys
            .last_key_value()
            .ok_or(StoreError::Crypto("no master key"))?;
        Ok(WrappedKey {
            key_id: key_id(*n),
            bytes: key.seal(aad, plain)?,
        })
    }

    fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let n = parse_id(&wrapped.key_id).ok_or(StoreError::Crypto("unknown master key id"))?;
        let keys = self.read()?;
        keys.get(&n)
            .ok_or(StoreError::Crypto("master key retired or missing"))?
            .open(aad, &wrapped.bytes)
    }

    fn current_key_id(&self) -> String {
        self.read()
            .ok()
            .and_then(|k| k.last_key_value().map(|(n, _)| key_id(*n)))
            .unwrap_or_default()
    }

    fn rotate(&self) -> Result<String, StoreError> {
        let mut keys = self
            .keys
            .write()
            .map_err(|_| StoreError::Db("key provider poisoned".into()))?;
        let n = keys
            .last_key_value()
            .map_or(1, |(n, _)| n.saturating_add(1));
        let key = crypto::random_key()?;
        write_secret_file(&self.dir.join(key_name(n)), key.as_ref())?;
        keys.insert(n, SealKey::new(key.as_ref())?);
        Ok(key_id(n))
    }

    fn retire(&self, id: &str) -> Result<(), StoreError> {
        let n = parse_id(id).ok_or(StoreError::Crypto("unknown master key id"))?;
        let mut keys = self
            .keys
            .write()
            .map_err(|_| StoreError::Db("key provider poisoned".into()))?;
        if keys.last_key_value().map(|(c, _)| *c) == Some(n) {
            return Err(StoreError::Crypto(
                "the current master key cannot be retired",
            ));
        }
        keys.remove(&n);
        let path = self.dir.join(key_name(n));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}
