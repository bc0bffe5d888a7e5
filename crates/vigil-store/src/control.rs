//! The control database: tenants (region, retention, wrapped keys), and the
//! gate to every tenant's store. People, sensors and grants are in `access.rs`.

use crate::clock::{Clock, NS_PER_DAY};
use crate::crypto::{self, KeyRing, SealKey};
use crate::keys::{KeyProvider, WrappedKey};
use crate::reopen::ReopeningDb;
use crate::tenant::{Purged, TenantStore, dir_size};
use crate::{StoreError, check_id, new_id};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

pub(crate) const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Deleted tenants: id → name and time, no keys. Ids are never reused.
const DELETED: TableDefinition<&str, &[u8]> = TableDefinition::new("deleted_tenants");
/// Deployment-wide secrets (the deployment audit log's key), wrapped.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");

pub const MIN_RETENTION_DAYS: u32 = 30;
pub const MAX_RETENTION_DAYS: u32 = 180;
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// A data location: a name chosen at onboarding and the directory it maps to
/// on this server (a placement, when storage is scaled out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    /// Fixed at creation: nothing changes it.
    pub region: String,
    pub retention_days: u32,
    pub created_unix_ns: i64,
    /// Data keys by version, wrapped by a master key. More than one only while
    /// a rotation re-seals older data.
    data_keys: BTreeMap<u32, WrappedKey>,
    /// The key of the tenant's audit log, wrapped.
    audit_key: WrappedKey,
    /// What the tenant asks of its sensors' privacy.
    #[serde(default)]
    pub privacy: PrivacyPolicy,
    /// The key of the tenant's pseudonyms, wrapped: made on first use, never
    /// rotated (a new key would give every person a new pseudonym).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pseudonym_key: Option<WrappedKey>,
}

/// A tenant's privacy policy for its sensors (`SensorPolicy` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyPolicy {
    /// Increases with every change (0: never set).
    pub version: u64,
    /// Sensors send optional data.
    pub optional_data: bool,
    /// Sensors replace user names, host names and home-directory segments by
    /// keyed pseudonyms.
    pub pseudonymize: bool,
    /// Redaction patterns added to the sensors' defaults: (name, regex).
    pub redact: Vec<(String, String)>,
}

impl TenantRecord {
    pub fn data_key_version(&self) -> u32 {
        self.data_keys.keys().next_back().copied().unwrap_or(0)
    }

    pub fn data_key_versions(&self) -> Vec<u32> {
        self.data_keys.keys().copied().collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedTenant {
    pub id: String,
    pub name: String,
    pub region: String,
    pub deleted_unix_ns: i64,
}

/// Where the store lives and what it serves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The control database's directory.
    pub dir: PathBuf,
    /// Regions this server serves; tenants of others are refused.
    pub regions: Vec<Region>,
    pub keys: Arc<dyn KeyProvider>,
    pub clock: Arc<dyn Clock>,
}

impl StoreOptions {
    /// One region, `local`, with its data beside the control database; master
    /// keys in files under `dir/keys`; the machine's clock.
    pub fn local(dir: &Path) -> Result<StoreOptions, StoreError> {
        Ok(StoreOptions {
            dir: dir.to_owned(),
            regions: vec![Region {
                name: "local".into(),
                dir: dir.to_owned(),
            }],
            keys: Arc::new(crate::FileKeyProvider::open(&dir.join("keys"))?),
            clock: Arc::new(crate::SystemClock),
        })
    }
}

/// The control database and the gate to every tenant's store.
pub struct ControlStore {
    pub(crate) db: ReopeningDb,
    opts: StoreOptions,
    open_tenants: Mutex<HashMap<String, Arc<TenantStore>>>,
    /// Serializes everything that wraps or unwraps keys, so a master key is
    /// never retired while something is being wrapped under it.
    key_ops: Mutex<()>,
}

impl std::fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlStore")
            .field("dir", &self.opts.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn decode<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        table: "control".into(),
        reason: e.to_string(),
    })
}

pub(crate) fn get<T: DeserializeOwned>(
    db: &ReopeningDb,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    match t.get(key)? {
        None => Ok(None),
        Some(v) => decode(redb::TableHandle::name(&table), v.value()).map(Some),
    }
}

pub(crate) fn all<T: DeserializeOwned>(
    db: &ReopeningDb,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    t.iter()?
        .map(|r| {
            let (_, v) = r?;
            decode(redb::TableHandle::name(&table), v.value())
        })
        .collect()
}

