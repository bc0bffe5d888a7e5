//! All rules of one log source compiled into one matcher.
//!
//! Every literal any applicable rule uses is an *atom*: (field, lower-cased
//! literal, anchor). Per field, one [`FieldScan`] finds which atoms a value
//! satisfies; each field of the event is read, lower-cased and scanned once.
//! Atoms then do two jobs:
//! - the prefilter: a rule is a candidate only when each of its clauses (see
//!   [`Node::clauses`]) has an atom set, or when it has no clause at all;
//! - evaluation: a candidate's [`Node`] tree is decided from the atom bits,
//!   reading the event again only for entries literals cannot decide.
//!
//! Each thread keeps, per index and field, the atoms of recently seen values
//! (and the results of residual entries on them): a value seen before is a
//! hash and a byte-for-byte compare, not a search. Keyword atoms are searched
//! in every string and number value of the event.
//!
//! Cost grows with what the event contains and what it matches, not with the
//! number of rules.

use crate::eval::Ctx;
use crate::event::{Event, FieldValue};
use crate::logsource::LogSource;
use crate::pattern::Anchor;
use crate::program::{Facts, KEYWORDS, Memo, Node};
use crate::rule::Rule;
use crate::scan::{Buffers, FieldScan};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Values remembered (all fields of an index together) with the atoms they
/// satisfy: fields with few values take few slots, command lines the rest.
const CACHE_SLOTS: usize = 8192;
/// Longer values are scanned every time (and not kept).
const CACHE_MAX_VALUE: usize = 512;
/// Indexes (log sources, rule sets) a thread keeps caches for.
const CACHED_INDEXES: usize = 4;

static NEXT_INDEX_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub(crate) struct Index {
    /// Distinguishes this index's value caches from other indexes' on a thread.
    id: u64,
    /// Rules with no derivable clause: always evaluated.
    always: Vec<u32>,
    /// Field name → its scan.
    fields: Vec<(String, FieldScan)>,
    /// Keyword literals, searched in every string and number value.
    keywords: Option<FieldScan>,
    by_name: FxHashMap<String, u32>,
    /// Atom → the (rule, clause) pairs it satisfies.
    /// Atom `a` satisfies the (rule, clause) pairs `atom_rules[atom_start[a]..atom_start[a + 1]]`,
    /// packed as `rule << 3 | clause`; one array, so a hit reads one run.
    atom_start: Vec<u32>,
    atom_rules: Vec<u32>,
    /// Per rule: the bit mask with one bit per clause (0 when not indexed).
    full: Vec<u8>,
    /// Per rule: its compiled detection, when it applies to the source.
    programs: Vec<Option<Node>>,
    /// How many rules apply to the source at all.
    pub(crate) applicable: usize,
}

/// One remembered value of a field and the atoms it satisfies.
#[derive(Default)]
struct CacheSlot {
    hash: u64,
    /// The field (row) the value belongs to.
    row: u32,
    /// Whether the atoms include keyword literals.
    keywords: bool,
    /// How many atoms `data` starts with.
    atoms: u32,
    /// The atoms (4 bytes each, little-endian), then the value: one block,
    /// so a hit reads one run of memory.
    data: Vec<u8>,
    /// Results of residual entries on this value: (memo id, result).
    residuals: Vec<(u32, bool)>,
}

impl CacheSlot {
    fn split(&self) -> (&[u8], &[u8]) {
        self.data
            .split_at((self.atoms as usize * 4).min(self.data.len()))
    }
}

/// Recent values of each field of one index, direct-mapped by hash: event
/// streams repeat the same images, users, parents and command lines, and a
/// remembered value costs a hash and a compare instead of a scan. Bounded:
/// a new value takes its slot's place.
struct ValueCache {
    index: u64,
    /// `CACHE_SLOTS` slots, shared by all fields (a slot records its field).
    slots: Vec<CacheSlot>,
    /// Per row, `DOOR_BITS` bits: values seen once. A value takes a slot only
    /// when seen a second time, so values that never come back (a command
    /// line with a fresh GUID) do not push out the ones that do.
    door: Vec<u64>,
    /// Per row: bits set since the row's door was last cleared.
    door_set: Vec<u32>,
}

// (rule, clause) marks pack the clause into 3 bits, and a rule's clause mask is a u8.
const _: () = assert!(crate::program::MAX_CLAUSES <= 8);

/// Bits per row of a cache's door (cleared once half are set).
const DOOR_BITS: usize = 4096;

