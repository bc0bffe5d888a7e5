//! Record postings and sightings: the part of the index that says which
//! chunks hold a value, and which devices saw one. It lives in its own file
//! (`index.redb` beside the tenant's `data.redb`), written after ingest has
//! committed and acknowledged, by the tenant's indexer
//! ([`crate::TenantStore::index_pending`]): so indexing never holds ingest's
//! write lock, and runs beside it on another core. Until the indexer has
//! caught up (normally within a second), lookups also open the chunks it has
//! not reached (the "tail"), so nothing stored is missed.
//!
//! Postings are written into generations: the current one closes after
//! [`GEN_POSTINGS`] entries. A write's random digests land on the pages of one
//! small key range (each page a transaction touches is copied and
//! checksummed: spread over the whole table, that cost grew with it), and
//! retention drops whole generations once everything they index is gone.
//! A lookup seeks its digest in every generation.
//!
//! Everything is keyed by 16-byte keyed digests (see `index.rs`); no value
//! is stored. A data key rotation rebuilds the postings under the new key
//! ([`crate::TenantStore::rebuild_index`]) before the old key is destroyed.

use crate::StoreError;
use crate::crypto::{KeyRing, short_digest};
use crate::index::{Sighting, lookup_digests};
use crate::reopen::ReopeningDb;
use redb::{ReadableTable, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// (generation, digest, device, chunk's first sequence) → ().
const POSTINGS: TableDefinition<(u32, &[u8], &str, u64), ()> =
    TableDefinition::new("record_postings");
/// (generation, digest, device) → (first seen, last seen, records) counted
/// in that generation; a lookup sums the generations.
const SIGHTINGS: TableDefinition<(u32, &[u8], &str), Seen> =
    TableDefinition::new("value_sightings");
/// (first seen, last seen, records).
type Seen = (i64, i64, u64);

/// Generation → the latest received time of a chunk it indexes (retention).
const GENERATIONS: TableDefinition<u32, u64> = TableDefinition::new("generations");
/// `current`, `entries` (of the current generation), `indexed` (the last
/// queue entry indexed: everything at or below it is in here).
const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");

/// Entries a generation takes before the next one opens (small in unit
/// tests, so that every lookup there crosses many).
#[cfg(not(test))]
pub(crate) const GEN_POSTINGS: u64 = 1 << 18;
#[cfg(test)]
pub(crate) const GEN_POSTINGS: u64 = 3;

/// What one chunk adds: its values' materials, and per counted value its
/// (first seen, last seen, records).
#[derive(Debug, Default)]
pub(crate) struct ChunkTerms {
    pub(crate) terms: BTreeSet<Vec<u8>>,
    pub(crate) sightings: BTreeMap<Vec<u8>, (i64, i64, u64)>,
}

impl ChunkTerms {
    /// Adds one record's index entry.
    pub(crate) fn add(&mut self, r: &crate::RecordIndex) {
        for t in &r.terms {
            if !self.terms.contains(t) {
                self.terms.insert(t.clone());
            }
        }
        for s in &r.sightings {
            let e = self
                .sightings
                .entry(s.clone())
                .or_insert((r.time_ns, r.time_ns, 0));
            e.0 = e.0.min(r.time_ns);
            e.1 = e.1.max(r.time_ns);
            e.2 += 1;
        }
    }
}

/// A chunk to index: where it is, when it was received, what it holds.
#[derive(Debug)]
pub(crate) struct Indexed {
    pub(crate) device: String,
    pub(crate) first: u64,
    pub(crate) received: u64,
    pub(crate) terms: ChunkTerms,
}

/// The tenant's `index.redb`.
pub(crate) struct RecordPostings {
    db: ReopeningDb,
}

fn state(t: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(t.get(key)?.map_or(0, |v| v.value()))
}

fn generation_id(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl RecordPostings {
    pub(crate) fn open(dir: &Path) -> Result<RecordPostings, StoreError> {
        let db = ReopeningDb::create(dir.join("index.redb"), crate::INDEX_CACHE_BYTES)?;
        let tx = db.begin_write()?;
        tx.open_table(POSTINGS)?;
        tx.open_table(SIGHTINGS)?;
        tx.open_table(GENERATIONS)?;
        tx.open_table(STATE)?;
        tx.commit()?;
        Ok(RecordPostings { db })
    }

    /// The generation written into now.
    #[cfg(test)]
    pub(crate) fn current(&self) -> Result<u32, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(generation_id(state(&tx.open_table(STATE)?, "current")?))
    }

    /// The last queue entry indexed.
    pub(crate) fn indexed(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        state(&tx.open_table(STATE)?, "indexed")
    }

    /// Writes `chunks`' postings and sightings under the current key, in one
    /// transaction, and (when given) moves the indexed mark to `through`.
    pub(crate) fn apply(
        &self,
        keys: &KeyRing,
        chunks: &[Indexed],
        through: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(mac) = keys.lookup_macs().into_iter().next() else {
            return Err(StoreError::Crypto("no data key"));
        };
        let tx = self.db.begin_write()?;
        {
            let mut st = tx.open_table(STATE)?;
            let mut post = tx.open_table(POSTINGS)?;
            let mut seen = tx.open_table(SIGHTINGS)?;
            let mut gens = tx.open_table(GENERATIONS)?;
            let mut g = generation_id(state(&st, "current")?);
            let mut entries = state(&st, "entries")?;
            for c in chunks {
                let mut digests: Vec<[u8; 16]> = c
                    .terms
                    .terms
                    .iter()
                    .map(|m| short_digest(&mac, m))
                    .collect();
                // In key order: neighbouring inserts share pages.
                digests.sort_unstable();
                for d in &digests {
                    post.insert((g, d.as_slice(), c.device.as_str(), c.first), ())?;
                }
                for (m, (lo, hi, n)) in &c.terms.sightings {
                    let d = short_digest(&mac, m);
                    let key = (g, d.as_slice(), c.device.as_str());
                    let next = match seen.get(key)?.map(|v| v.value()) {
                        Some((a, z, k)) => (a.min(*lo), z.max(*hi), k.saturating_add(*n)),
                        None => (*lo, *hi, *n),
                    };
                    seen.insert(key, next)?;
                }
                let latest = gens.get(g)?.map_or(0, |v| v.value()).max(c.received);
                gens.insert(g, latest)?;
                entries += (digests.len() + c.terms.sightings.len()) as u64;
                if entries >= GEN_POSTINGS {
                    g = g.saturating_add(1);
                    entries = 0;
                }
            }
            st.insert("current", u64::from(g))?;
            st.insert("entries", entries)?;
            if let Some(t) = through {
                st.insert("indexed", t)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The chunks (device, first sequence) indexed under `material`, of
    /// `device` only when given.
    pub(crate) fn chunks(
        &self,
        keys: &KeyRing,
        material: &[u8],
        device: Option<&str>,
    ) -> Result<BTreeSet<(String, u64)>, StoreError> {
        let tx = self.db.begin_read()?;
        let post = tx.open_table(POSTINGS)?;
        let live = live_generations(&tx)?;
        let mut found = BTreeSet::new();
        for d in lookup_digests(keys, material) {
            for &g in &live {
                for item in post.range((g, d.as_slice(), device.unwrap_or(""), 0u64)..)? {
                    let (k, _) = item?;
                    let (kg, kd, dev, first) = k.value();
                    if kg != g || kd != d.as_slice() || device.is_some_and(|w| w != dev) {
                        break;
                    }
                    found.insert((dev.to_owned(), first));
                }
            }
        }
        Ok(found)
    }

    /// Per device, the sightings of `material` summed over the generations.
    pub(crate) fn sightings(
        &self,
        keys: &KeyRing,
        material: &[u8],
    ) -> Result<BTreeMap<String, Sighting>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SIGHTINGS)?;
        let live = live_generations(&tx)?;
        let mut by_device: BTreeMap<String, Sighting> = BTreeMap::new();
        for d in lookup_digests(keys, material) {
            for &g in &live {
                for item in t.range((g, d.as_slice(), "")..)? {
                    let (k, v) = item?;
                    let (kg, kd, dev) = k.value();
                    if kg != g || kd != d.as_slice() {
                        break;
                    }
                    add_sighting(&mut by_device, dev, v.value());
                }
            }
        }
        Ok(by_device)
    }

    /// Drops the generations (below the current one) whose every chunk was
    /// received before `cutoff`: retention took what they index.
    pub(crate) fn drop_before(&self, cutoff: u64) -> Result<u32, StoreError> {
        let tx = self.db.begin_write()?;
        let mut dropped = 0;
        {
            let current = generation_id(state(&tx.open_table(STATE)?, "current")?);
            let mut gens = tx.open_table(GENERATIONS)?;
            let old: Vec<u32> = gens
                .iter()?
                .filter_map(|r| match r {
                    Ok((k, v)) if k.value() < current && v.value() < cutoff => Some(Ok(k.value())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?;
            let mut post = tx.open_table(POSTINGS)?;
            let mut seen = tx.open_table(SIGHTINGS)?;
            for g in old {
                post.retain_in(
                    (g, &[][..], "", 0u64)..(g + 1, &[][..], "", 0u64),
                    |_, _| false,
                )?;
                seen.retain_in((g, &[][..], "")..(g + 1, &[][..], ""), |_, _| false)?;
                gens.remove(g)?;
                dropped += 1;
            }
        }
        tx.commit()?;
        Ok(dropped)
    }

    /// Starts a rebuild: later writes go into fresh generations; returns the
    /// first of them (everything below is dropped by [`Self::finish_rebuild`]).
    pub(crate) fn begin_rebuild(&self) -> Result<u32, StoreError> {
        let tx = self.db.begin_write()?;
        let start;
        {
            let mut st = tx.open_table(STATE)?;
            start = generation_id(state(&st, "current")?).saturating_add(1);
            st.insert("current", u64::from(start))?;
            st.insert("entries", 0)?;
        }
        tx.commit()?;
        Ok(start)
    }

    /// Drops every generation below `start` and sets the indexed mark.
    pub(crate) fn finish_rebuild(&self, start: u32, indexed: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut post = tx.open_table(POSTINGS)?;
            let mut seen = tx.open_table(SIGHTINGS)?;
            let mut gens = tx.open_table(GENERATIONS)?;
            post.retain_in(..(start, &[][..], "", 0u64), |_, _| false)?;
            seen.retain_in(..(start, &[][..], ""), |_, _| false)?;
            gens.retain_in(..start, |_, _| false)?;
            tx.open_table(STATE)?.insert("indexed", indexed)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The generations that hold entries (dropped ones are not sought).
fn live_generations(tx: &redb::ReadTransaction) -> Result<Vec<u32>, StoreError> {
    tx.open_table(GENERATIONS)?
        .iter()?
        .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from))
        .collect()
}

/// Adds one (first, last, count) row of `device` to `by_device`.
pub(crate) fn add_sighting(
    by_device: &mut BTreeMap<String, Sighting>,
    device: &str,
    (first, last, count): (i64, i64, u64),
) {
    let e = by_device
        .entry(device.to_owned())
        .or_insert_with(|| Sighting {
            device: device.to_owned(),
            first_ns: first,
            last_ns: last,
            count: 0,
        });
    e.first_ns = e.first_ns.min(first);
    e.last_ns = e.last_ns.max(last);
    e.count = e.count.saturating_add(count);
}