pub(crate) fn put<T: Serialize>(
    db: &ReopeningDb,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = encode(value)?;
    let tx = db.begin_write()?;
    tx.open_table(table)?.insert(key, bytes.as_slice())?;
    tx.commit()?;
    Ok(())
}

/// Reads, changes and writes back one row in one transaction.
pub(crate) fn update<T: Serialize + DeserializeOwned>(
    db: &ReopeningDb,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    change: impl FnOnce(&mut T) -> Result<(), StoreError>,
) -> Result<Option<T>, StoreError> {
    let tx = db.begin_write()?;
    let out = {
        let mut t = tx.open_table(table)?;
        let current: Option<T> = match t.get(key)? {
            None => None,
            Some(v) => Some(decode(redb::TableHandle::name(&table), v.value())?),
        };
        match current {
            None => None,
            Some(mut value) => {
                change(&mut value)?;
                t.insert(key, encode(&value)?.as_slice())?;
                Some(value)
            }
        }
    };
    tx.commit()?;
    Ok(out)
}

fn data_key_aad(tenant: &str, version: u32) -> Vec<u8> {
    format!("tenant-key:{tenant}:{version}").into_bytes()
}

fn pseudonym_key_aad(tenant: &str) -> Vec<u8> {
    format!("vigil pseudonym key\0{tenant}").into_bytes()
}

fn audit_key_aad(log: &str) -> Vec<u8> {
    format!("audit-key:{log}").into_bytes()
}

pub fn check_retention(days: u32) -> Result<(), StoreError> {
    if !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&days) {
        return Err(StoreError::Invalid(format!(
            "retention_days must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS}, not {days}"
        )));
    }
    Ok(())
}

impl ControlStore {
    /// Opens (or creates) the store. Tenant directories left behind by a
    /// deletion that stopped half way are removed.
    pub fn open(opts: StoreOptions) -> Result<ControlStore, StoreError> {
        if opts.regions.is_empty() {
            return Err(StoreError::Invalid("no region to serve".into()));
        }
        std::fs::create_dir_all(&opts.dir).map_err(io(&opts.dir))?;
        let db = ReopeningDb::create(opts.dir.join("control.redb"), crate::CONTROL_CACHE_BYTES)?;
        let tx = db.begin_write()?;
        for t in [
            TENANTS,
            DELETED,
            SETTINGS,
            crate::access::API_TOKENS,
            crate::access::ENROLLMENT_TOKENS,
            crate::access::DEVICES,
            crate::access::GRANTS,
        ] {
            tx.open_table(t)?;
        }
        tx.commit()?;
        let store = ControlStore {
            db,
            opts,
            open_tenants: Mutex::new(HashMap::new()),
            key_ops: Mutex::new(()),
        };
        store.sweep_orphans()?;
        Ok(store)
    }

    /// [`StoreOptions::local`], opened.
    pub fn open_local(dir: &Path) -> Result<ControlStore, StoreError> {
        ControlStore::open(StoreOptions::local(dir)?)
    }

    pub fn now(&self) -> i64 {
        self.opts.clock.now_unix_ns()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.opts.clock
    }

    pub fn regions(&self) -> &[Region] {
        &self.opts.regions
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    fn region(&self, name: &str) -> Option<&Region> {
        self.opts.regions.iter().find(|r| r.name == name)
    }

    pub(crate) fn lock_keys(&self) -> Result<std::sync::MutexGuard<'_, ()>, StoreError> {
        self.key_ops
            .lock()
            .map_err(|_| StoreError::Db("key lock poisoned".into()))
    }

    /// The directory of a tenant's files, in its region.
    pub fn tenant_dir(&self, rec: &TenantRecord) -> Result<PathBuf, StoreError> {
        let region = self
            .region(&rec.region)
            .ok_or_else(|| StoreError::RegionNotServed {
                tenant: rec.id.clone(),
                region: rec.region.clone(),
            })?;
        Ok(region.dir.join("tenants").join(&rec.id))
    }