/// Residual results kept with the cached values of this event's fields.
struct SlotMemo<'a> {
    slots: &'a mut [CacheSlot],
    field_slot: &'a [u32],
}

impl SlotMemo<'_> {
    fn slot(&self, field: u32) -> Option<usize> {
        match self.field_slot.get(field as usize) {
            Some(&at) if at > 0 => Some(at as usize - 1),
            _ => None,
        }
    }
}

impl Memo for SlotMemo<'_> {
    fn get(&self, field: u32, id: u32) -> Option<bool> {
        let slot = self.slots.get(self.slot(field)?)?;
        slot.residuals.iter().find(|r| r.0 == id).map(|r| r.1)
    }

    fn put(&mut self, field: u32, id: u32, result: bool) {
        let Some(at) = self.slot(field) else { return };
        if let Some(slot) = self.slots.get_mut(at)
            && !slot.residuals.iter().any(|r| r.0 == id)
        {
            slot.residuals.push((id, result));
        }
    }
}

/// How often values were found in the caches (engine tuning).
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheStats {
    pub lookups: u64,
    pub hits: u64,
}

/// Per-thread scratch so an event allocates nothing once warmed up.
#[derive(Default)]
struct Scratch {
    /// Value caches off on this thread (to measure what they bring).
    no_cache: bool,
    caches: Vec<ValueCache>,
    stats: CacheStats,
    bits: Vec<u64>,
    hits: Vec<u32>,
    mask: Vec<u8>,
    stamp: Vec<u32>,
    epoch: u32,
    touched: Vec<u32>,
    candidates: Vec<u32>,
    buffers: Buffers,
    /// The atoms of the value being scanned, for its cache slot.
    found: Vec<u32>,
    /// Per field of the index: its value's cache slot this event, plus one (0: none).
    field_slot: Vec<u32>,
    /// Which index's caches the current event uses.
    current: usize,
    number: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Atoms {
    ids: FxHashMap<(String, Anchor, String), u32>,
    /// Per atom: (field, literal, anchor).
    list: Vec<(String, String, Anchor)>,
}

impl Atoms {
    fn intern(&mut self, field: &str, lit: &str, anchor: Anchor) -> u32 {
        let key = (field.to_owned(), anchor, lit.to_owned());
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.list.len() as u32;
        self.ids.insert(key, id);
        self.list.push((field.to_owned(), lit.to_owned(), anchor));
        id
    }

    /// Selectivity: longer literals are rarer; anchored ones rarer still.
    fn weight(&self, atom: u32) -> usize {
        self.list.get(atom as usize).map_or(0, |(_, l, a)| {
            l.len()
                + match a {
                    Anchor::Exact => 8,
                    Anchor::Prefix | Anchor::Suffix => 4,
                    Anchor::Contains => 0,
                }
        })
    }
}

impl Index {
    pub(crate) fn build(rules: &[Rule], source: &LogSource) -> Index {
        let mut atoms = Atoms::default();
        let mut programs: Vec<Option<Node>> = vec![None; rules.len()];
        let mut applicable = 0;
        for (i, r) in rules.iter().enumerate() {
            if r.logsource.covers(source) {
                applicable += 1;
                programs[i] = Some(Node::compile(&r.detection, &mut |f, l, a| {
                    atoms.intern(f, l, a)
                }));
            }
        }
        let mut always = Vec::new();
        let mut full = vec![0u8; rules.len()];
        let mut atom_rules: Vec<Vec<(u32, u8)>> = vec![Vec::new(); atoms.list.len()];
        let weight = |a| atoms.weight(a);
        for (i, p) in programs.iter().enumerate() {
            let Some(p) = p else { continue };
            let clauses = p.clauses(&weight);
            if clauses.is_empty() {
                always.push(i as u32);
                continue;
            }
            full[i] = ((1u16 << clauses.len()) - 1) as u8;
            for (c, clause) in clauses.into_iter().enumerate() {
                for a in clause {
                    atom_rules[a as usize].push((i as u32, c as u8));
                }
            }
        }
        let mut atom_start = Vec::with_capacity(atom_rules.len() + 1);
        let mut flat = Vec::new();
        for pairs in &atom_rules {
            atom_start.push(flat.len() as u32);
            flat.extend(pairs.iter().map(|&(r, c)| r << 3 | u32::from(c)));
        }
        atom_start.push(flat.len() as u32);
        let atom_rules = flat;
        let mut per_field: FxHashMap<String, Vec<(String, Anchor, u32)>> = FxHashMap::default();
        for (id, (field, lit, anchor)) in atoms.list.into_iter().enumerate() {
            per_field
                .entry(field)
                .or_default()
                .push((lit, anchor, id as u32));
        }
        let keywords = per_field.remove(KEYWORDS).map(FieldScan::build);
        let mut fields: Vec<(String, FieldScan)> = per_field
            .into_iter()
            .map(|(f, lits)| (f, FieldScan::build(lits)))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let by_name: FxHashMap<String, u32> = fields
            .iter()
            .enumerate()
            .map(|(i, (f, _))| (f.clone(), i as u32))
            .collect();
        let mut next_memo = 0;
        for (p, r) in programs.iter_mut().zip(rules) {
            if let Some(p) = p {
                p.assign_memos(
                    &r.detection,
                    &|m| m.field.as_ref().and_then(|f| by_name.get(f)).copied(),
                    &mut next_memo,
                );
            }
        }
        Index {
            id: NEXT_INDEX_ID.fetch_add(1, Ordering::Relaxed),
            always,
            fields,
            keywords,
            by_name,
            atom_start,
            atom_rules,
            full,
            programs,
            applicable,
        }
    }

