//! The seam a tenant's data scales out behind. The API layer (the server's
//! services) reads and writes a tenant's records and alerts only through
//! [`TenantData`], and reaches keys only through [`crate::KeyProvider`]; so
//! records can move to NATS JetStream and alerts to PostgreSQL (a schema per
//! region) by adding implementations here, without touching the services.
//! Whatever the backend, values leave the process sealed with the tenant's
//! data key, bound to tenant, table and key.

use crate::{
    AlertMerge, AlertQuery, AlertUpdate, BatchOutcome, Derive, LevelCounts, NewBatch, Purged, Scan,
    ScanStats, Sighting, StoreError, TenantStore,
};

/// One tenant's records and alerts, wherever they live.
pub trait TenantData: Send + Sync + std::fmt::Debug {
    fn tenant_id(&self) -> &str;
    /// Stores a device's batch durably, exactly once per sequence number
    /// (anything at or below the device's high-water mark is a re-send).
    /// Returns only when the batch is durable: the caller acknowledges then.
    fn commit_batch(
        &self,
        device: &str,
        received_ns: i64,
        records: &[(u64, Vec<u8>)],
        alerts: &[(u64, String, Vec<u8>)],
    ) -> Result<BatchOutcome, StoreError>;
    /// Several devices' batches in one durable commit (group commit), each
    /// with its own outcome, in order. Records are the bytes as received; a
    /// new alert of a group is grown into the group's latest alert when
    /// `merge` says so (`TenantStore::commit_batches`).
    fn commit_batches(
        &self,
        batches: &[NewBatch<'_, bytes::Bytes>],
        merge: &dyn AlertMerge,
    ) -> Result<Vec<BatchOutcome>, StoreError>;
    fn high_water(&self, device: &str) -> Result<u64, StoreError>;
    fn high_waters(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Up to `limit` records of `device` after sequence `after`, opened.
    fn records(
        &self,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    fn record_count(&self) -> Result<u64, StoreError>;
    /// What the tenant holds per data level.
    fn level_counts(&self) -> Result<LevelCounts, StoreError>;
    /// Visits the records of the chunks `q` chooses until `visit` says stop
    /// (`TenantStore::scan`).
    fn scan(
        &self,
        q: &Scan<'_>,
        visit: &mut dyn FnMut(&str, u64, &[u8]) -> bool,
    ) -> Result<ScanStats, StoreError>;
    /// Devices that had records counted under `material` (`derive` reads
    /// the chunks the indexer has not reached).
    fn sightings(&self, material: &[u8], derive: Derive<'_>) -> Result<Vec<Sighting>, StoreError>;
    /// Indexes up to `max` stored chunks the indexer has not reached;
    /// returns how many (`TenantStore::index_pending`).
    fn index_pending(&self, derive: Derive<'_>, max: usize) -> Result<usize, StoreError>;
    /// Stored chunks the indexer has not reached.
    fn index_backlog(&self) -> Result<u64, StoreError>;
    /// Rebuilds the record index under the current key (before a rotation
    /// destroys the old one).
    fn rebuild_index(&self, derive: Derive<'_>) -> Result<u64, StoreError>;
    /// A device's latest record of `kind`, with its event time.
    fn latest(&self, device: &str, kind: u8) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Alerts newest first, as `q` chooses them, those `keep` accepts, at
    /// most `limit`.
    fn alerts(
        &self,
        q: &AlertQuery<'_>,
        limit: usize,
        keep: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    fn alert(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads, changes and stores alert `id` in one transaction (no lost
    /// update), re-indexed by `index`'s terms.
    fn update_alert(
        &self,
        id: &str,
        change: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
        index: &dyn AlertMerge,
    ) -> Result<AlertUpdate, StoreError>;
    /// Gives alerts stored before alert postings existed their postings.
    fn index_unindexed_alerts(&self, index: &dyn AlertMerge) -> Result<u64, StoreError>;
    /// Stores a new alert the server raised itself (not from a batch), durably;
    /// an id already stored is refused.
    fn put_alert(&self, id: &str, bytes: &[u8], index: &dyn AlertMerge) -> Result<(), StoreError>;
    /// Removes what was received before `cutoff_ns` (retention).
    fn purge_before(&self, cutoff_ns: i64) -> Result<Purged, StoreError>;
    /// Bytes the tenant's data takes where it lives.
    fn size_bytes(&self) -> u64;
}

impl TenantData for TenantStore {
    fn tenant_id(&self) -> &str {
        TenantStore::tenant_id(self)
    }
    fn commit_batch(
        &self,
        device: &str,
        received_ns: i64,
        records: &[(u64, Vec<u8>)],
        alerts: &[(u64, String, Vec<u8>)],
    ) -> Result<BatchOutcome, StoreError> {
        TenantStore::commit_batch(self, device, received_ns, records, alerts)
    }
    fn commit_batches(
        &self,
        batches: &[NewBatch<'_, bytes::Bytes>],
        merge: &dyn AlertMerge,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        TenantStore::commit_batches(self, batches, merge)
    }
    fn high_water(&self, device: &str) -> Result<u64, StoreError> {
        TenantStore::high_water(self, device)
    }
    fn high_waters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        TenantStore::high_waters(self)
    }
    fn records(
        &self,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        TenantStore::records(self, device, after, limit)
    }
    fn record_count(&self) -> Result<u64, StoreError> {
        TenantStore::record_count(self)
    }
    fn level_counts(&self) -> Result<LevelCounts, StoreError> {
        TenantStore::level_counts(self)
    }
    fn scan(
        &self,
        q: &Scan<'_>,
        visit: &mut dyn FnMut(&str, u64, &[u8]) -> bool,
    ) -> Result<ScanStats, StoreError> {
        TenantStore::scan(self, q, visit)
    }
    fn sightings(&self, material: &[u8], derive: Derive<'_>) -> Result<Vec<Sighting>, StoreError> {
        TenantStore::sightings(self, material, derive)
    }
    fn index_pending(&self, derive: Derive<'_>, max: usize) -> Result<usize, StoreError> {
        TenantStore::index_pending(self, derive, max)
    }
    fn index_backlog(&self) -> Result<u64, StoreError> {
        TenantStore::index_backlog(self)
    }
    fn rebuild_index(&self, derive: Derive<'_>) -> Result<u64, StoreError> {
        TenantStore::rebuild_index(self, derive)
    }
    fn latest(&self, device: &str, kind: u8) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        TenantStore::latest(self, device, kind)
    }
    fn alerts(
        &self,
        q: &AlertQuery<'_>,
        limit: usize,
        keep: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        TenantStore::alerts(self, q, limit, keep)
    }
    fn alert(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        TenantStore::alert(self, id)
    }
    fn update_alert(
        &self,
        id: &str,
        change: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
        index: &dyn AlertMerge,
    ) -> Result<AlertUpdate, StoreError> {
        TenantStore::update_alert(self, id, change, index)
    }
    fn put_alert(&self, id: &str, bytes: &[u8], index: &dyn AlertMerge) -> Result<(), StoreError> {
        TenantStore::put_alert(self, id, bytes, index)
    }
    fn purge_before(&self, cutoff_ns: i64) -> Result<Purged, StoreError> {
        TenantStore::purge_before(self, cutoff_ns)
    }
    fn index_unindexed_alerts(&self, index: &dyn AlertMerge) -> Result<u64, StoreError> {
        TenantStore::index_unindexed_alerts(self, index)
    }
    fn size_bytes(&self) -> u64 {
        TenantStore::size_bytes(self)
    }
}
