use crate::StoreError;
use crate::crypto::{KeyRing, SealKey, version_of};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

const RECORDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("records");
/// (received ns, device, sequence): what retention walks, oldest first. Holds no values.
const RECEIVED: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("received");
const HIGH_WATER: TableDefinition<&str, u64> = TableDefinition::new("high_water");
/// Alert ids start with the received time (20 digits), so they sort by it.
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");

/// Rows one retention or re-seal transaction touches at most.
pub const CHUNK: usize = 2_000;

/// One tenant's data: its own file, sealed with its own keys.
pub struct TenantStore {
    tenant_id: String,
    dir: PathBuf,
    db: Database,
    keys: RwLock<KeyRing>,
    destroyed: AtomicBool,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub accepted: u32,
    /// Records at or below the device's high-water mark: re-sends, skipped.
    pub duplicates: u32,
    /// Highest sequence number now stored for the device.
    pub stored_through: u64,
    /// The high-water mark before this batch: records and alerts above it are new.
    pub previous_high: u64,
}

/// One device's batch for [`TenantStore::commit_batches`].
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a> {
    pub device: &'a str,
    /// When the server received it: what retention counts from.
    pub received_ns: i64,
    /// (sequence, bytes), sequences strictly ascending.
    pub records: &'a [(u64, Vec<u8>)],
    /// (source sequence, alert id, bytes).
    pub alerts: &'a [(u64, String, Vec<u8>)],
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub records: u64,
    pub alerts: u64,
}

fn record_aad(tenant: &str, device: &str, seq: u64) -> Vec<u8> {
    format!("record:{tenant}:{device}:{seq}").into_bytes()
}

fn alert_aad(tenant: &str, id: &str) -> Vec<u8> {
    format!("alert:{tenant}:{id}").into_bytes()
}

/// The first alert id received at or after `ns`.
pub(crate) fn alert_id_floor(ns: i64) -> String {
    format!("{:020}", ns.max(0))
}