    /// Scans the event's fields and collects candidate rules into `s.candidates`.
    fn scan(&self, event: &dyn Event, s: &mut Scratch) {
        let words = self.atom_start.len().saturating_sub(1).div_ceil(64);
        if s.bits.len() < words {
            s.bits.resize(words, 0);
        }
        if s.mask.len() < self.full.len() {
            s.mask.resize(self.full.len(), 0);
            s.stamp.resize(self.full.len(), 0);
        }
        s.epoch = s.epoch.wrapping_add(1);
        if s.epoch == 0 {
            s.stamp.iter_mut().for_each(|x| *x = 0);
            s.epoch = 1;
        }
        for &h in &s.hits {
            if let Some(w) = s.bits.get_mut(h as usize / 64) {
                *w = 0;
            }
        }
        s.hits.clear();
        s.touched.clear();
        let ci = match s.caches.iter().position(|c| c.index == self.id) {
            Some(i) => i,
            None => {
                if s.caches.len() >= CACHED_INDEXES {
                    s.caches.remove(0);
                }
                s.caches.push(ValueCache {
                    index: self.id,
                    // One row per field, and one for values of fields only keywords read.
                    slots: (0..CACHE_SLOTS).map(|_| CacheSlot::default()).collect(),
                    door: vec![0; (self.fields.len() + 1) * DOOR_BITS / 64],
                    door_set: vec![0; self.fields.len() + 1],
                });
                s.caches.len() - 1
            }
        };
        s.current = ci;
        s.field_slot.clear();
        s.field_slot.resize(self.fields.len(), 0);
        let Scratch {
            field_slot,
            bits,
            hits,
            mask,
            stamp,
            epoch,
            touched,
            buffers,
            found,
            number,
            caches,
            stats,
            no_cache,
            ..
        } = s;
        let cache = &mut caches[ci];
        let mut mark = |a: u32| -> bool {
            let (w, b) = (a as usize / 64, 1u64 << (a % 64));
            let Some(word) = bits.get_mut(w) else {
                return false;
            };
            if *word & b != 0 {
                return false;
            }
            *word |= b;
            hits.push(a);
            let (lo, hi) = match (
                self.atom_start.get(a as usize),
                self.atom_start.get(a as usize + 1),
            ) {
                (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
                _ => (0, 0),
            };
            for &rc in self.atom_rules.get(lo..hi).unwrap_or_default() {
                let (r, c) = (rc >> 3, rc & 7);
                let ri = r as usize;
                if stamp[ri] != *epoch {
                    stamp[ri] = *epoch;
                    mask[ri] = 0;
                    touched.push(r);
                }
                mask[ri] |= 1 << c;
            }
            true
        };
        let keywords = self.keywords.as_ref();
        // One field's value: its own literals (when `fi` names an indexed
        // field) and, with `with_keywords`, the keyword literals (strings and
        // numbers only).
        let mut field = |fi: Option<usize>, value: FieldValue<'_>, with_keywords: bool| {
            let scan = fi.and_then(|i| self.fields.get(i)).map(|(_, s)| s);
            let (text, cacheable): (&str, bool) = match &value {
                FieldValue::Str(t) => (t, true),
                FieldValue::Int(i) => {
                    number.clear();
                    use std::fmt::Write;
                    let _ = write!(number, "{i}");
                    (number, false)
                }
                FieldValue::Bool(b) => (if *b { "true" } else { "false" }, false),
                FieldValue::Null => return,
            };
            let words = keywords.filter(|_| with_keywords && !matches!(value, FieldValue::Bool(_)));
            if scan.is_none() && words.is_none() {
                return;
            }
            let run = |buffers: &mut Buffers, out: &mut dyn FnMut(u32)| {
                buffers.lower(text);
                if let Some(scan) = scan {
                    scan.scan_lower(&buffers.lower, &mut *out);
                }
                if let Some(words) = words {
                    words.scan_lower(&buffers.lower, &mut *out);
                }
            };
            if !cacheable || text.len() > CACHE_MAX_VALUE || *no_cache {
                run(buffers, &mut |a| {
                    mark(a);
                });
                return;
            }
            let mut h = rustc_hash::FxBuildHasher.build_hasher();
            h.write(text.as_bytes());
            let hash = h.finish();
            let row = fi.unwrap_or(self.fields.len());
            let at = (hash ^ (row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as usize
                % CACHE_SLOTS;
            let Some(slot) = cache.slots.get_mut(at) else {
                return;
            };
            // Which slot holds this field's value this event, for residual
            // results; none when the value is not kept, or when the field
            // comes twice in one event (an `Event` may allow it).
            let mut holds = |kept: bool| {
                if let Some(x) = fi.and_then(|i| field_slot.get_mut(i)) {
                    *x = if *x == 0 && kept {
                        at as u32 + 1
                    } else {
                        u32::MAX
                    };
                }
            };
            stats.lookups += 1;
            let with = words.is_some();
            if slot.hash == hash && slot.row == row as u32 && slot.keywords == with {
                let (atoms, value) = slot.split();
                if value == text.as_bytes() {
                    stats.hits += 1;
                    holds(true);
                    for a in atoms.chunks_exact(4) {
                        mark(u32::from_le_bytes([a[0], a[1], a[2], a[3]]));
                    }
                    return;
                }
            }
            found.clear();
            run(buffers, &mut |a| {
                mark(a);
                found.push(a);
            });
            let bit = row * DOOR_BITS + (hash >> 52) as usize % DOOR_BITS;
            let (Some(word), Some(set)) =
                (cache.door.get_mut(bit / 64), cache.door_set.get_mut(row))
            else {
                return;
            };
            if *word & (1 << (bit % 64)) == 0 {
                // First sighting (as far as the door remembers): not kept.
                *word |= 1 << (bit % 64);
                *set += 1;
                if *set as usize >= DOOR_BITS / 2 {
                    *set = 0;
                    let first = row * DOOR_BITS / 64;
                    if let Some(words) = cache.door.get_mut(first..first + DOOR_BITS / 64) {
                        words.fill(0);
                    }
                }
                holds(false);
                return;
            }
            holds(true);
            found.sort_unstable();
            found.dedup();
            slot.hash = hash;
            slot.row = row as u32;
            slot.keywords = with;
            slot.residuals.clear();
            slot.atoms = found.len() as u32;
            slot.data.clear();
            slot.data.reserve(found.len() * 4 + text.len());
            for a in found.iter() {
                slot.data.extend_from_slice(&a.to_le_bytes());
            }
            slot.data.extend_from_slice(text.as_bytes());
        };
        let visited = event.visit_fields(&mut |name, value| {
            let fi = self.by_name.get(name).map(|&i| i as usize);
            field(fi, value, true);
        });
        if !visited {
            for (fi, (name, _)) in self.fields.iter().enumerate() {
                if let Some(v) = event.field(name) {
                    field(Some(fi), v, false);
                }
            }
            if let Some(words) = keywords {
                for v in event.values() {
                    buffers.lower(&v);
                    words.scan_lower(&buffers.lower, |a| {
                        mark(a);
                    });
                }
            }
        }
        s.candidates.clear();
        s.candidates.extend(
            s.touched
                .iter()
                .copied()
                .filter(|&r| s.mask[r as usize] == self.full[r as usize]),
        );
        s.candidates.extend_from_slice(&self.always);
        s.candidates.sort_unstable();
        s.candidates.dedup();
    }

    /// Calls `keep(rule, ctx)` for every rule whose detection matches the event
    /// in `ctx`, in rule order; pushes the rules it accepts to `out`.
    pub(crate) fn matching<'r>(
        &self,
        rules: &'r [Rule],
        ctx: &mut Ctx<'r, '_>,
        out: &mut Vec<usize>,
        mut keep: impl FnMut(&'r Rule, &mut Ctx<'r, '_>) -> bool,
    ) {
        SCRATCH.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                // Re-entered from inside an evaluation (not done by this
                // crate): evaluate without the shared scratch.
                let mut fresh = Scratch::default();
                self.matching_with(&mut fresh, rules, ctx, out, &mut keep);
                return;
            };
            self.matching_with(&mut s, rules, ctx, out, &mut keep);
        });
    }

