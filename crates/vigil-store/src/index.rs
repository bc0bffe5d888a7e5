//! The index: what makes search, process trees, prevalence, device state
//! and alert listing fast while everything stays sealed. It holds no
//! plaintext value:
//!
//! - per chunk, its time bounds (event time), the record kinds it holds and
//!   its last sequence (`chunk_meta`), written with the chunk;
//! - per value a record can be found by (a process GUID, a hash, a path: the
//!   server decides, as *material*), a keyed digest → the chunks holding
//!   such a record, and per value counted for prevalence its digest and
//!   device → first and last seen and how many (`postings.rs`: written by the
//!   indexer after ingest, in its own file);
//! - per device and kind, the latest record of that kind (host details,
//!   sensor health), sealed (`latest`);
//! - per alert filter value, a keyed digest → the alerts (`alert_terms`),
//!   with the alert.
//!
//! Digests are the first 16 bytes of HMAC-SHA-256 under a key derived from
//! the tenant's data key ([`crate::crypto::KeyRing::lookup_macs`]): equal
//! values of one tenant meet, nothing links them across tenants, and the
//! index says nothing of a value to whoever lacks the key. A lookup reads
//! every chunk or alert a digest names and compares it in full, so a digest
//! collision costs time, never a wrong answer. Entries are made under the
//! current data key and looked up under every key the tenant still has; a
//! rotation re-keys them before the old key is destroyed (alerts from their
//! sealed materials, records by rebuilding the postings from the chunks).

use crate::crypto::{KeyRing, short_digest};
use redb::TableDefinition;

/// (device, first sequence) → (earliest and latest event time, kinds bitmask, last sequence).
pub(crate) const CHUNK_META: TableDefinition<(&str, u64), (i64, i64, u32, u64)> =
    TableDefinition::new("chunk_meta");
/// Chunks waiting for the indexer: queue number → (device, first sequence,
/// received time). Entries at or below the indexer's mark are done.
pub(crate) const INDEX_QUEUE: TableDefinition<u64, (&str, u64, u64)> =
    TableDefinition::new("index_queue");

/// (device, first sequence) → (optional records, optional bytes, bytes of all
/// records): what retention takes off the tenant's level counts.
pub(crate) const CHUNK_LEVELS: TableDefinition<(&str, u64), (u32, u64, u64)> =
    TableDefinition::new("chunk_levels");

/// (device, kind) → event time (8 bytes, little-endian) || the record, sealed.
pub(crate) const LATEST: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("latest");

/// What the index keeps of one record, from the server (the store does not
/// read records). No field of it is stored as given: terms and sightings as
/// keyed digests, the time in chunk bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordIndex {
    /// Event time.
    pub time_ns: i64,
    /// The record's kind, 0..32 (the server's numbering), for [`Scan::kinds`].
    pub kind: u8,
    /// Values the record is found by ([`Scan::term`]).
    pub terms: Vec<Vec<u8>>,
    /// Values counted per device for [`crate::TenantStore::sightings`].
    pub sightings: Vec<Vec<u8>>,
    /// Kept as the device's latest record of its kind ([`crate::TenantStore::latest`]).
    pub latest: bool,
    /// Optional data (the sensor's own diagnostics): counted apart
    /// ([`crate::TenantStore::level_counts`]).
    pub optional: bool,
}

/// Which records [`crate::TenantStore::scan`] visits: chunks are chosen by
/// these, and every record of a chosen chunk is visited (the caller checks
/// each record's own time, kind and values).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan<'a> {
    pub device: Option<&'a str>,
    /// Event time bounds, inclusive (`None`: open).
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    /// Bitmask of kinds (bit `kind`); 0: every kind.
    pub kinds: u32,
    /// Only chunks holding a record indexed under this material.
    pub term: Option<&'a [u8]>,
}

impl Scan<'_> {
    pub(crate) fn wants(&self, meta: (i64, i64, u32, u64)) -> bool {
        let (min, max, kinds, _) = meta;
        self.since_ns.is_none_or(|s| max >= s)
            && self.until_ns.is_none_or(|u| min <= u)
            && (self.kinds == 0 || kinds & self.kinds != 0)
    }
}

