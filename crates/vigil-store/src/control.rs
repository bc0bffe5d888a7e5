use crate::crypto::{self, KEY_LEN, SealKey};
use crate::tenant::TenantStore;
use crate::{StoreError, check_id, new_secret, now_unix_ns, token_digest};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const ENROLLMENT_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollment_tokens");
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    pub created_unix_ns: i64,
    /// The tenant's data key, sealed by the master key.
    wrapped_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub tenant_id: String,
    pub created_unix_ns: i64,
    pub expires_unix_ns: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenInfo {
    pub tenant_id: String,
    pub name: String,
    pub created_unix_ns: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: String,
    pub tenant_id: String,
    pub hostname: String,
    pub enrolled_unix_ns: i64,
    pub revoked: bool,
}

/// The control database and the gate to every tenant's store.
pub struct ControlStore {
    dir: PathBuf,
    db: Database,
    master: SealKey,
    open_tenants: Mutex<HashMap<String, Arc<TenantStore>>>,
}

impl std::fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlStore")
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

/// Reads the master key, creating it (mode 0600, fsynced) on first start.
fn load_master_key(path: &Path) -> Result<SealKey, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == KEY_LEN => SealKey::new(&bytes),
        Ok(_) => Err(StoreError::Corrupt {
            table: "master.key",
            reason: format!("must be {KEY_LEN} bytes"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = crypto::random_key()?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(io(path))?;
            f.write_all(key.as_ref()).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            SealKey::new(key.as_ref())
        }
        Err(e) => Err(io(path)(e)),
    }
}

fn get<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let tx = db.begin_read()?;
    let t = match tx.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match t.get(key)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                table: "control",
                reason: e.to_string(),
            }),
    }
}

fn put<T: Serialize>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        table: "control",
        reason: e.to_string(),
    })?;
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(table)?;
        t.insert(key, bytes.as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

/// What presenting an enrollment token yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Tenant(String),
    Expired,
    Unknown,
}