    /// Creates a tenant in `region` (a served one), with a fresh data key and
    /// audit key. `id` is generated unless given.
    pub fn create_tenant(
        &self,
        id: Option<&str>,
        name: &str,
        region: &str,
        retention_days: u32,
    ) -> Result<TenantRecord, StoreError> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => format!("t{}", &new_id()?[..15]),
        };
        check_id(&id)?;
        if name.trim().is_empty()
            || name.chars().count() > 128
            || name.chars().any(char::is_control)
        {
            return Err(StoreError::Invalid(
                "name must be 1 to 128 printable characters".into(),
            ));
        }
        check_retention(retention_days)?;
        if self.region(region).is_none() {
            return Err(StoreError::RegionNotServed {
                tenant: id,
                region: region.to_owned(),
            });
        }
        let _k = self.lock_keys()?;
        let data_key = crypto::random_key()?;
        let audit_key = crypto::random_key()?;
        let rec = TenantRecord {
            id: id.clone(),
            name: name.to_owned(),
            region: region.to_owned(),
            retention_days,
            created_unix_ns: self.now(),
            data_keys: BTreeMap::from([(
                1,
                self.opts
                    .keys
                    .wrap(&data_key_aad(&id, 1), data_key.as_ref())?,
            )]),
            audit_key: self
                .opts
                .keys
                .wrap(&audit_key_aad(&format!("tenant:{id}")), audit_key.as_ref())?,
            privacy: PrivacyPolicy::default(),
            pseudonym_key: None,
        };
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(TENANTS)?;
            if t.get(id.as_str())?.is_some() || tx.open_table(DELETED)?.get(id.as_str())?.is_some()
            {
                return Err(StoreError::TenantExists(id));
            }
            t.insert(id.as_str(), encode(&rec)?.as_slice())?;
        }
        tx.commit()?;
        tracing::info!(tenant = %id, region, "Tenant created");
        Ok(rec)
    }

    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        get(&self.db, TENANTS, id)
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        all(&self.db, TENANTS)
    }

    pub fn deleted_tenant(&self, id: &str) -> Result<Option<DeletedTenant>, StoreError> {
        get(&self.db, DELETED, id)
    }

    pub fn set_retention(&self, id: &str, days: u32) -> Result<TenantRecord, StoreError> {
        check_retention(days)?;
        update(&self.db, TENANTS, id, |t: &mut TenantRecord| {
            t.retention_days = days;
            Ok(())
        })?
        .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))
    }

    /// Replaces a tenant's privacy policy (its version is the old one's + 1).
    pub fn set_privacy(&self, id: &str, policy: PrivacyPolicy) -> Result<TenantRecord, StoreError> {
        update(&self.db, TENANTS, id, |t: &mut TenantRecord| {
            t.privacy = PrivacyPolicy {
                version: t.privacy.version + 1,
                ..policy
            };
            Ok(())
        })?
        .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))
    }

    /// The key of a tenant's pseudonyms, made on first use.
    pub fn tenant_pseudonym_key(&self, id: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        let aad = pseudonym_key_aad(id);
        let _k = self.lock_keys()?;
        let rec = self
            .tenant(id)?
            .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        if let Some(w) = &rec.pseudonym_key {
            let k = self.opts.keys.unwrap(w, &aad)?;
            let mut out = Zeroizing::new([0u8; 32]);
            if k.len() != out.len() {
                return Err(StoreError::Crypto("pseudonym key has the wrong length"));
            }
            out.copy_from_slice(&k);
            return Ok(out);
        }
        let key = crypto::random_key()?;
        let wrapped = self.opts.keys.wrap(&aad, key.as_ref())?;
        // Under the key lock: no other call can make a second key meanwhile.
        update(&self.db, TENANTS, id, |t: &mut TenantRecord| {
            t.pseudonym_key = Some(wrapped);
            Ok(())
        })?
        .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        Ok(key)
    }

    pub(crate) fn unwrap_ring(&self, rec: &TenantRecord) -> Result<KeyRing, StoreError> {
        let mut keys = BTreeMap::new();
        for (v, w) in &rec.data_keys {
            let k = self.opts.keys.unwrap(w, &data_key_aad(&rec.id, *v))?;
            keys.insert(*v, SealKey::new(&k)?);
        }
        KeyRing::new(keys)
    }

    /// A tenant's data, opened once per process (later calls share it).
    pub fn tenant_store(&self, id: &str) -> Result<Arc<dyn crate::TenantData>, StoreError> {
        Ok(self.open_tenant(id)?)
    }

    pub(crate) fn open_tenant(&self, id: &str) -> Result<Arc<TenantStore>, StoreError> {
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
        let dir = self.tenant_dir(&rec)?;
        let ring = {
            let _k = self.lock_keys()?;
            self.unwrap_ring(&rec)?
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let store = Arc::new(TenantStore::open(id, &dir, ring)?);
        open.insert(id.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// The key of a tenant's audit log.
    pub fn tenant_audit_key(&self, id: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        let rec = self
            .tenant(id)?
            .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        let _k = self.lock_keys()?;
        let k = self
            .opts
            .keys
            .unwrap(&rec.audit_key, &audit_key_aad(&format!("tenant:{id}")))?;
        to_array(&k)
    }

    /// Where a tenant's audit log lives: beside its data, in its region.
    pub fn tenant_audit_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        let rec = self
            .tenant(id)?
            .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        Ok(self.tenant_dir(&rec)?.join("audit.log"))
    }

    /// The deployment audit log's path and key (created on first use).
    pub fn deployment_audit(&self) -> Result<(PathBuf, Zeroizing<[u8; 32]>), StoreError> {
        let path = self.opts.dir.join("audit").join("deployment.log");
        let aad = audit_key_aad("deployment");
        let _k = self.lock_keys()?;
        let wrapped: Option<WrappedKey> = get(&self.db, SETTINGS, "deployment_audit_key")?;
        let key = match wrapped {
            Some(w) => self.opts.keys.unwrap(&w, &aad)?,
            None => {
                let k = crypto::random_key()?;
                put(
                    &self.db,
                    SETTINGS,
                    "deployment_audit_key",
                    &self.opts.keys.wrap(&aad, k.as_ref())?,
                )?;
                Zeroizing::new(k.to_vec())
            }
        };
        Ok((path, to_array(&key)?))
    }

    /// Bytes a tenant's files take (0 when its region is not served here).
    pub fn tenant_size(&self, rec: &TenantRecord) -> u64 {
        self.tenant_dir(rec).map(|d| dir_size(&d)).unwrap_or(0)
    }

    /// Makes a new data key current for the tenant: new data is sealed with
    /// it at once. Call [`ControlStore::finish_data_key_rotation`] (in the
    /// background) to re-seal older data and destroy the old keys.
    pub fn rotate_data_key(&self, id: &str) -> Result<u32, StoreError> {
        let store = self.open_tenant(id)?;
        let _k = self.lock_keys()?;
        let key = crypto::random_key()?;
        let mut version = 0;
        update(&self.db, TENANTS, id, |t: &mut TenantRecord| {
            version = t.data_key_version().saturating_add(1);
            t.data_keys.insert(
                version,
                self.opts
                    .keys
                    .wrap(&data_key_aad(id, version), key.as_ref())?,
            );
            Ok(())
        })?
        .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        store.add_key(version, SealKey::new(key.as_ref())?)?;
        tracing::info!(tenant = %id, version, "Data key rotated");
        Ok(version)
    }

    /// Re-seals the tenant's data under its current key, then destroys the
    /// older keys. Safe to run again after a crash. Returns values re-sealed.
    pub fn finish_data_key_rotation(&self, id: &str) -> Result<u64, StoreError> {
        let store = self.open_tenant(id)?;
        let n = store.reseal_all()?;
        let _k = self.lock_keys()?;
        let current = store.retain_current_key()?;
        update(&self.db, TENANTS, id, |t: &mut TenantRecord| {
            t.data_keys.retain(|v, _| *v >= current);
            Ok(())
        })?;
        tracing::info!(tenant = %id, resealed = n, version = current, "Older data keys destroyed");
        Ok(n)
    }

    /// Tenants whose older data keys still wait for a re-seal (a rotation the
    /// server did not finish before it stopped).
    pub fn tenants_mid_rotation(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .tenants()?
            .into_iter()
            .filter(|t| t.data_keys.len() > 1 && self.region(&t.region).is_some())
            .map(|t| t.id)
            .collect())
    }

    /// Wraps every key under a new master key, then retires the old one.
    /// Returns (new key id, retired key id, tenants rewrapped).
    pub fn rotate_master_key(&self) -> Result<(String, String, u32), StoreError> {
        let _k = self.lock_keys()?;
        self.rotate_master_locked()
    }

    fn rotate_master_locked(&self) -> Result<(String, String, u32), StoreError> {
        let old = self.opts.keys.current_key_id();
        let new = self.opts.keys.rotate()?;
        let keys = &self.opts.keys;
        let tx = self.db.begin_write()?;
        let mut count = 0;
        {
            let mut t = tx.open_table(TENANTS)?;
            let rows: Vec<TenantRecord> = t
                .iter()?
                .map(|r| {
                    r.map_err(StoreError::from)
                        .and_then(|(_, v)| decode("tenants", v.value()))
                })
                .collect::<Result<_, _>>()?;
            for mut rec in rows {
                for (v, w) in rec.data_keys.iter_mut() {
                    let aad = data_key_aad(&rec.id, *v);
                    *w = keys.wrap(&aad, &keys.unwrap(w, &aad)?)?;
                }
                let aad = audit_key_aad(&format!("tenant:{}", rec.id));
                rec.audit_key = keys.wrap(&aad, &keys.unwrap(&rec.audit_key, &aad)?)?;
                if let Some(w) = &rec.pseudonym_key {
                    let aad = pseudonym_key_aad(&rec.id);
                    rec.pseudonym_key = Some(keys.wrap(&aad, &keys.unwrap(w, &aad)?)?);
                }
                t.insert(rec.id.as_str(), encode(&rec)?.as_slice())?;
                count += 1;
            }
            let mut s = tx.open_table(SETTINGS)?;
            let dep: Option<WrappedKey> = match s.get("deployment_audit_key")? {
                Some(v) => Some(decode("settings", v.value())?),
                None => None,
            };
            if let Some(w) = dep {
                let aad = audit_key_aad("deployment");
                let rewrapped = keys.wrap(&aad, &keys.unwrap(&w, &aad)?)?;
                s.insert("deployment_audit_key", encode(&rewrapped)?.as_slice())?;
            }
        }
        tx.commit()?;
        keys.retire(&old)?;
        tracing::info!(new = %new, retired = %old, tenants = count, "Master key rotated");
        Ok((new, old, count))
    }

    /// Erases a tenant: its keys first (its data is unreadable from that
    /// commit on), then the master key they were wrapped under is replaced (so
    /// a copy of the old control file cannot unwrap them either), then its
    /// files. Also drops its tokens, devices and grants. Returns bytes removed.
    pub fn delete_tenant(&self, id: &str) -> Result<u64, StoreError> {
        let rec = self
            .tenant(id)?
            .ok_or_else(|| StoreError::UnknownTenant(id.to_owned()))?;
        let dir = self.tenant_dir(&rec).ok();
        let _k = self.lock_keys()?;
        let tx = self.db.begin_write()?;
        {
            tx.open_table(TENANTS)?.remove(id)?;
            let tomb = DeletedTenant {
                id: id.to_owned(),
                name: rec.name.clone(),
                region: rec.region.clone(),
                deleted_unix_ns: self.now(),
            };
            tx.open_table(DELETED)?
                .insert(id, encode(&tomb)?.as_slice())?;
            crate::access::remove_tenant_rows(&tx, id)?;
        }
        tx.commit()?;
        if let Ok(mut open) = self.open_tenants.lock()
            && let Some(store) = open.remove(id)
        {
            store.destroy();
        }
        tracing::warn!(tenant = %id, "Tenant keys destroyed");
        self.rotate_master_locked()?;
        let mut bytes = 0;
        if let Some(dir) = dir {
            bytes = dir_size(&dir);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&dir)(e)),
            }
        }
        tracing::warn!(tenant = %id, bytes, "Tenant files removed");
        Ok(bytes)
    }

    /// Removes tenant directories no tenant owns: what a deletion that
    /// stopped between destroying keys and removing files leaves behind.
    fn sweep_orphans(&self) -> Result<(), StoreError> {
        for region in &self.opts.regions {
            let root = region.dir.join("tenants");
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if self.tenant(&name)?.is_none() && self.deleted_tenant(&name)?.is_some() {
                    tracing::warn!(tenant = %name, "Removing the files of a deleted tenant");
                    std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
                }
            }
        }
        Ok(())
    }

    /// Removes every served tenant's records and alerts older than its
    /// retention. Returns what was removed, per tenant.
    pub fn enforce_retention(&self) -> Result<Vec<(String, Purged)>, StoreError> {
        let now = self.now();
        let mut out = Vec::new();
        for rec in self.tenants()? {
            if self.region(&rec.region).is_none() {
                continue;
            }
            let cutoff = now.saturating_sub(i64::from(rec.retention_days) * NS_PER_DAY);
            let purged = self.tenant_store(&rec.id)?.purge_before(cutoff)?;
            if purged != Purged::default() {
                tracing::info!(tenant = %rec.id, records = purged.records, alerts = purged.alerts, "Retention removed old data");
            }
            out.push((rec.id, purged));
        }
        Ok(out)
    }
}

fn to_array(k: &[u8]) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if k.len() != 32 {
        return Err(StoreError::Crypto("bad key length"));
    }
    out.copy_from_slice(k);
    Ok(out)
}
