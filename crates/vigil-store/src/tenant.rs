use crate::StoreError;
use crate::chunk::{self, ChunkBuilder};
use crate::crypto::short_digest;
use crate::crypto::{KeyRing, SealKey, version_of};
use crate::index::{
    ALERT_TERM_LIST, ALERT_TERMS, AlertQuery, CHUNK_LEVELS, CHUNK_META, ChunkIndex, INDEX_QUEUE,
    LATEST, RecordIndex, Scan, ScanStats, Sighting, alert_terms_aad, decode_materials,
    encode_materials, latest_aad, latest_time, lookup_digests,
};
use crate::postings::{ChunkTerms, Indexed, RecordPostings, add_sighting};
use crate::reopen::ReopeningDb;
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, TableHandle};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Records, in chunks (`chunk.rs`): (device, first sequence) → one sealed
/// chunk of that device's consecutive records. A device's chunks never
/// overlap: each holds only sequences above everything stored before it.
const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("record_chunks");
/// (received ns, device, first sequence) → how many records the chunk holds:
/// what retention walks, oldest first. Holds no values.
const CHUNKS_RECEIVED: TableDefinition<(u64, &str, u64), u32> =
    TableDefinition::new("chunks_received");
const HIGH_WATER: TableDefinition<&str, u64> = TableDefinition::new("high_water");
/// Alert ids start with the received time (20 digits), so they sort by it.
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
/// Alert aggregation: HMAC-SHA-256 of an alert's group (device, rule,
/// process tree; see [`NewAlert::group`]) under a key derived from the
/// tenant's data key → the id of the group's latest alert. Holds no
/// plaintext values: an id is a time and random digits.
const ALERT_GROUPS: TableDefinition<&[u8], &str> = TableDefinition::new("alert_groups");
/// Totals kept with the data: `records` → records stored.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
const RECORD_COUNT: &str = "records";
/// Files written before records were chunked hold one row per record here
/// (sealed under `record_aad`), with a per-record retention index. Open moves
/// them into chunks.
const LEGACY_RECORDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("records");
const LEGACY_RECEIVED: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("received");

/// Rows (chunks, alerts, or records of an older file) one retention, re-seal
/// or upgrade transaction touches at most.
pub const CHUNK: usize = 2_000;
/// Sealed bytes of record chunks one re-seal transaction copies at most.
const RESEAL_BYTES: usize = 8 << 20;

/// The server's view of a record for the index: its bytes → what it is
/// found by (`None`: not indexed).
pub type Derive<'a> = &'a (dyn Fn(&[u8]) -> Option<RecordIndex> + Sync);

/// One tenant's data: its own file, sealed with its own keys.
pub struct TenantStore {
    tenant_id: String,
    dir: PathBuf,
    db: ReopeningDb,
    /// Record postings and sightings (`postings.rs`), written by the indexer.
    postings: RecordPostings,
    /// One indexer at a time (the pending queue, or a rebuild).
    indexing: std::sync::Mutex<()>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub accepted: u32,
    /// Records at or below the device's high-water mark: re-sends, skipped.
    pub duplicates: u32,
    /// Highest sequence number now stored for the device.
    pub stored_through: u64,
    /// The high-water mark before this batch: records and alerts above it are new.
    pub previous_high: u64,
    /// The batch's new alerts as stored, in order: an alert made, or the
    /// alert of its group a repeat was aggregated into (then `merged`).
    pub alerts: Vec<StoredAlert>,
}

/// An alert a batch stored or grew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    pub id: String,
    pub bytes: Vec<u8>,
    pub merged: bool,
}

/// A new alert of a batch.
#[derive(Debug, Clone)]
pub struct NewAlert {
    /// The sequence of the record that raised it: stored only when above
    /// the device's high-water mark, like the record.
    pub seq: u64,
    pub id: String,
    pub bytes: Vec<u8>,
    /// What makes repeats one alert (the server's choice of device, rule and
    /// process tree), or `None` when it is never aggregated. Only a keyed
    /// digest of it is stored.
    pub group: Option<Vec<u8>>,
}

/// How a repeat joins the alert of its group: the server's rule, over
/// encoded alerts (the store does not read them).
pub trait AlertMerge: Sync {
    /// `stored` grown by `new`, or `None` when `new` starts an alert of its
    /// own (the stored one is closed, or was last seen outside the window).
    fn merge(&self, stored: &[u8], new: &[u8]) -> Option<Vec<u8>>;
    /// The values an alert is found by ([`AlertQuery::any_of`]): indexed as
    /// keyed digests, replaced whenever the alert is stored again.
    fn terms(&self, _alert: &[u8]) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// Never aggregates.
#[derive(Debug, Clone, Copy)]
pub struct NoMerge;

impl AlertMerge for NoMerge {
    fn merge(&self, _: &[u8], _: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// What [`TenantStore::update_alert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertUpdate {
    Missing,
    /// The change refused it: nothing written.
    Refused,
    /// The alert as stored now.
    Updated(Vec<u8>),
}

/// One device's batch for [`TenantStore::commit_batches`]; a record's bytes
/// are anything that reads as bytes (`Vec<u8>`, a slice of a larger buffer).
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a, R = Vec<u8>> {
    pub device: &'a str,
    /// When the server received it: what retention counts from.
    pub received_ns: i64,
    /// (sequence, bytes), sequences strictly ascending.
    pub records: &'a [(u64, R)],
    /// What the index keeps of each record, in the same order; empty: the
    /// batch is stored unindexed (found only by device and sequence).
    pub index: &'a [RecordIndex],
    pub alerts: &'a [NewAlert],
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub records: u64,
    pub alerts: u64,
}

/// The alert tables a commit or an update writes.
struct AlertTables<'t> {
    al: Table<'t, &'static str, &'static [u8]>,
    groups: Table<'t, &'static [u8], &'static str>,
    terms: Table<'t, (&'static [u8], &'static str), ()>,
    list: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> AlertTables<'t> {
    fn open(tx: &'t redb::WriteTransaction) -> Result<AlertTables<'t>, StoreError> {
        Ok(AlertTables {
            al: tx.open_table(ALERTS)?,
            groups: tx.open_table(ALERT_GROUPS)?,
            terms: tx.open_table(ALERT_TERMS)?,
            list: tx.open_table(ALERT_TERM_LIST)?,
        })
    }
}

/// What a tenant holds per data level ([`TenantStore::level_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelCounts {
    pub required_records: u64,
    pub required_bytes: u64,
    pub optional_records: u64,
    pub optional_bytes: u64,
}

type LevelTable<'t> = Table<'t, (&'static str, u64), (u32, u64, u64)>;

/// The index tables a commit writes per chunk: its bounds, and its place
/// in the indexer's queue.
struct IndexTables<'t> {
    meta: Table<'t, (&'static str, u64), (i64, i64, u32, u64)>,
    /// `None` for chunks whose records were never counted by level.
    levels: Option<LevelTable<'t>>,
    queue: Table<'t, u64, (&'static str, u64, u64)>,
    /// The next queue number.
    next: u64,
}