/// What a scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Chunks opened.
    pub chunks: u64,
    /// Records handed to the visitor.
    pub records: u64,
    /// The visitor asked to stop.
    pub stopped: bool,
}

/// A device's count of a value: [`crate::TenantStore::sightings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub device: String,
    pub first_ns: i64,
    pub last_ns: i64,
    pub count: u64,
}

/// A chunk's bounds and kinds while the chunk is built.
#[derive(Debug, Default)]
pub(crate) struct ChunkIndex {
    bounds: Option<(i64, i64)>,
    kinds: u32,
    /// Records and bytes of optional data, and bytes of every record.
    pub(crate) levels: (u32, u64, u64),
}

impl ChunkIndex {
    pub(crate) fn add(&mut self, r: &RecordIndex) {
        self.bounds = Some(match self.bounds {
            None => (r.time_ns, r.time_ns),
            Some((lo, hi)) => (lo.min(r.time_ns), hi.max(r.time_ns)),
        });
        self.kinds |= 1u32.checked_shl(u32::from(r.kind)).unwrap_or(0);
    }

    /// Counts a record's bytes under its level (`optional`).
    pub(crate) fn count(&mut self, len: usize, optional: bool) {
        let len = len as u64;
        self.levels.2 += len;
        if optional {
            self.levels.0 += 1;
            self.levels.1 += len;
        }
    }

    /// (min time, max time, kinds, last sequence); an unindexed chunk spans all time.
    pub(crate) fn meta(&self, last: u64) -> (i64, i64, u32, u64) {
        let (lo, hi) = self.bounds.unwrap_or((i64::MIN, i64::MAX));
        let kinds = if self.bounds.is_some() {
            self.kinds
        } else {
            u32::MAX
        };
        (lo, hi, kinds, last)
    }
}

/// Digests of `material` under every key of the ring, current first.
pub(crate) fn lookup_digests(keys: &KeyRing, material: &[u8]) -> Vec<[u8; 16]> {
    let mut out: Vec<[u8; 16]> = Vec::new();
    for mac in keys.lookup_macs() {
        let d = short_digest(&mac, material);
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The aad a latest record is sealed under.
pub(crate) fn latest_aad(tenant: &str, device: &str, kind: u8) -> Vec<u8> {
    format!("latest:{tenant}:{device}:{kind}").into_bytes()
}

/// The event time stored before a latest record's sealed bytes.
pub(crate) fn latest_time(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// (digest, alert id) → (): the alerts a filter value names.
pub(crate) const ALERT_TERMS: TableDefinition<(&[u8], &str), ()> =
    TableDefinition::new("alert_terms");
/// Alert id → its term materials, sealed: what removes its postings when it
/// changes or goes.
pub(crate) const ALERT_TERM_LIST: TableDefinition<&str, &[u8]> =
    TableDefinition::new("alert_term_list");

pub(crate) fn alert_terms_aad(tenant: &str, id: &str) -> Vec<u8> {
    format!("alert_term_list:{tenant}:{id}").into_bytes()
}

/// Materials as one value: each as a u32 little-endian length and its bytes.
pub(crate) fn encode_materials(m: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in m {
        out.extend_from_slice(&(x.len() as u32).to_le_bytes());
        out.extend_from_slice(x);
    }
    out
}

pub(crate) fn decode_materials(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((len, rest)) = b.split_at_checked(4) {
        let Ok(len) = <[u8; 4]>::try_from(len) else {
            break;
        };
        let Some((x, rest)) = rest.split_at_checked(u32::from_le_bytes(len) as usize) else {
            break;
        };
        out.push(x.to_vec());
        b = rest;
    }
    out
}

/// Which alerts [`crate::TenantStore::alerts`] visits, newest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlertQuery<'a> {
    /// Strictly before this alert id (a page token).
    pub before: Option<&'a str>,
    /// Only alerts indexed, for each group, under one of its materials (see
    /// [`crate::AlertMerge::terms`]): a conjunction of disjunctions. The
    /// first group's postings are walked, the others are looked up per
    /// alert; put the most selective first. Empty: every alert.
    pub all_of: &'a [Vec<Vec<u8>>],
    /// No alert received before this time is visited.
    pub received_since_ns: Option<i64>,
}
