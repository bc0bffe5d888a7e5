//! Published rule sets, per tenant: every version a tenant's rule authors
//! published (or rolled back to), and the version each of its sensors last
//! said it runs.
//!
//! They live in the tenant's own redb file `rules.redb` beside its records (in
//! its region), every value sealed with the tenant's data key and bound (AAD)
//! to tenant, table and key, like the rest of a tenant's data. The key ring is
//! unwrapped for each call (publishing and fetching are rare), so a data key
//! rotation is seen at once; [`RuleSets::reseal`] re-seals under the current
//! key before older keys are destroyed.
//!
//! What a version holds is opaque here (the server stores a compiled bundle);
//! this module knows nothing of rules.

use crate::control::{ControlStore, decode, encode, io};
use crate::crypto::KeyRing;
use crate::reopen::ReopeningDb;
use crate::{StoreError, check_id};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Version number → sealed [`RuleSetVersion`] (no rule text).
const META: TableDefinition<u64, &[u8]> = TableDefinition::new("rule_set_meta");
/// Version number → sealed content.
const CONTENT: TableDefinition<u64, &[u8]> = TableDefinition::new("rule_set_content");
/// Device id → sealed version string the sensor reported.
const RUNNING: TableDefinition<&str, &[u8]> = TableDefinition::new("rule_set_running");

/// Largest content of one version (bytes).
pub const MAX_RULE_SET_BYTES: usize = 16 << 20;
/// Versions kept per tenant; publishing more is refused (bounded file).
pub const MAX_RULE_SET_VERSIONS: u64 = 10_000;
/// Longest version string a sensor may report (bytes).
const MAX_REPORTED: usize = 64;

/// What is known of one published version (never its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSetVersion {
    pub version: u64,
    pub published_unix_ns: i64,
    /// The token name that published it.
    pub author: String,
    /// Rule files it was compiled from.
    pub files: u32,
    /// Rules (and correlations) it holds.
    pub rules: u32,
    pub bytes: u64,
    /// For a rollback: the version whose content it carries (0 otherwise).
    pub copied_from: u64,
}

/// A version and its content.
pub type Published = (RuleSetVersion, Zeroizing<Vec<u8>>);

/// The open `rules.redb` files, one per tenant (a redb file is opened once per process).
#[derive(Default)]
pub struct RuleSets {
    open: Mutex<HashMap<String, Arc<ReopeningDb>>>,
}

impl std::fmt::Debug for RuleSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSets").finish_non_exhaustive()
    }
}

fn aad(tenant: &str, table: &str, key: &str) -> Vec<u8> {
    format!("vigil-rules\0{tenant}\0{table}\0{key}").into_bytes()
}

/// A tenant's rule-set file with the keys to read it.
struct Opened {
    db: Arc<ReopeningDb>,
    ring: KeyRing,
    tenant: String,
}

impl Opened {
    fn seal(&self, table: &str, key: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.ring.seal(&aad(&self.tenant, table, key), plain)
    }
    fn open(
        &self,
        table: &str,
        key: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.ring.open(&aad(&self.tenant, table, key), sealed)
    }
    fn meta(&self, version: u64, sealed: &[u8]) -> Result<RuleSetVersion, StoreError> {
        decode(
            "rule_set_meta",
            &self.open("meta", &version.to_string(), sealed)?,
        )
    }
}

impl RuleSets {
    pub fn new() -> RuleSets {
        RuleSets::default()
    }

    fn opened(&self, control: &ControlStore, tenant: &str) -> Result<Opened, StoreError> {
        check_id(tenant)?;
        let rec = control
            .tenant(tenant)?
            .ok_or_else(|| StoreError::UnknownTenant(tenant.to_owned()))?;
        let dir = control.tenant_dir(&rec)?;
        let ring = {
            let _k = control.lock_keys()?;
            control.unwrap_ring(&rec)?
        };
        let db = {
            let mut open = self
                .open
                .lock()
                .map_err(|_| StoreError::Db("rule set files poisoned".into()))?;
            match open.get(tenant) {
                Some(db) => Arc::clone(db),
                None => {
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    let db = Arc::new(ReopeningDb::create(
                        dir.join("rules.redb"),
                        crate::RULES_CACHE_BYTES,
                    )?);
                    let tx = db.begin_write()?;
                    tx.open_table(META)?;
                    tx.open_table(CONTENT)?;
                    tx.open_table(RUNNING)?;
                    tx.commit()?;
                    open.insert(tenant.to_owned(), Arc::clone(&db));
                    db
                }
            }
        };
        Ok(Opened {
            db,
            ring,
            tenant: tenant.to_owned(),
        })
    }