/// `counts` key of the next indexer queue number.
const QUEUE_NEXT: &str = "index_queue_next";

impl IndexTables<'_> {
    fn put(
        &mut self,
        device: &str,
        ci: &ChunkIndex,
        first: u64,
        last: u64,
        received: u64,
    ) -> Result<(), StoreError> {
        self.meta.insert((device, first), ci.meta(last))?;
        if let Some(levels) = &mut self.levels {
            levels.insert((device, first), ci.levels)?;
        }
        self.queue.insert(self.next, (device, first, received))?;
        self.next += 1;
        Ok(())
    }
}

/// Where a record of an older file lived (one value per record).
fn record_aad(tenant: &str, device: &str, seq: u64) -> Vec<u8> {
    format!("record:{tenant}:{device}:{seq}").into_bytes()
}

/// Where a chunk lives: its tenant, table and key (device, first sequence).
fn chunk_aad(tenant: &str, device: &str, first: u64) -> Vec<u8> {
    format!("record_chunks:{tenant}:{device}:{first}").into_bytes()
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
        let db = ReopeningDb::create(dir.join("data.redb"), crate::DATA_CACHE_BYTES)?;
        // Create the tables up front so readers never see them missing.
        let tx = db.begin_write()?;
        tx.open_table(CHUNKS)?;
        tx.open_table(CHUNKS_RECEIVED)?;
        tx.open_table(HIGH_WATER)?;
        tx.open_table(ALERTS)?;
        tx.open_table(ALERT_GROUPS)?;
        tx.open_table(COUNTS)?;
        tx.open_table(CHUNK_META)?;
        tx.open_table(INDEX_QUEUE)?;
        tx.open_table(LATEST)?;
        tx.open_table(CHUNK_LEVELS)?;
        tx.open_table(ALERT_TERMS)?;
        tx.open_table(ALERT_TERM_LIST)?;
        {
            // Chunks stored before the index: bounds that say "any time, any
            // kind", so scans keep finding them, and queued for the indexer.
            let chunks = tx.open_table(CHUNKS)?;
            let meta = tx.open_table(CHUNK_META)?;
            if meta.is_empty()? && !chunks.is_empty()? {
                let mut counts = tx.open_table(COUNTS)?;
                let mut ix = IndexTables {
                    meta,
                    levels: None,
                    queue: tx.open_table(INDEX_QUEUE)?,
                    next: counts.get(QUEUE_NEXT)?.map_or(1, |v| v.value()),
                };
                let none = ChunkIndex::default();
                for item in chunks.iter()? {
                    let (k, v) = item?;
                    let (device, first) = k.value();
                    // The last sequence is only known opened; scans do not need it.
                    drop(v);
                    ix.put(device, &none, first, first, 0)?;
                }
                counts.insert(QUEUE_NEXT, ix.next)?;
            }
        }
        let legacy = tx
            .list_tables()?
            .any(|t| t.name() == LEGACY_RECEIVED.name());
        tx.commit()?;
        let store = TenantStore {
            tenant_id: tenant_id.to_owned(),
            dir: dir.to_owned(),
            db,
            postings: RecordPostings::open(dir)?,
            indexing: std::sync::Mutex::new(()),
            keys: RwLock::new(keys),
            destroyed: AtomicBool::new(false),
        };
        if legacy {
            store.upgrade_legacy()?;
        }
        Ok(store)
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
        let alerts: Vec<NewAlert> = alerts
            .iter()
            .map(|(seq, id, bytes)| NewAlert {
                seq: *seq,
                id: id.clone(),
                bytes: bytes.clone(),
                group: None,
            })
            .collect();
        let batch = NewBatch {
            device,
            received_ns,
            records,
            index: &[],
            alerts: &alerts,
        };
        let mut out = self.commit_batches(std::slice::from_ref(&batch), &NoMerge)?;
        out.pop()
            .ok_or_else(|| StoreError::Db("no outcome for the batch".into()))
    }

    /// Stores several batches (of one device or many) durably in one
    /// transaction: one fsync for all of them (group commit). Each is
    /// applied as [`TenantStore::commit_batch`] would, in order, so a later
    /// batch of the same device sees the high-water mark an earlier one left.
    /// A batch's new records are stored in chunks (about 32 KiB each), each
    /// sealed as one value. A new alert with a group whose latest alert
    /// `merge` grows is stored as that alert, grown, and the group index
    /// names the alert it ends in — in the same transaction, so only alerts
    /// above the high-water mark ever count. Returns one outcome per batch,
    /// in order; on error nothing is stored.
    pub fn commit_batches<R: AsRef<[u8]>>(
        &self,
        batches: &[NewBatch<'_, R>],
        merge: &dyn AlertMerge,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(batches.len());
        {
            let mut hw = tx.open_table(HIGH_WATER)?;
            let mut chunks = tx.open_table(CHUNKS)?;
            let mut idx = tx.open_table(CHUNKS_RECEIVED)?;
            let mut at = AlertTables::open(&tx)?;
            let mut counts = tx.open_table(COUNTS)?;
            let mut ix = IndexTables {
                meta: tx.open_table(CHUNK_META)?,
                levels: Some(tx.open_table(CHUNK_LEVELS)?),
                queue: tx.open_table(INDEX_QUEUE)?,
                next: counts.get(QUEUE_NEXT)?.map_or(1, |v| v.value()),
            };
            let mut latest_t = tx.open_table(LATEST)?;
            let mut added = 0u64;
            let mut levels = (0u64, 0u64, 0u64);
            for b in batches {
                let device = b.device;
                let received = u64::try_from(b.received_ns).unwrap_or(0);
                let start = hw.get(device)?.map(|v| v.value()).unwrap_or(0);
                let mut outcome = BatchOutcome {
                    accepted: 0,
                    duplicates: 0,
                    stored_through: 0,
                    previous_high: start,
                    alerts: Vec::new(),
                };
                let mut high = start;
                let mut chunk: Option<(ChunkBuilder, ChunkIndex)> = None;
                // (kind) → (time, position in the batch) of the latest record to keep.
                let mut latest: Vec<(u8, i64, usize)> = Vec::new();
                for (i, (seq, bytes)) in b.records.iter().enumerate() {
                    let bytes = bytes.as_ref();
                    if *seq <= high {
                        outcome.duplicates += 1;
                        continue;
                    }
                    if let Some((full, fi)) = chunk.take_if(|(c, _)| !c.fits(bytes.len())) {
                        ix.put(device, &fi, full.first(), full.last(), received)?;
                        self.put_chunk(&keys, &mut chunks, &mut idx, device, received, full)?;
                    }
                    let (c, ci) = chunk
                        .get_or_insert_with(|| (ChunkBuilder::new(*seq), ChunkIndex::default()));
                    c.push(*seq, bytes)?;
                    let optional = b.index.get(i).is_some_and(|r| r.optional);
                    ci.count(bytes.len(), optional);
                    levels.2 += bytes.len() as u64;
                    if optional {
                        levels.0 += 1;
                        levels.1 += bytes.len() as u64;
                    }
                    if let Some(r) = b.index.get(i) {
                        ci.add(r);
                        if r.latest {
                            match latest.iter_mut().find(|(k, _, _)| *k == r.kind) {
                                Some(l) if l.1 <= r.time_ns => *l = (r.kind, r.time_ns, i),
                                Some(_) => {}
                                None => latest.push((r.kind, r.time_ns, i)),
                            }
                        }
                    }
                    high = *seq;
                    outcome.accepted += 1;
                }
                if let Some((last, li)) = chunk {
                    ix.put(device, &li, last.first(), last.last(), received)?;
                    self.put_chunk(&keys, &mut chunks, &mut idx, device, received, last)?;
                }
                for (kind, time, i) in latest {
                    let stored = latest_t
                        .get((device, kind))?
                        .and_then(|v| latest_time(v.value()));
                    if stored.is_some_and(|t| t > time) {
                        continue;
                    }
                    let Some((_, bytes)) = b.records.get(i) else {
                        continue;
                    };
                    let mut v = time.to_le_bytes().to_vec();
                    v.extend(
                        keys.seal(&latest_aad(&self.tenant_id, device, kind), bytes.as_ref())?,
                    );
                    latest_t.insert((device, kind), v.as_slice())?;
                }
                for a in b.alerts {
                    if a.seq <= start {
                        continue;
                    }
                    let stored = self.store_alert(&keys, &mut at, a, merge)?;
                    outcome.alerts.push(stored);
                }
                hw.insert(device, high)?;
                outcome.stored_through = high;
                added += u64::from(outcome.accepted);
                outcomes.push(outcome);
            }
            if added > 0 {
                add_count(&mut counts, added, true)?;
                add_levels(&mut counts, levels, true)?;
            }
            counts.insert(QUEUE_NEXT, ix.next)?;
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Stores a new alert, or grows the latest alert of its group with it.
    fn store_alert(
        &self,
        keys: &KeyRing,
        at: &mut AlertTables<'_>,
        a: &NewAlert,
        merge: &dyn AlertMerge,
    ) -> Result<StoredAlert, StoreError> {
        let AlertTables { al, groups, .. } = at;
        let digests = a
            .group
            .as_deref()
            .map(|g| keys.digests(g))
            .unwrap_or_default();
        let mut latest = None;
        for d in &digests {
            if let Some(id) = groups.get(d.as_slice())? {
                latest = Some(id.value().to_owned());
                break;
            }
        }
        if let Some(id) = latest {
            let aad = alert_aad(&self.tenant_id, &id);
            let stored = match al.get(id.as_str())? {
                Some(v) => Some(keys.open(&aad, v.value())?),
                None => None,
            };
            if let Some(grown) = stored.and_then(|s| merge.merge(&s, &a.bytes)) {
                al.insert(id.as_str(), keys.seal(&aad, &grown)?.as_slice())?;
                // Found under an older key's digest: indexed under the current one from now on.
                if let Some(d) = digests.first() {
                    groups.insert(d.as_slice(), id.as_str())?;
                }
                self.index_alert(keys, at, &id, &merge.terms(&grown))?;
                return Ok(StoredAlert {
                    id,
                    bytes: grown,
                    merged: true,
                });
            }
        }
        let sealed = keys.seal(&alert_aad(&self.tenant_id, &a.id), &a.bytes)?;
        al.insert(a.id.as_str(), sealed.as_slice())?;
        if let Some(d) = digests.first() {
            groups.insert(d.as_slice(), a.id.as_str())?;
        }
        self.index_alert(keys, at, &a.id, &merge.terms(&a.bytes))?;
        Ok(StoredAlert {
            id: a.id.clone(),
            bytes: a.bytes.clone(),
            merged: false,
        })
    }

    /// Reads, changes and re-seals alert `id` in one write transaction, so
    /// concurrent changes never lose one another. `change` gets the alert and
    /// returns it changed, or `None` to refuse (nothing is written).
    pub fn update_alert(
        &self,
        id: &str,
        change: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
        index: &dyn AlertMerge,
    ) -> Result<AlertUpdate, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_write()?;
        let aad = alert_aad(&self.tenant_id, id);
        let out = {
            let mut at = AlertTables::open(&tx)?;
            let plain = match at.al.get(id)? {
                None => return Ok(AlertUpdate::Missing),
                Some(v) => keys.open(&aad, v.value())?,
            };
            match change(&plain) {
                None => return Ok(AlertUpdate::Refused),
                Some(changed) => {
                    at.al.insert(id, keys.seal(&aad, &changed)?.as_slice())?;
                    self.index_alert(&keys, &mut at, id, &index.terms(&changed))?;
                    changed
                }
            }
        };
        tx.commit()?;
        Ok(AlertUpdate::Updated(out))
    }

    /// Replaces alert `id`'s postings with `materials`' (under the current key).
    fn index_alert(
        &self,
        keys: &KeyRing,
        at: &mut AlertTables<'_>,
        id: &str,
        materials: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        self.unindex_alert(keys, &mut at.terms, &mut at.list, id)?;
        if materials.is_empty() {
            return Ok(());
        }
        if let Some(mac) = keys.lookup_macs().first() {
            for m in materials {
                at.terms.insert((short_digest(mac, m).as_slice(), id), ())?;
            }
        }
        let sealed = keys.seal(
            &alert_terms_aad(&self.tenant_id, id),
            &encode_materials(materials),
        )?;
        at.list.insert(id, sealed.as_slice())?;
        Ok(())
    }

    /// Removes alert `id`'s postings, under every key the tenant has.
    fn unindex_alert(
        &self,
        keys: &KeyRing,
        terms: &mut Table<'_, (&'static [u8], &'static str), ()>,
        list: &mut Table<'_, &'static str, &'static [u8]>,
        id: &str,
    ) -> Result<(), StoreError> {
        let Some(old) = list.remove(id)? else {
            return Ok(());
        };
        let plain = keys.open(&alert_terms_aad(&self.tenant_id, id), old.value())?;
        drop(old);
        for m in decode_materials(&plain) {
            for d in lookup_digests(keys, &m) {
                terms.remove((d.as_slice(), id))?;
            }
        }
        Ok(())
    }

    /// Seals a chunk in place and stores it with its retention entry.
    fn put_chunk(
        &self,
        keys: &KeyRing,
        chunks: &mut Table<'_, (&'static str, u64), &'static [u8]>,
        idx: &mut Table<'_, (u64, &'static str, u64), u32>,
        device: &str,
        received: u64,
        chunk: ChunkBuilder,
    ) -> Result<(), StoreError> {
        let (first, count) = (chunk.first(), chunk.count());
        let sealed = keys.seal_prefixed(
            &chunk_aad(&self.tenant_id, device, first),
            chunk.into_prefixed(),
        )?;
        chunks.insert((device, first), sealed.as_slice())?;
        idx.insert((received, device, first), count)?;
        Ok(())
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
        let t = tx.open_table(CHUNKS)?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let from = after.saturating_add(1);
        // The chunk that may hold `from`: the last one that starts at or before it.
        let start = match t.range((device, 0)..=(device, from))?.next_back() {
            Some(item) => item?.0.value().1,
            None => from,
        };
        for item in t.range((device, start)..=(device, u64::MAX))? {
            let (k, v) = item?;
            let first = k.value().1;
            let plain = keys.open(&chunk_aad(&self.tenant_id, device, first), v.value())?;
            for (seq, bytes) in chunk::records(&plain)? {
                if seq > after {
                    out.push((seq, bytes.to_vec()));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records stored, all devices.
    /// What the tenant holds per data level: (records, bytes) of required
    /// and of optional data. Bytes count records stored since the store kept
    /// them (older files count their records, not their bytes).
    pub fn level_counts(&self) -> Result<LevelCounts, StoreError> {
        let _k = self.live()?;
        let tx = self.db.begin_read()?;
        let counts = tx.open_table(COUNTS)?;
        let get =
            |k: &str| -> Result<u64, StoreError> { Ok(counts.get(k)?.map_or(0, |v| v.value())) };
        let records = get(RECORD_COUNT)?;
        let [optional_records, optional_bytes, bytes] = [
            get(LEVEL_KEYS[0])?,
            get(LEVEL_KEYS[1])?,
            get(LEVEL_KEYS[2])?,
        ];
        Ok(LevelCounts {
            required_records: records.saturating_sub(optional_records),
            required_bytes: bytes.saturating_sub(optional_bytes),
            optional_records,
            optional_bytes,
        })
    }

    pub fn record_count(&self) -> Result<u64, StoreError> {
        let _k = self.live()?;
        let tx = self.db.begin_read()?;
        Ok(tx
            .open_table(COUNTS)?
            .get(RECORD_COUNT)?
            .map_or(0, |v| v.value()))
    }

    /// Visits the records of every chunk `q` chooses, device by device,
    /// oldest first within a device, until `visit` returns false. Chunks are
    /// chosen by their index entries (`index.rs`): time bounds, kinds, and
    /// with `q.term` the chunks holding a record indexed under it. One read
    /// transaction: the visitor sees one state of the store.
    pub fn scan(
        &self,
        q: &Scan<'_>,
        visit: &mut dyn FnMut(&str, u64, &[u8]) -> bool,
    ) -> Result<ScanStats, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(CHUNK_META)?;
        let chunks = tx.open_table(CHUNKS)?;
        let mut stats = ScanStats::default();
        let mut open =
            |device: &str, first: u64, stats: &mut ScanStats| -> Result<bool, StoreError> {
                let Some(v) = chunks.get((device, first))? else {
                    return Ok(true);
                };
                stats.chunks += 1;
                let plain = keys.open(&chunk_aad(&self.tenant_id, device, first), v.value())?;
                for (seq, bytes) in chunk::records(&plain)? {
                    stats.records += 1;
                    if !visit(device, seq, bytes) {
                        stats.stopped = true;
                        return Ok(false);
                    }
                }
                Ok(true)
            };
        match q.term {
            Some(material) => {
                // Indexed chunks, and the ones the indexer has not reached.
                let mut found = self.postings.chunks(&keys, material, q.device)?;
                for (_, dev, first, _) in self.index_tail(&tx)? {
                    if q.device.is_none_or(|d| d == dev) {
                        found.insert((dev, first));
                    }
                }
                for (dev, first) in found {
                    let wanted = meta
                        .get((dev.as_str(), first))?
                        .is_none_or(|m| q.wants(m.value()));
                    if wanted && !open(&dev, first, &mut stats)? {
                        break;
                    }
                }
            }
            None => {
                let iter = match q.device {
                    Some(d) => meta.range((d, 0)..=(d, u64::MAX))?,
                    None => meta.range::<(&str, u64)>(..)?,
                };
                for item in iter {
                    let (k, v) = item?;
                    if !q.wants(v.value()) {
                        continue;
                    }
                    let (dev, first) = k.value();
                    if !open(dev, first, &mut stats)? {
                        break;
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Which devices had records counted under `material` (see
    /// [`RecordIndex::sightings`]), with first and last event time and how
    /// many: from the postings, and from the chunks the indexer has not
    /// reached yet (`derive` reads their records).
    pub fn sightings(
        &self,
        material: &[u8],
        derive: Derive<'_>,
    ) -> Result<Vec<Sighting>, StoreError> {
        let keys = self.live()?;
        let mut by_device = self.postings.sightings(&keys, material)?;
        let tx = self.db.begin_read()?;
        let chunks = tx.open_table(CHUNKS)?;
        for (_, dev, first, _) in self.index_tail(&tx)? {
            let Some(v) = chunks.get((dev.as_str(), first))? else {
                continue;
            };
            let plain = keys.open(&chunk_aad(&self.tenant_id, &dev, first), v.value())?;
            for (_, bytes) in chunk::records(&plain)? {
                if let Some(r) = derive(bytes)
                    && r.sightings.iter().any(|s| s == material)
                {
                    add_sighting(&mut by_device, &dev, (r.time_ns, r.time_ns, 1));
                }
            }
        }
        Ok(by_device.into_values().collect())
    }

    /// Queue entries the indexer has not reached: (queue number, device,
    /// first sequence, received).
    fn index_tail(
        &self,
        tx: &redb::ReadTransaction,
    ) -> Result<Vec<(u64, String, u64, u64)>, StoreError> {
        self.index_tail_up_to(tx, usize::MAX)
    }

    fn index_tail_up_to(
        &self,
        tx: &redb::ReadTransaction,
        max: usize,
    ) -> Result<Vec<(u64, String, u64, u64)>, StoreError> {
        let done = self.postings.indexed()?;
        let q = tx.open_table(INDEX_QUEUE)?;
        let mut out = Vec::new();
        for item in q.range(done.saturating_add(1)..)?.take(max) {
            let (k, v) = item?;
            let (dev, first, received) = v.value();
            out.push((k.value(), dev.to_owned(), first, received));
        }
        Ok(out)
    }

    /// Chunks the indexer has not reached.
    pub fn index_backlog(&self) -> Result<u64, StoreError> {
        let done = self.postings.indexed()?;
        let tx = self.db.begin_read()?;
        let q = tx.open_table(INDEX_QUEUE)?;
        let last = q.last()?.map_or(0, |(k, _)| k.value());
        Ok(last.saturating_sub(done))
    }

    /// Indexes up to `max` chunks the indexer has not reached, oldest first,
    /// reading their records through `derive` (the server's view of what a
    /// record is found by); returns how many it indexed. The postings are
    /// written to `index.redb` in one transaction, apart from ingest's.
    pub fn index_pending(&self, derive: Derive<'_>, max: usize) -> Result<usize, StoreError> {
        let _one = self
            .indexing
            .lock()
            .map_err(|_| StoreError::Db("indexer poisoned".into()))?;
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let tail = self.index_tail_up_to(&tx, max)?;
        let Some(&(through, ..)) = tail.last() else {
            return Ok(0);
        };
        let chunks = tx.open_table(CHUNKS)?;
        let mut batch = Vec::new();
        for (_, dev, first, received) in tail {
            // Gone already (retention): nothing to index.
            let Some(v) = chunks.get((dev.as_str(), first))? else {
                continue;
            };
            let terms = self.chunk_terms(&keys, &dev, first, v.value(), derive)?;
            batch.push(Indexed {
                device: dev,
                first,
                received,
                terms,
            });
        }
        let n = batch.len();
        self.postings.apply(&keys, &batch, Some(through))?;
        Ok(n)
    }

    /// What the index keeps of a sealed chunk's records (`derive` reads each).
    fn chunk_terms(
        &self,
        keys: &KeyRing,
        device: &str,
        first: u64,
        sealed: &[u8],
        derive: Derive<'_>,
    ) -> Result<ChunkTerms, StoreError> {
        let plain = keys.open(&chunk_aad(&self.tenant_id, device, first), sealed)?;
        let mut terms = ChunkTerms::default();
        for (_, bytes) in chunk::records(&plain)? {
            if let Some(r) = derive(bytes) {
                terms.add(&r);
            }
        }
        Ok(terms)
    }

    /// Rebuilds the record postings from every stored chunk under the
    /// current data key (a data key rotation calls it before the old key is
    /// destroyed): written into fresh generations while the old ones keep
    /// answering, which are then dropped.
    pub fn rebuild_index(&self, derive: Derive<'_>) -> Result<u64, StoreError> {
        let _one = self
            .indexing
            .lock()
            .map_err(|_| StoreError::Db("indexer poisoned".into()))?;
        let start = self.postings.begin_rebuild()?;
        let keys = self.live()?;
        // One snapshot: every chunk in it, and the queue up to its end.
        let tx = self.db.begin_read()?;
        let through = tx
            .open_table(INDEX_QUEUE)?
            .last()?
            .map_or(0, |(k, _)| k.value());
        let received: std::collections::HashMap<(String, u64), u64> = tx
            .open_table(CHUNKS_RECEIVED)?
            .iter()?
            .map(|r| {
                r.map(|(k, _)| {
                    let (t, d, s) = k.value();
                    ((d.to_owned(), s), t)
                })
            })
            .collect::<Result<_, _>>()?;
        let chunks = tx.open_table(CHUNKS)?;
        let mut n = 0u64;
        let mut batch = Vec::new();
        for item in chunks.iter()? {
            let (k, v) = item?;
            let (dev, first) = k.value();
            let terms = self.chunk_terms(&keys, dev, first, v.value(), derive)?;
            batch.push(Indexed {
                device: dev.to_owned(),
                first,
                received: received.get(&(dev.to_owned(), first)).copied().unwrap_or(0),
                terms,
            });
            n += 1;
            if batch.len() >= 256 {
                self.postings.apply(&keys, &batch, None)?;
                batch.clear();
            }
        }
        self.postings.apply(&keys, &batch, None)?;
        self.postings.finish_rebuild(start, through)?;
        Ok(n)
    }

    /// Drops queue entries the indexer is done with.
    fn trim_index_queue(&self) -> Result<(), StoreError> {
        let done = self.postings.indexed()?;
        let tx = self.db.begin_write()?;
        tx.open_table(INDEX_QUEUE)?
            .retain_in(..=done, |_, _| false)?;
        tx.commit()?;
        Ok(())
    }

    /// The latest record of `kind` a device sent (by event time), opened.
    pub fn latest(&self, device: &str, kind: u8) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LATEST)?;
        let Some(v) = t.get((device, kind))? else {
            return Ok(None);
        };
        let v = v.value();
        let corrupt = || StoreError::Corrupt {
            table: "latest".into(),
            reason: "too short".into(),
        };
        let time = latest_time(v).ok_or_else(corrupt)?;
        let sealed = v.get(8..).ok_or_else(corrupt)?;
        let plain = keys.open(&latest_aad(&self.tenant_id, device, kind), sealed)?;
        Ok(Some((time, plain.to_vec())))
    }

    /// Alerts newest first, as `q` chooses them (see [`AlertQuery`]),
    /// keeping those `keep` accepts, at most `limit`. With `q.all_of`, only
    /// the alerts its postings name are opened.
    pub fn alerts(
        &self,
        q: &AlertQuery<'_>,
        limit: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ALERTS)?;
        let floor = q.received_since_ns.map(alert_id_floor);
        let mut out = Vec::new();
        let mut visit = |id: &str,
                         sealed: &[u8],
                         out: &mut Vec<(String, Vec<u8>)>|
         -> Result<bool, StoreError> {
            if floor.as_deref().is_some_and(|f| id < f) || out.len() >= limit {
                return Ok(false);
            }
            let plain = keys.open(&alert_aad(&self.tenant_id, id), sealed)?;
            if keep(&plain) {
                out.push((id.to_owned(), plain.to_vec()));
            }
            Ok(true)
        };
        let Some((drive, checks)) = q.all_of.split_first() else {
            let iter = match q.before {
                Some(b) => t.range(..b)?,
                None => t.range::<&str>(..)?,
            };
            for item in iter.rev() {
                let (k, v) = item?;
                if !visit(k.value(), v.value(), &mut out)? {
                    break;
                }
            }
            return Ok(out);
        };
        // Newest first across the postings of the first group's materials
        // (under every key): a merge; each candidate then needs a posting in
        // every other group before it is opened.
        let terms = tx.open_table(ALERT_TERMS)?;
        let digests: Vec<[u8; 16]> = drive
            .iter()
            .flat_map(|m| lookup_digests(&keys, m))
            .collect();
        let checks: Vec<Vec<[u8; 16]>> = checks
            .iter()
            .map(|g| g.iter().flat_map(|m| lookup_digests(&keys, m)).collect())
            .collect();
        // Ids sort below "~" (they are digits, a dash and hex).
        let top = q.before.unwrap_or("~");
        let mut lists = Vec::with_capacity(digests.len());
        for d in &digests {
            lists.push(
                terms
                    .range((d.as_slice(), "")..(d.as_slice(), top))?
                    .rev()
                    .peekable(),
            );
        }
        loop {
            let mut best: Option<String> = None;
            for l in lists.iter_mut() {
                if let Some(Ok((k, _))) = l.peek() {
                    let id = k.value().1;
                    if best.as_deref().is_none_or(|b| id > b) {
                        best = Some(id.to_owned());
                    }
                } else if let Some(Err(_)) = l.peek()
                    && let Some(Err(e)) = l.next()
                {
                    return Err(e.into());
                }
            }
            let Some(id) = best else { break };
            for l in lists.iter_mut() {
                while let Some(Ok((k, _))) = l.peek() {
                    if k.value().1 == id.as_str() {
                        l.next();
                    } else {
                        break;
                    }
                }
            }
            let mut all = true;
            for g in &checks {
                let mut any = false;
                for d in g {
                    if terms.get((d.as_slice(), id.as_str()))?.is_some() {
                        any = true;
                        break;
                    }
                }
                if !any {
                    all = false;
                    break;
                }
            }
            if !all {
                if floor.as_deref().is_some_and(|f| id.as_str() < f) {
                    break;
                }
                continue;
            }
            let Some(v) = t.get(id.as_str())? else {
                continue;
            };
            if !visit(&id, v.value(), &mut out)? {
                break;
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
    /// [`CHUNK`] record chunks and [`CHUNK`] alerts per transaction, until
    /// none is left. Counts records, not chunks.
    pub fn purge_before(&self, cutoff_ns: i64) -> Result<Purged, StoreError> {
        let cutoff = u64::try_from(cutoff_ns).unwrap_or(0);
        let floor = alert_id_floor(cutoff_ns);
        let mut total = Purged::default();
        loop {
            let _k = self.live()?;
            let tx = self.db.begin_write()?;
            let mut n = Purged::default();
            let chunk_rows;
            {
                let mut idx = tx.open_table(CHUNKS_RECEIVED)?;
                let old: Vec<(u64, String, u64, u32)> = idx
                    .range(..(cutoff, "", 0))?
                    .take(CHUNK)
                    .map(|r| {
                        r.map(|(k, v)| {
                            let (t, d, s) = k.value();
                            (t, d.to_owned(), s, v.value())
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let mut chunks = tx.open_table(CHUNKS)?;
                let mut meta = tx.open_table(CHUNK_META)?;
                let mut chunk_levels = tx.open_table(CHUNK_LEVELS)?;
                let mut gone = (0u64, 0u64, 0u64);
                for (t, d, s, count) in &old {
                    chunks.remove((d.as_str(), *s))?;
                    idx.remove((*t, d.as_str(), *s))?;
                    meta.remove((d.as_str(), *s))?;
                    if let Some(l) = chunk_levels.remove((d.as_str(), *s))? {
                        let (r, ob, b) = l.value();
                        gone = (gone.0 + u64::from(r), gone.1 + ob, gone.2 + b);
                    }
                    n.records += u64::from(*count);
                }
                chunk_rows = old.len();
                if n.records > 0 {
                    let mut counts = tx.open_table(COUNTS)?;
                    add_count(&mut counts, n.records, false)?;
                    add_levels(&mut counts, gone, false)?;
                }
                let mut al = tx.open_table(ALERTS)?;
                let ids: Vec<String> = al
                    .range::<&str>(..floor.as_str())?
                    .take(CHUNK)
                    .map(|r| r.map(|(k, _)| k.value().to_owned()))
                    .collect::<Result<_, _>>()?;
                let mut aterms = tx.open_table(ALERT_TERMS)?;
                let mut alist = tx.open_table(ALERT_TERM_LIST)?;
                for id in &ids {
                    al.remove(id.as_str())?;
                    self.unindex_alert(&_k, &mut aterms, &mut alist, id)?;
                }
                n.alerts = ids.len() as u64;
                // Group entries naming alerts gone (the index is as small as the alerts).
                let mut groups = tx.open_table(ALERT_GROUPS)?;
                let stale: Vec<Vec<u8>> = groups
                    .iter()?
                    .filter_map(|r| match r {
                        Ok((k, v)) if v.value() < floor.as_str() => Some(Ok(k.value().to_vec())),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .take(CHUNK)
                    .collect::<Result<_, _>>()?;
                for k in &stale {
                    groups.remove(k.as_slice())?;
                }
            }
            tx.commit()?;
            total.records += n.records;
            total.alerts += n.alerts;
            if chunk_rows < CHUNK && n.alerts < CHUNK as u64 {
                // Postings of chunks gone: whole generations, once all theirs are.
                self.postings.drop_before(cutoff)?;
                self.trim_index_queue()?;
                return Ok(total);
            }
        }
    }

    /// Re-seals every value not sealed with the current data key, a chunk per
    /// transaction, while readers and writers go on. Returns how many records
    /// and alerts it re-sealed.
    pub fn reseal_all(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut rec_from: Option<(String, u64)> = None;
        loop {
            let keys = self.live()?;
            let current = keys.current();
            let tx = self.db.begin_write()?;
            let done;
            {
                let mut rec = tx.open_table(CHUNKS)?;
                let rows: Vec<((String, u64), Vec<u8>)> = {
                    let iter = match &rec_from {
                        Some((d, s)) => rec.range((d.as_str(), *s)..)?,
                        None => rec.range::<(&str, u64)>(..)?,
                    };
                    let mut rows = Vec::new();
                    let (mut scanned, mut bytes) = (0, 0);
                    let mut exhausted = true;
                    for item in iter {
                        let (k, v) = item?;
                        let (d, s) = k.value();
                        rec_from = Some((d.to_owned(), s.saturating_add(1)));
                        scanned += 1;
                        if version_of(v.value()) != Some(current) {
                            bytes += v.value().len();
                            rows.push(((d.to_owned(), s), v.value().to_vec()));
                        }
                        if scanned >= CHUNK * 4 || rows.len() >= CHUNK || bytes >= RESEAL_BYTES {
                            exhausted = false;
                            break;
                        }
                    }
                    done = exhausted;
                    rows
                };
                for ((d, s), sealed) in &rows {
                    let aad = chunk_aad(&self.tenant_id, d, *s);
                    let plain = keys.open(&aad, sealed)?;
                    n += chunk::records(&plain)?.len() as u64;
                    rec.insert((d.as_str(), *s), keys.seal(&aad, &plain)?.as_slice())?;
                }
            }
            tx.commit()?;
            if done {
                break;
            }
        }
        self.rekey_index()?;
        // Latest records: one per device and kind, a single pass.
        {
            let keys = self.live()?;
            let current = keys.current();
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(LATEST)?;
                let rows: Vec<((String, u8), Vec<u8>)> = t
                    .iter()?
                    .filter_map(|r| match r {
                        Ok((k, v))
                            if version_of(v.value().get(8..).unwrap_or(&[])) != Some(current) =>
                        {
                            let (d, kind) = k.value();
                            Some(Ok(((d.to_owned(), kind), v.value().to_vec())))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<_, _>>()?;
                for ((d, kind), v) in &rows {
                    let aad = latest_aad(&self.tenant_id, d, *kind);
                    let (time, sealed) = v.split_at_checked(8).ok_or(StoreError::Corrupt {
                        table: "latest".into(),
                        reason: "too short".into(),
                    })?;
                    let plain = keys.open(&aad, sealed)?;
                    let mut nv = time.to_vec();
                    nv.extend(keys.seal(&aad, &plain)?);
                    t.insert((d.as_str(), *kind), nv.as_slice())?;
                }
            }
            tx.commit()?;
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

    /// Indexes the alerts stored before alerts had postings (`index`'s
    /// terms), [`CHUNK`] per transaction; returns how many. Alerts with
    /// postings are left as they are.
    pub fn index_unindexed_alerts(&self, index: &dyn AlertMerge) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let mut from = String::new();
        loop {
            let keys = self.live()?;
            let tx = self.db.begin_write()?;
            let done;
            {
                let mut at = AlertTables::open(&tx)?;
                let mut todo = Vec::new();
                let mut scanned = 0;
                for item in at.al.range(from.as_str()..)? {
                    let (k, v) = item?;
                    let id = k.value().to_owned();
                    scanned += 1;
                    from = format!("{id}\0");
                    if at.list.get(id.as_str())?.is_none() {
                        todo.push((id, v.value().to_vec()));
                    }
                    if scanned >= CHUNK * 4 || todo.len() >= CHUNK {
                        break;
                    }
                }
                done = scanned < CHUNK * 4 && todo.len() < CHUNK;
                for (id, sealed) in &todo {
                    let plain = keys.open(&alert_aad(&self.tenant_id, id), sealed)?;
                    self.index_alert(&keys, &mut at, id, &index.terms(&plain))?;
                }
                n += todo.len() as u64;
            }
            tx.commit()?;
            if done {
                return Ok(n);
            }
        }
    }

    /// Re-keys the alert postings after a data key rotation: every alert
    /// whose sealed materials are not under the current key gets its digests
    /// made again under it (the old ones removed), [`CHUNK`] alerts per
    /// transaction. (Record postings are rebuilt from the chunks instead:
    /// [`TenantStore::rebuild_index`].)
    fn rekey_index(&self) -> Result<(), StoreError> {
        // Alert terms: (id, sealed list) rows not under the current key.
        loop {
            let keys = self.live()?;
            let current = keys.current();
            let Some(mac) = keys.lookup_macs().into_iter().next() else {
                return Ok(());
            };
            let tx = self.db.begin_write()?;
            let moved;
            {
                let mut list = tx.open_table(ALERT_TERM_LIST)?;
                let mut terms = tx.open_table(ALERT_TERMS)?;
                let rows: Vec<(String, Vec<u8>)> = list
                    .iter()?
                    .filter_map(|r| match r {
                        Ok((k, v)) if version_of(v.value()) != Some(current) => {
                            Some(Ok((k.value().to_owned(), v.value().to_vec())))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .take(CHUNK)
                    .collect::<Result<_, _>>()?;
                moved = rows.len();
                for (id, sealed) in &rows {
                    let aad = alert_terms_aad(&self.tenant_id, id);
                    let plain = keys.open(&aad, sealed)?;
                    for m in decode_materials(&plain) {
                        for old in lookup_digests(&keys, &m) {
                            terms.remove((old.as_slice(), id.as_str()))?;
                        }
                        terms.insert((short_digest(&mac, &m).as_slice(), id.as_str()), ())?;
                    }
                    list.insert(id.as_str(), keys.seal(&aad, &plain)?.as_slice())?;
                }
            }
            tx.commit()?;
            if moved < CHUNK {
                break;
            }
        }
        Ok(())
    }

    /// Moves the per-record rows of a file written before chunks into chunks
    /// (each run of a device's records received together, as chunks are
    /// made at ingest), [`CHUNK`] records per transaction, then drops the old
    /// tables. An interrupted upgrade goes on at the next open.
    fn upgrade_legacy(&self) -> Result<(), StoreError> {
        let mut moved = 0u64;
        loop {
            let keys = self.live()?;
            let tx = self.db.begin_write()?;
            let rows;
            {
                let mut old_idx = tx.open_table(LEGACY_RECEIVED)?;
                let mut old_rec = tx.open_table(LEGACY_RECORDS)?;
                let batch: Vec<(u64, String, u64)> = old_idx
                    .range::<(u64, &str, u64)>(..)?
                    .take(CHUNK)
                    .map(|r| {
                        r.map(|(k, _)| {
                            let (t, d, s) = k.value();
                            (t, d.to_owned(), s)
                        })
                    })
                    .collect::<Result<_, _>>()?;
                rows = batch.len();
                let mut chunks = tx.open_table(CHUNKS)?;
                let mut idx = tx.open_table(CHUNKS_RECEIVED)?;
                // Bounds that say "any time, any kind", so scans open it; queued
                // for the indexer, which reads its records.
                let mut counts = tx.open_table(COUNTS)?;
                let mut ix = IndexTables {
                    meta: tx.open_table(CHUNK_META)?,
                    levels: None,
                    queue: tx.open_table(INDEX_QUEUE)?,
                    next: counts.get(QUEUE_NEXT)?.map_or(1, |v| v.value()),
                };
                let none = ChunkIndex::default();
                let mut open: Option<(u64, String, ChunkBuilder)> = None;
                let mut n = 0u64;
                for (t, d, s) in &batch {
                    old_idx.remove((*t, d.as_str(), *s))?;
                    let Some(sealed) = old_rec.remove((d.as_str(), *s))? else {
                        continue;
                    };
                    let plain = keys.open(&record_aad(&self.tenant_id, d, *s), sealed.value())?;
                    drop(sealed);
                    if let Some((ct, cd, c)) =
                        open.take_if(|(ct, cd, c)| ct != t || cd != d || !c.fits(plain.len()))
                    {
                        ix.put(&cd, &none, c.first(), c.last(), ct)?;
                        self.put_chunk(&keys, &mut chunks, &mut idx, &cd, ct, c)?;
                    }
                    open.get_or_insert_with(|| (*t, d.clone(), ChunkBuilder::new(*s)))
                        .2
                        .push(*s, &plain)?;
                    n += 1;
                }
                if let Some((ct, cd, c)) = open {
                    ix.put(&cd, &none, c.first(), c.last(), ct)?;
                    self.put_chunk(&keys, &mut chunks, &mut idx, &cd, ct, c)?;
                }
                if n > 0 {
                    add_count(&mut counts, n, true)?;
                }
                counts.insert(QUEUE_NEXT, ix.next)?;
                moved += n;
                if rows == 0 {
                    let orphans = old_rec.len()?;
                    if orphans > 0 {
                        tracing::warn!(tenant = %self.tenant_id, orphans, "Records of an older file without a retention entry were dropped in the upgrade");
                    }
                }
            }
            if rows == 0 {
                tx.delete_table(LEGACY_RECORDS)?;
                tx.delete_table(LEGACY_RECEIVED)?;
                tx.commit()?;
                tracing::info!(tenant = %self.tenant_id, records = moved, "Tenant file upgraded: records are stored in chunks");
                return Ok(());
            }
            tx.commit()?;
        }
    }

    /// The index generation postings go into now: for tests.
    #[cfg(test)]
    pub(crate) fn index_generation(&self) -> u32 {
        self.postings.current().unwrap_or(0)
    }

    /// Writes records the way files before chunks held them: for the upgrade's tests.
    #[cfg(test)]
    pub(crate) fn write_legacy(
        &self,
        device: &str,
        received_ns: i64,
        records: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let keys = self.live()?;
        let received = u64::try_from(received_ns).unwrap_or(0);
        let tx = self.db.begin_write()?;
        {
            let mut rec = tx.open_table(LEGACY_RECORDS)?;
            let mut idx = tx.open_table(LEGACY_RECEIVED)?;
            let mut hw = tx.open_table(HIGH_WATER)?;
            for (seq, bytes) in records {
                let sealed = keys.seal(&record_aad(&self.tenant_id, device, *seq), bytes)?;
                rec.insert((device, *seq), sealed.as_slice())?;
                idx.insert((received, device, *seq), ())?;
                hw.insert(device, *seq)?;
            }
        }
        tx.commit()?;
        Ok(())
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

    /// Stores a new alert outside any batch (one the server raised itself,
    /// e.g. a tenant-wide correlation), durably, in its own transaction. It
    /// joins no aggregation group. An id already stored is refused, never
    /// overwritten (it may carry analysts' changes).
    pub fn put_alert(
        &self,
        id: &str,
        bytes: &[u8],
        index: &dyn AlertMerge,
    ) -> Result<(), StoreError> {
        let keys = self.live()?;
        let tx = self.db.begin_write()?;
        {
            let mut at = AlertTables::open(&tx)?;
            if at.al.get(id)?.is_some() {
                return Err(StoreError::Invalid(format!("alert {id} exists")));
            }
            at.al.insert(
                id,
                keys.seal(&alert_aad(&self.tenant_id, id), bytes)?
                    .as_slice(),
            )?;
            self.index_alert(&keys, &mut at, id, &index.terms(bytes))?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Adds `n` to (or, with `up` false, takes it from) the stored record count.
/// `counts` keys of the level counts (`TenantStore::level_counts`).
const LEVEL_KEYS: [&str; 3] = ["optional_records", "optional_bytes", "bytes"];

fn add_levels(
    counts: &mut Table<'_, &'static str, u64>,
    (records, optional_bytes, bytes): (u64, u64, u64),
    up: bool,
) -> Result<(), StoreError> {
    for (key, n) in LEVEL_KEYS.into_iter().zip([records, optional_bytes, bytes]) {
        let now = counts.get(key)?.map_or(0, |v| v.value());
        let next = if up {
            now.saturating_add(n)
        } else {
            now.saturating_sub(n)
        };
        counts.insert(key, next)?;
    }
    Ok(())
}

fn add_count(
    counts: &mut Table<'_, &'static str, u64>,
    n: u64,
    up: bool,
) -> Result<(), StoreError> {
    let now = counts.get(RECORD_COUNT)?.map_or(0, |v| v.value());
    let next = if up {
        now.saturating_add(n)
    } else {
        now.saturating_sub(n)
    };
    counts.insert(RECORD_COUNT, next)?;
    Ok(())
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