impl ControlStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<ControlStore, StoreError> {
        std::fs::create_dir_all(dir.join("tenants")).map_err(io(dir))?;
        let master = load_master_key(&dir.join("master.key"))?;
        let db = Database::create(dir.join("control.redb"))?;
        Ok(ControlStore {
            dir: dir.to_owned(),
            db,
            master,
            open_tenants: Mutex::new(HashMap::new()),
        })
    }

    pub fn create_tenant(&self, id: &str, name: &str) -> Result<TenantRecord, StoreError> {
        check_id(id)?;
        if self.tenant(id)?.is_some() {
            return Err(StoreError::TenantExists(id.to_owned()));
        }
        let key = crypto::random_key()?;
        let wrapped = self
            .master
            .seal(format!("tenant-key:{id}").as_bytes(), key.as_ref())?;
        let rec = TenantRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            created_unix_ns: now_unix_ns(),
            wrapped_key: hex::encode(wrapped),
        };
        put(&self.db, TENANTS, id, &rec)?;
        tracing::info!(tenant = id, "Tenant created");
        Ok(rec)
    }

    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        get(&self.db, TENANTS, id)
    }

    /// Opens a tenant's store (once per process; later calls share it).
    pub fn tenant_store(&self, id: &str) -> Result<Arc<TenantStore>, StoreError> {
        let mut open = self
            .open_tenants
            .lock()
            .map_err(|_| StoreError::Db("tenant cache poisoned".into()))?;
        if let Some(t) = open.get(id) {
            return Ok(Arc::clone(t));
        }
        let rec = self
            .tenant(id)?
            .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        let wrapped = hex::decode(&rec.wrapped_key).map_err(|e| StoreError::Corrupt {
            table: "tenants",
            reason: e.to_string(),
        })?;
        let key = self
            .master
            .open(format!("tenant-key:{id}").as_bytes(), &wrapped)?;
        let dir = self.dir.join("tenants").join(id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let store = Arc::new(TenantStore::open(
            id,
            &dir.join("data.redb"),
            SealKey::new(&key)?,
        )?);
        open.insert(id.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// Creates an enrollment token for `tenant_id`, valid for `ttl`. Returns the secret; only its digest is kept.
    pub fn create_enrollment_token(
        &self,
        tenant_id: &str,
        ttl: std::time::Duration,
    ) -> Result<String, StoreError> {
        self.tenant(tenant_id)?
            .ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_owned()))?;
        let secret = new_secret("vgl_enroll")?;
        let now = now_unix_ns();
        let ttl_ns = i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX);
        let rec = EnrollmentToken {
            tenant_id: tenant_id.to_owned(),
            created_unix_ns: now,
            expires_unix_ns: now.saturating_add(ttl_ns),
        };
        put(&self.db, ENROLLMENT_TOKENS, &token_digest(&secret), &rec)?;
        Ok(secret)
    }

    pub fn redeem_enrollment_token(&self, secret: &str) -> Result<Redeemed, StoreError> {
        Ok(
            match get::<EnrollmentToken>(&self.db, ENROLLMENT_TOKENS, &token_digest(secret))? {
                None => Redeemed::Unknown,
                Some(t) if t.expires_unix_ns <= now_unix_ns() => Redeemed::Expired,
                Some(t) => Redeemed::Tenant(t.tenant_id),
            },
        )
    }

    /// Creates an analyst API token scoped to `tenant_id`. Returns the secret; only its digest is kept.
    pub fn create_api_token(&self, tenant_id: &str, name: &str) -> Result<String, StoreError> {
        self.tenant(tenant_id)?
            .ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_owned()))?;
        let secret = new_secret("vgl_api")?;
        let rec = ApiTokenInfo {
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            created_unix_ns: now_unix_ns(),
        };
        put(&self.db, API_TOKENS, &token_digest(&secret), &rec)?;
        Ok(secret)
    }

    pub fn api_token(&self, secret: &str) -> Result<Option<ApiTokenInfo>, StoreError> {
        get(&self.db, API_TOKENS, &token_digest(secret))
    }

    pub fn put_device(&self, rec: &DeviceRecord) -> Result<(), StoreError> {
        check_id(&rec.device_id)?;
        put(&self.db, DEVICES, &rec.device_id, rec)
    }

    pub fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        get(&self.db, DEVICES, device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scoped_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let c = ControlStore::open(dir.path()).unwrap();
        c.create_tenant("a", "A").unwrap();
        assert!(matches!(
            c.create_tenant("a", "A"),
            Err(StoreError::TenantExists(_))
        ));
        assert!(matches!(
            c.create_tenant("../x", "X"),
            Err(StoreError::BadIdentifier(_))
        ));
        let t = c
            .create_enrollment_token("a", std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            c.redeem_enrollment_token(&t).unwrap(),
            Redeemed::Tenant("a".into())
        );
        assert_eq!(
            c.redeem_enrollment_token("nope").unwrap(),
            Redeemed::Unknown
        );
        let e = c
            .create_enrollment_token("a", std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(c.redeem_enrollment_token(&e).unwrap(), Redeemed::Expired);
        let api = c.create_api_token("a", "analyst").unwrap();
        assert_eq!(c.api_token(&api).unwrap().unwrap().tenant_id, "a");
        assert!(c.api_token("vgl_api_wrong").unwrap().is_none());
        assert!(matches!(
            c.create_api_token("b", "x"),
            Err(StoreError::UnknownTenant(_))
        ));
    }

    #[test]
    fn reopen_keeps_tenants_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = ControlStore::open(dir.path()).unwrap();
            c.create_tenant("a", "A").unwrap();
            let t = c.tenant_store("a").unwrap();
            t.commit_batch("dev", &[(1, b"one".to_vec())], &[]).unwrap();
        }
        let c = ControlStore::open(dir.path()).unwrap();
        let t = c.tenant_store("a").unwrap();
        assert_eq!(t.records("dev", 0, 10).unwrap(), vec![(1, b"one".to_vec())]);
        assert!(matches!(
            c.tenant_store("b"),
            Err(StoreError::UnknownTenant(_))
        ));
    }
}