    /// Stores `content` as the tenant's next version, which becomes current.
    /// `meta.version` and `meta.published_unix_ns` are assigned here.
    pub fn publish(
        &self,
        control: &ControlStore,
        tenant: &str,
        mut meta: RuleSetVersion,
        content: &[u8],
    ) -> Result<RuleSetVersion, StoreError> {
        if content.len() > MAX_RULE_SET_BYTES {
            return Err(StoreError::Invalid(format!(
                "a rule set is at most {MAX_RULE_SET_BYTES} bytes compiled; this one is {}",
                content.len()
            )));
        }
        let o = self.opened(control, tenant)?;
        let tx = o.db.begin_write()?;
        {
            let mut metas = tx.open_table(META)?;
            let last = metas.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            if last >= MAX_RULE_SET_VERSIONS {
                return Err(StoreError::Invalid(format!(
                    "the tenant has {MAX_RULE_SET_VERSIONS} rule set versions, the most kept"
                )));
            }
            meta.version = last + 1;
            meta.published_unix_ns = control.now();
            meta.bytes = content.len() as u64;
            let key = meta.version.to_string();
            metas.insert(
                meta.version,
                o.seal("meta", &key, &encode(&meta)?)?.as_slice(),
            )?;
            tx.open_table(CONTENT)?
                .insert(meta.version, o.seal("content", &key, content)?.as_slice())?;
        }
        tx.commit()?;
        Ok(meta)
    }

    /// A version and its content (`None` if there is no such version).
    pub fn get(
        &self,
        control: &ControlStore,
        tenant: &str,
        version: u64,
    ) -> Result<Option<Published>, StoreError> {
        let o = self.opened(control, tenant)?;
        let tx = o.db.begin_read()?;
        let metas = tx.open_table(META)?;
        let Some(m) = metas.get(version)? else {
            return Ok(None);
        };
        let meta = o.meta(version, m.value())?;
        let content = tx
            .open_table(CONTENT)?
            .get(version)?
            .ok_or_else(|| StoreError::Corrupt {
                table: "rule_set_content".into(),
                reason: format!("version {version} has no content"),
            })?;
        let plain = o.open("content", &version.to_string(), content.value())?;
        Ok(Some((meta, plain)))
    }

    /// The current version (the newest) and its content.
    pub fn current(
        &self,
        control: &ControlStore,
        tenant: &str,
    ) -> Result<Option<Published>, StoreError> {
        let last = {
            let o = self.opened(control, tenant)?;
            let tx = o.db.begin_read()?;
            tx.open_table(META)?.last()?.map(|(k, _)| k.value())
        };
        match last {
            Some(v) => self.get(control, tenant, v),
            None => Ok(None),
        }
    }

    /// Every version, oldest first.
    pub fn versions(
        &self,
        control: &ControlStore,
        tenant: &str,
    ) -> Result<Vec<RuleSetVersion>, StoreError> {
        let o = self.opened(control, tenant)?;
        let tx = o.db.begin_read()?;
        let metas = tx.open_table(META)?;
        metas
            .iter()?
            .map(|r| {
                let (k, v) = r?;
                o.meta(k.value(), v.value())
            })
            .collect()
    }