    fn matching_with<'r>(
        &self,
        s: &mut Scratch,
        rules: &'r [Rule],
        ctx: &mut Ctx<'r, '_>,
        out: &mut Vec<usize>,
        keep: &mut impl FnMut(&'r Rule, &mut Ctx<'r, '_>) -> bool,
    ) {
        self.scan(ctx.event, s);
        let Scratch {
            bits,
            hits,
            caches,
            field_slot,
            current,
            candidates,
            ..
        } = s;
        let mut memo = caches.get_mut(*current).map(|c| SlotMemo {
            slots: &mut c.slots,
            field_slot,
        });
        let mut facts = Facts {
            bits,
            hits,
            memo: memo.as_mut().map(|m| m as &mut dyn Memo),
        };
        for &i in candidates.iter() {
            let i = i as usize;
            let (Some(Some(p)), Some(r)) = (self.programs.get(i), rules.get(i)) else {
                continue;
            };
            if p.eval(&mut facts, &r.detection, ctx) && keep(r, ctx) {
                out.push(i);
            }
        }
    }

    /// Turns this thread's value caches on or off.
    pub(crate) fn use_value_cache(on: bool) {
        SCRATCH.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.no_cache = !on;
            }
        });
    }

    /// This thread's value cache figures so far.
    pub(crate) fn cache_stats() -> CacheStats {
        SCRATCH.with(|s| s.try_borrow().map(|s| s.stats).unwrap_or_default())
    }

    /// The rules the prefilter passes on for `event`.
    pub(crate) fn candidates(&self, event: &dyn Event) -> Vec<u32> {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                self.scan(event, &mut s);
                s.candidates.clone()
            }
            Err(_) => Vec::new(),
        })
    }

    /// Per indexed field: (name, nanoseconds per event spent scanning it).
    pub(crate) fn profile(&self, events: &[&dyn Event]) -> Vec<(String, f64)> {
        let mut buf = Buffers::default();
        let mut out = Vec::new();
        for (name, scan) in &self.fields {
            let values: Vec<String> = events
                .iter()
                .filter_map(|e| e.field(name).map(|v| v.as_text().into_owned()))
                .collect();
            // The best of five rounds: the figure is for comparing changes.
            let mut n = 0usize;
            let mut ns = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                n = 0;
                for _ in 0..4 {
                    for v in &values {
                        scan.scan(v, &mut buf, |_| n += 1);
                    }
                }
                ns = ns.min(t.elapsed().as_secs_f64() * 1e9 / (4.0 * events.len().max(1) as f64));
            }
            n *= 10;
            n /= 4;
            let mut pairs = 0usize;
            let mut worst: Vec<(usize, u32)> = Vec::new();
            for v in &values {
                let mut seen = Vec::new();
                scan.scan(v, &mut buf, |a| seen.push(a));
                seen.sort_unstable();
                seen.dedup();
                for a in seen {
                    let k =
                        (self.atom_start[a as usize + 1] - self.atom_start[a as usize]) as usize;
                    pairs += k;
                    worst.push((k, a));
                }
            }
            worst.sort_unstable();
            worst.dedup();
            let top: Vec<String> = worst
                .iter()
                .rev()
                .take(3)
                .map(|(k, a)| format!("atom {a}: {k} rules"))
                .collect();
            out.push((
                format!(
                    "{name} [{}] ({} hits, {:.1} rule marks/event; {})",
                    scan.describe(),
                    n / 10,
                    pairs as f64 / events.len().max(1) as f64,
                    top.join(", ")
                ),
                ns,
            ));
        }
        out
    }

    pub(crate) fn unconditional(&self) -> usize {
        self.always.len()
    }

    pub(crate) fn unconditional_rules(&self) -> &[u32] {
        &self.always
    }
}