impl TenantStore {
    pub(crate) fn open(
        tenant_id: &str,
        dir: &Path,
        keys: KeyRing,
    ) -> Result<TenantStore, StoreError> {
        let db = Database::create(dir.join("data.redb"))?;
        // Create the tables up front so readers never see them missing.
        let tx = db.begin_write()?;
        tx.open_table(RECORDS)?;
        tx.open_table(RECEIVED)?;
        tx.open_table(HIGH_WATER)?;
        tx.open_table(ALERTS)?;
        tx.commit()?;
        Ok(TenantStore {
            tenant_id: tenant_id.to_owned(),
            dir: dir.to_owned(),
            db,
            keys: RwLock::new(keys),
            destroyed: AtomicBool::new(false),
        })
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    fn live(&self) -> Result<std::sync::RwLockReadGuard<'_, KeyRing>, StoreError> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(StoreError::UnknownTenant(self.tenant_id.clone()));
        }
        self.keys
            .read()
            .map_err(|_| StoreError::Db("key ring poisoned".into()))
    }

    /// Forgets the keys and refuses every later call: the tenant was deleted.
    pub(crate) fn destroy(&self) {
        self.destroyed.store(true, Ordering::Release);
        if let Ok(mut k) = self.keys.write() {
            *k = KeyRing::empty();
        }
    }

    pub(crate) fn add_key(&self, version: u32, key: SealKey) -> Result<(), StoreError> {
        self.keys
            .write()
            .map_err(|_| StoreError::Db("key ring poisoned".into()))?
            .add(version, key);
        Ok(())
    }

    pub(crate) fn retain_current_key(&self) -> Result<u32, StoreError> {
        let mut k = self
            .keys
            .write()
            .map_err(|_| StoreError::Db("key ring poisoned".into()))?;
        k.retain_current();
        Ok(k.current())
    }

    /// Bytes the tenant's files take on disk.
    pub fn size_bytes(&self) -> u64 {
        dir_size(&self.dir)
    }

    /// Highest sequence stored for `device` (0 when none).
    pub fn high_water(&self, device: &str) -> Result<u64, StoreError> {
        let _k = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(HIGH_WATER)?;
        Ok(t.get(device)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Stores a device's batch durably in one transaction. `records` are
    /// (sequence, bytes) in ascending order; `alerts` are (source sequence,
    /// alert id, bytes). Anything at or below the device's high-water mark is a
    /// re-send and is skipped, alerts included, so a batch can be delivered
    /// twice without storing anything twice. `received_ns` is what retention
    /// counts from.
    pub fn commit_batch(
        &self,
        device: &str,
        received_ns: i64,
        records: &[(u64, Vec<u8>)],
        alerts: &[(u64, String, Vec<u8>)],
    ) -> Result<BatchOutcome, StoreError> {
        let batch = NewBatch {
            device,
            received_ns,
            records,
            alerts,
        };
        let mut out = self.commit_batches(std::slice::from_ref(&batch))?;
        out.pop()
            .ok_or_else(|| StoreError::Db("no outcome for the batch".into()))
    }

    /// Stores several batches (of one device or many) durably in one
    /// transaction: one fsync for all of them (group commit). Each is
    /// applied as [`TenantStore::commit_batch`] would, in order, so a later
    /// batch of the same device sees the high-water mark an earlier one left.
    /// Returns one outcome per batch, in order; on error nothing is stored.
    pub fn commit_batches(
        &self,
        batches: &[NewBatch<'_>],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(batches.len());
        {
            let mut hw = tx.open_table(HIGH_WATER)?;
            let mut rec = tx.open_table(RECORDS)?;
            let mut idx = tx.open_table(RECEIVED)?;
            let mut al = tx.open_table(ALERTS)?;
            for b in batches {
                let device = b.device;
                let received = u64::try_from(b.received_ns).unwrap_or(0);
                let start = hw.get(device)?.map(|v| v.value()).unwrap_or(0);
                let mut outcome = BatchOutcome {
                    accepted: 0,
                    duplicates: 0,
                    stored_through: 0,
                    previous_high: start,
                };
                let mut high = start;
                for (seq, bytes) in b.records {
                    if *seq <= high {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let sealed = keys.seal(&record_aad(&self.tenant_id, device, *seq), bytes)?;
                    rec.insert((device, *seq), sealed.as_slice())?;
                    idx.insert((received, device, *seq), ())?;
                    high = *seq;
                    outcome.accepted += 1;
                }
                for (seq, id, bytes) in b.alerts {
                    if *seq > start {
                        let sealed = keys.seal(&alert_aad(&self.tenant_id, id), bytes)?;
                        al.insert(id.as_str(), sealed.as_slice())?;
                    }
                }
                hw.insert(device, high)?;
                outcome.stored_through = high;
                outcomes.push(outcome);
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Up to `limit` records of `device` with sequence > `after`, decrypted.
    pub fn records(
        &self,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(RECORDS)?;
        let mut out = Vec::new();
        for item in t
            .range((device, after.saturating_add(1))..=(device, u64::MAX))?
            .take(limit)
        {
            let (k, v) = item?;
            let seq = k.value().1;
            let plain = keys.open(&record_aad(&self.tenant_id, device, seq), v.value())?;
            out.push((seq, plain.to_vec()));
        }
        Ok(out)
    }

    /// Records stored, all devices.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        let _k = self.live()?;
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(RECORDS)?.len()?)
    }

    /// Alerts newest first, starting strictly before `before` (an alert id) when
    /// given, keeping those `keep` accepts, at most `limit`.
    pub fn alerts(
        &self,
        before: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ALERTS)?;
        let iter = match before {
            Some(b) => t.range(..b)?,
            None => t.range::<&str>(..)?,
        };
        let mut out = Vec::new();
        for item in iter.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let id = k.value().to_owned();
            let plain = keys.open(&alert_aad(&self.tenant_id, &id), v.value())?;
            if keep(&plain) {
                out.push((id, plain.to_vec()));
            }
        }
        Ok(out)
    }

    pub fn alert(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ALERTS)?;
        match t.get(id)? {
            None => Ok(None),
            Some(v) => Ok(Some(
                keys.open(&alert_aad(&self.tenant_id, id), v.value())?
                    .to_vec(),
            )),
        }
    }

    /// Removes records and alerts received before `cutoff_ns`, at most
    /// [`CHUNK`] of each per transaction, until none is left.
    pub fn purge_before(&self, cutoff_ns: i64) -> Result<Purged, StoreError> {
        let cutoff = u64::try_from(cutoff_ns).unwrap_or(0);
        let floor = alert_id_floor(cutoff_ns);
        let mut total = Purged::default();
        loop {
            let _k = self.live()?;
            let tx = self.db.begin_write()?;
            let mut n = Purged::default();
            {
                let mut idx = tx.open_table(RECEIVED)?;
                let old: Vec<(u64, String, u64)> = idx
                    .range(..(cutoff, "", 0))?
                    .take(CHUNK)
                    .map(|r| {
                        r.map(|(k, _)| {
                            let (t, d, s) = k.value();
                            (t, d.to_owned(), s)
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let mut rec = tx.open_table(RECORDS)?;
                for (t, d, s) in &old {
                    rec.remove((d.as_str(), *s))?;
                    idx.remove((*t, d.as_str(), *s))?;
                }
                n.records = old.len() as u64;
                let mut al = tx.open_table(ALERTS)?;
                let ids: Vec<String> = al
                    .range::<&str>(..floor.as_str())?
                    .take(CHUNK)
                    .map(|r| r.map(|(k, _)| k.value().to_owned()))
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    al.remove(id.as_str())?;
                }
                n.alerts = ids.len() as u64;
            }
            tx.commit()?;
            total.records += n.records;
            total.alerts += n.alerts;
            if n.records < CHUNK as u64 && n.alerts < CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Re-seals every value not sealed with the current data key, a chunk per
    /// transaction, while readers and writers go on. Returns how many.
    pub fn reseal_all(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut rec_from: Option<(String, u64)> = None;
        loop {
            let keys = self.live()?;
            let current = keys.current();
            let tx = self.db.begin_write()?;
            let done;
            {
                let mut rec = tx.open_table(RECORDS)?;
                let rows: Vec<((String, u64), Vec<u8>)> = {
                    let iter = match &rec_from {
                        Some((d, s)) => rec.range((d.as_str(), *s)..)?,
                        None => rec.range::<(&str, u64)>(..)?,
                    };
                    let mut rows = Vec::new();
                    let mut scanned = 0;
                    for item in iter {
                        let (k, v) = item?;
                        let (d, s) = k.value();
                        rec_from = Some((d.to_owned(), s.saturating_add(1)));
                        scanned += 1;
                        if version_of(v.value()) != Some(current) {
                            rows.push(((d.to_owned(), s), v.value().to_vec()));
                        }
                        if scanned >= CHUNK * 4 || rows.len() >= CHUNK {
                            break;
                        }
                    }
                    done = scanned < CHUNK * 4 && rows.len() < CHUNK;
                    rows
                };
                for ((d, s), sealed) in &rows {
                    let aad = record_aad(&self.tenant_id, d, *s);
                    let plain = keys.open(&aad, sealed)?;
                    rec.insert((d.as_str(), *s), keys.seal(&aad, &plain)?.as_slice())?;
                }
                n += rows.len() as u64;
            }
            tx.commit()?;
            if done {
                break;
            }
        }
        // Alerts are far fewer than records: one pass in chunks by id.
        let mut from = String::new();
        loop {
            let keys = self.live()?;
            let current = keys.current();
            let tx = self.db.begin_write()?;
            let done;
            {
                let mut al = tx.open_table(ALERTS)?;
                let mut rows = Vec::new();
                let mut scanned = 0;
                for item in al.range(from.as_str()..)? {
                    let (k, v) = item?;
                    let id = k.value().to_owned();
                    scanned += 1;
                    if version_of(v.value()) != Some(current) {
                        rows.push((id.clone(), v.value().to_vec()));
                    }
                    from = format!("{id}\0");
                    if scanned >= CHUNK * 4 || rows.len() >= CHUNK {
                        break;
                    }
                }
                done = scanned < CHUNK * 4 && rows.len() < CHUNK;
                for (id, sealed) in &rows {
                    let aad = alert_aad(&self.tenant_id, id);
                    let plain = keys.open(&aad, sealed)?;
                    al.insert(id.as_str(), keys.seal(&aad, &plain)?.as_slice())?;
                }
                n += rows.len() as u64;
            }
            tx.commit()?;
            if done {
                return Ok(n);
            }
        }
    }

    /// Devices and the highest sequence stored for each.
    pub fn high_waters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let _k = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(HIGH_WATER)?;
        t.iter()?
            .map(|r| {
                r.map(|(k, v)| (k.value().to_owned(), v.value()))
                    .map_err(StoreError::from)
            })
            .collect()
    }
}

/// Bytes under `dir` (files only, not following links).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