    /// Remembers the rule set version a device said it runs.
    pub fn set_running(
        &self,
        control: &ControlStore,
        tenant: &str,
        device: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        check_id(device)?;
        let version: String = version.chars().take(MAX_REPORTED).collect();
        let o = self.opened(control, tenant)?;
        let tx = o.db.begin_write()?;
        tx.open_table(RUNNING)?.insert(
            device,
            o.seal("running", device, version.as_bytes())?.as_slice(),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The version each device of the tenant last said it runs.
    pub fn running(
        &self,
        control: &ControlStore,
        tenant: &str,
    ) -> Result<HashMap<String, String>, StoreError> {
        let o = self.opened(control, tenant)?;
        let tx = o.db.begin_read()?;
        let t = tx.open_table(RUNNING)?;
        t.iter()?
            .map(|r| {
                let (k, v) = r?;
                let device = k.value().to_owned();
                let plain = o.open("running", &device, v.value())?;
                Ok((device, String::from_utf8_lossy(&plain).into_owned()))
            })
            .collect()
    }

    /// Re-seals every value under the tenant's current data key (call during a
    /// data key rotation, before older keys are destroyed). Returns values re-sealed.
    pub fn reseal(&self, control: &ControlStore, tenant: &str) -> Result<u64, StoreError> {
        let o = self.opened(control, tenant)?;
        let current = o.ring.current();
        let tx = o.db.begin_write()?;
        let mut n = 0u64;
        {
            for (def, name) in [(META, "meta"), (CONTENT, "content")] {
                let mut t = tx.open_table(def)?;
                let mut redo = Vec::new();
                for r in t.iter()? {
                    let (k, v) = r?;
                    if crate::crypto::version_of(v.value()) != Some(current) {
                        let key = k.value().to_string();
                        redo.push((
                            k.value(),
                            o.seal(name, &key, &o.open(name, &key, v.value())?)?,
                        ));
                    }
                }
                for (k, v) in redo {
                    t.insert(k, v.as_slice())?;
                    n += 1;
                }
            }
            let mut t = tx.open_table(RUNNING)?;
            let mut redo = Vec::new();
            for r in t.iter()? {
                let (k, v) = r?;
                if crate::crypto::version_of(v.value()) != Some(current) {
                    let key = k.value().to_owned();
                    let plain = o.open("running", &key, v.value())?;
                    redo.push((key.clone(), o.seal("running", &key, &plain)?));
                }
            }
            for (k, v) in redo {
                t.insert(k.as_str(), v.as_slice())?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(files: u32) -> RuleSetVersion {
        RuleSetVersion {
            version: 0,
            published_unix_ns: 0,
            author: "author".into(),
            files,
            rules: 1,
            bytes: 0,
            copied_from: 0,
        }
    }

    #[test]
    fn versions_are_numbered_sealed_and_kept_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let control = ControlStore::open_local(dir.path()).unwrap();
        let a = control
            .create_tenant(Some("a"), "A", "local", 90)
            .unwrap()
            .id;
        let b = control
            .create_tenant(Some("b"), "B", "local", 90)
            .unwrap()
            .id;
        let sets = RuleSets::new();
        assert!(sets.current(&control, &a).unwrap().is_none());
        let v1 = sets.publish(&control, &a, meta(1), b"first-set").unwrap();
        let v2 = sets.publish(&control, &a, meta(2), b"second-set").unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v2.bytes, 10);
        let (cur, content) = sets.current(&control, &a).unwrap().unwrap();
        assert_eq!((cur.version, &content[..]), (2, &b"second-set"[..]));
        assert_eq!(
            &sets.get(&control, &a, 1).unwrap().unwrap().1[..],
            b"first-set"
        );
        assert_eq!(sets.versions(&control, &a).unwrap().len(), 2);
        assert!(sets.current(&control, &b).unwrap().is_none());
        // Sealed: the text is not in the file.
        let rec = control.tenant(&a).unwrap().unwrap();
        let file = std::fs::read(control.tenant_dir(&rec).unwrap().join("rules.redb")).unwrap();
        assert!(!file.windows(10).any(|w| w == b"second-set"));

        sets.set_running(&control, &a, "dev1", "v2").unwrap();
        assert_eq!(sets.running(&control, &a).unwrap()["dev1"], "v2");
        assert!(sets.running(&control, &b).unwrap().is_empty());

        // A data key rotation: re-seal, destroy the old key, still readable.
        control.rotate_data_key(&a).unwrap();
        assert_eq!(sets.reseal(&control, &a).unwrap(), 5);
        control.finish_data_key_rotation(&a).unwrap();
        assert_eq!(
            &sets.current(&control, &a).unwrap().unwrap().1[..],
            b"second-set"
        );
        assert_eq!(sets.running(&control, &a).unwrap()["dev1"], "v2");
    }

    #[test]
    fn too_large_a_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let control = ControlStore::open_local(dir.path()).unwrap();
        let a = control
            .create_tenant(Some("a"), "A", "local", 90)
            .unwrap()
            .id;
        let big = vec![b'x'; MAX_RULE_SET_BYTES + 1];
        assert!(matches!(
            RuleSets::new().publish(&control, &a, meta(1), &big),
            Err(StoreError::Invalid(_))
        ));
        RuleSets::new()
            .publish(&control, &a, meta(1), &big[..MAX_RULE_SET_BYTES])
            .unwrap();
    }
}
