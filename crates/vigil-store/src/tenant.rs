use crate::StoreError;
use crate::crypto::SealKey;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const RECORDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("records");
const HIGH_WATER: TableDefinition<&str, u64> = TableDefinition::new("high_water");
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");

/// One tenant's data: its own file, sealed with its own key.
pub struct TenantStore {
    tenant_id: String,
    db: Database,
    key: SealKey,
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

fn record_aad(tenant: &str, device: &str, seq: u64) -> Vec<u8> {
    format!("record:{tenant}:{device}:{seq}").into_bytes()
}

fn alert_aad(tenant: &str, id: &str) -> Vec<u8> {
    format!("alert:{tenant}:{id}").into_bytes()
}

impl TenantStore {
    pub(crate) fn open(
        tenant_id: &str,
        path: &Path,
        key: SealKey,
    ) -> Result<TenantStore, StoreError> {
        let db = Database::create(path)?;
        // Create the tables up front so readers never see them missing.
        let tx = db.begin_write()?;
        tx.open_table(RECORDS)?;
        tx.open_table(HIGH_WATER)?;
        tx.open_table(ALERTS)?;
        tx.commit()?;
        Ok(TenantStore {
            tenant_id: tenant_id.to_owned(),
            db,
            key,
        })
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Highest sequence stored for `device` (0 when none).
    pub fn high_water(&self, device: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(HIGH_WATER)?;
        Ok(t.get(device)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Stores a device's batch durably in one transaction. `records` are
    /// (sequence, bytes) in ascending order; `alerts` are (source sequence,
    /// alert id, bytes). Anything at or below the device's high-water mark is a
    /// re-send and is skipped, alerts included, so a batch can be delivered
    /// twice without storing anything twice.
    pub fn commit_batch(
        &self,
        device: &str,
        records: &[(u64, Vec<u8>)],
        alerts: &[(u64, String, Vec<u8>)],
    ) -> Result<BatchOutcome, StoreError> {
        let tx = self.db.begin_write()?;
        let mut outcome = BatchOutcome {
            accepted: 0,
            duplicates: 0,
            stored_through: 0,
            previous_high: 0,
        };
        {
            let mut hw = tx.open_table(HIGH_WATER)?;
            let start = hw.get(device)?.map(|v| v.value()).unwrap_or(0);
            outcome.previous_high = start;
            let mut high = start;
            let mut rec = tx.open_table(RECORDS)?;
            for (seq, bytes) in records {
                if *seq <= high {
                    outcome.duplicates += 1;
                    continue;
                }
                let sealed = self
                    .key
                    .seal(&record_aad(&self.tenant_id, device, *seq), bytes)?;
                rec.insert((device, *seq), sealed.as_slice())?;
                high = *seq;
                outcome.accepted += 1;
            }
            let mut al = tx.open_table(ALERTS)?;
            for (seq, id, bytes) in alerts {
                if *seq > start {
                    let sealed = self.key.seal(&alert_aad(&self.tenant_id, id), bytes)?;
                    al.insert(id.as_str(), sealed.as_slice())?;
                }
            }
            hw.insert(device, high)?;
            outcome.stored_through = high;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Up to `limit` records of `device` with sequence > `after`, decrypted.
    pub fn records(
        &self,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(RECORDS)?;
        let mut out = Vec::new();
        for item in t
            .range((device, after.saturating_add(1))..=(device, u64::MAX))?
            .take(limit)
        {
            let (k, v) = item?;
            let seq = k.value().1;
            let plain = self
                .key
                .open(&record_aad(&self.tenant_id, device, seq), v.value())?;
            out.push((seq, plain.to_vec()));
        }
        Ok(out)
    }

    /// Alerts newest first, starting strictly before `before` (an alert id) when
    /// given, keeping those `keep` accepts, at most `limit`.
    pub fn alerts(
        &self,
        before: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
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
            let plain = self.key.open(&alert_aad(&self.tenant_id, &id), v.value())?;
            if keep(&plain) {
                out.push((id, plain.to_vec()));
            }
        }
        Ok(out)
    }

    pub fn alert(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ALERTS)?;
        match t.get(id)? {
            None => Ok(None),
            Some(v) => Ok(Some(
                self.key
                    .open(&alert_aad(&self.tenant_id, id), v.value())?
                    .to_vec(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ControlStore;

    #[test]
    fn resent_batches_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = ControlStore::open(dir.path()).unwrap();
        c.create_tenant("a", "A").unwrap();
        let t = c.tenant_store("a").unwrap();
        let recs: Vec<(u64, Vec<u8>)> = (1..=3).map(|i| (i, vec![i as u8])).collect();
        let alerts = vec![(2, "0001".to_string(), b"alert".to_vec())];
        let first = t.commit_batch("d", &recs, &alerts).unwrap();
        assert_eq!(
            (first.accepted, first.duplicates, first.stored_through),
            (3, 0, 3)
        );
        let again = t.commit_batch("d", &recs, &alerts).unwrap();
        assert_eq!(
            (again.accepted, again.duplicates, again.stored_through),
            (0, 3, 3)
        );
        assert_eq!(t.records("d", 0, 100).unwrap().len(), 3);
        assert_eq!(t.records("d", 2, 100).unwrap(), vec![(3, vec![3])]);
        assert_eq!(t.alerts(None, 10, |_| true).unwrap().len(), 1);
        assert_eq!(t.alert("0001").unwrap().unwrap(), b"alert");
    }

    #[test]
    fn data_on_disk_is_sealed_and_alerts_page_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = ControlStore::open(dir.path()).unwrap();
        c.create_tenant("a", "A").unwrap();
        let t = c.tenant_store("a").unwrap();
        let marker = b"PLAINTEXT-MARKER-cat /etc/shadow".to_vec();
        let alerts: Vec<_> = (1..=5)
            .map(|i| (i, format!("{i:04}"), marker.clone()))
            .collect();
        t.commit_batch("d", &[(5, marker.clone())], &alerts)
            .unwrap();
        let page1 = t.alerts(None, 2, |_| true).unwrap();
        assert_eq!(
            page1.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
            ["0005", "0004"]
        );
        let page2 = t.alerts(Some("0004"), 10, |_| true).unwrap();
        assert_eq!(
            page2.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
            ["0003", "0002", "0001"]
        );
        drop(t);
        drop(c);
        let raw = std::fs::read(dir.path().join("tenants/a/data.redb")).unwrap();
        assert!(
            !raw.windows(16).any(|w| w == &marker[..16]),
            "plaintext found on disk"
        );
    }
}
