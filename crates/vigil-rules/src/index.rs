//! All rules of one log source compiled into one matcher.
//!
//! Every literal any applicable rule uses is an *atom*: (field, lower-cased
//! literal, anchor). Per field, one [`FieldScan`] finds which atoms a value
//! satisfies; each field of the event is read, lower-cased and scanned once.
//! Atoms then do two jobs:
//! - the prefilter: each rule keeps up to four clauses (see
//!   [`Node::clauses`]), each a set of atoms one of which any matching event
//!   has. An event fills one bitset per clause position over the rules; a
//!   rule is a candidate where all its clause bits are set, or when it has no
//!   clause at all;
//! - evaluation: a candidate's [`Node`] tree is decided from the atom bits,
//!   reading the event again only for entries literals cannot decide.
//!
//! Each thread keeps, per index, a bounded cache of recurring field values
//! (a value is kept on its second sighting). A kept value holds its atoms, the
//! clause bits it sets for rules over several fields, and the *verdicts* of
//! the rules that read only its field (such a rule is a function of that one
//! value, so it is evaluated once, by the event that filled the slot). A rule
//! over several fields has its verdict remembered too, keyed by the fill
//! numbers of the values it reads (a fill number names one value, byte for
//! byte). A value seen before is thus a hash and a byte-for-byte compare,
//! not a search, and its rules are not evaluated again. Keyword atoms are
//! searched in every string and number value of the event.
//!
//! Cost grows with what the event contains and what it matches, not with the
//! number of rules.

use crate::eval::Ctx;
use crate::event::{Event, FieldValue};
use crate::event::{RawValue, utf8};
use crate::grams::same_bytes;
use crate::logsource::LogSource;
use crate::pattern::Anchor;
use crate::program::{Facts, KEYWORDS, Memo, Node};
use crate::rule::Rule;
use crate::scan::{Buffers, FieldScan, REUSE_SPAN, Reuse};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Values remembered (all fields of an index together) with the atoms they
/// satisfy: fields with few values take few slots, command lines the rest.
const CACHE_SLOTS: usize = 16384;
/// Longer values are scanned every time (and not kept).
const CACHE_MAX_VALUE: usize = 512;
/// Values this long or longer are searched taking what they share with the
/// last one of their field that began with the same bytes.
const REUSE_FROM_LEN: usize = 64;
/// Such last values remembered per index.
const REUSE_ENTRIES: usize = 64;
/// Indexes (log sources, rule sets) a thread keeps caches for.
const CACHED_INDEXES: usize = 4;

static NEXT_INDEX_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub(crate) struct Index {
    /// Distinguishes this index's value caches from other indexes' on a thread.
    id: u64,
    /// Rules over several fields with no derivable clause: always evaluated.
    always: Vec<u32>,
    /// Per rule: 1 + the row of the one field it reads (0: it reads more).
    /// Such a rule is a function of that field's value: its verdict is kept
    /// with the cached value (see [`CacheSlot::verdicts`]).
    single: Vec<u32>,
    /// Per row: its single-field rules, and those of them with no clause
    /// (evaluated when the row's value does not come from the cache).
    row_rules: Vec<Vec<u32>>,
    row_always: Vec<Vec<u32>>,
    /// Per row: the single-field rules that match when the field is absent.
    row_absent: Vec<Vec<u32>>,
    /// Rows with rules in `row_always` or `row_absent`.
    rows_checked: Vec<u32>,
    /// Per rule over several fields: the rows it reads, when they are all
    /// indexed fields and at most [`MEMO_FIELDS`]; its verdict is then a
    /// function of those values, remembered by their slots' fill numbers
    /// (see [`RuleMemo`]).
    /// In place: no pointer to follow per candidate.
    reads: Vec<ReadRows>,
    /// Per rule: the rows whose atoms its evaluation reads (`None`: every
    /// row, as keywords are searched in all values). A found value's atoms
    /// are set only when a rule reading its row is evaluated.
    atom_rows: Vec<Option<Box<[u32]>>>,
    /// Field name → its scan.
    fields: Vec<(String, FieldScan)>,
    /// Keyword literals, searched in every string and number value.
    keywords: Option<FieldScan>,
    by_name: FxHashMap<String, u32>,
    /// Rules with clauses, numbered densely (local id → rule): the clause
    /// sets of an event are bitsets over local ids.
    local_rules: Vec<u32>,
    /// 64-bit words per clause set, and clause sets (the most clauses a rule has).
    words: usize,
    clause_sets: usize,
    /// Per clause set and word: rules without that clause (it holds vacuously).
    missing: Vec<u64>,
    /// Per word: local ids in use.
    live: Vec<u64>,
    /// Per word: rules over several fields (their clause bits are kept with a value).
    multi: Vec<u64>,
    /// Atom `a` sets the clause bits `atom_marks[atom_start[a]..atom_start[a + 1]]`;
    /// one array, so a hit reads one run.
    atom_start: Vec<u32>,
    atom_marks: Vec<ClauseBits>,
    /// Per rule: its compiled detection, when it applies to the source.
    programs: Vec<Option<Node>>,
    /// How many rules apply to the source at all.
    pub(crate) applicable: usize,
}

/// One remembered value of a field and what it decides.
#[derive(Default)]
struct CacheSlot {
    hash: u64,
    /// The field (row) the value belongs to.
    row: u32,
    /// Whether the atoms include keyword literals.
    keywords: bool,
    /// Whether `verdicts` is known (set after the event that filled the slot).
    ready: bool,
    /// The cache's fill number when this value took the slot: names the
    /// value (never reused while it could be remembered; see [`RuleMemo`]).
    fill: u32,
    /// The epoch (event) it was last found or filled in: a new value takes
    /// the way of its set found least recently.
    used: u32,
    /// How many bytes of `data` are the value, and how many atoms end it.
    value_len: u32,
    atoms: u32,
    /// The value, the clause bits of rules over several fields
    /// ([`CLAUSE_BITS_BYTES`] each), then the atoms (4 bytes each,
    /// little-endian): one block, read forward by a hit (compare, then
    /// clause bits; the atoms only when a rule is evaluated).
    data: Vec<u8>,
    /// The single-field rules of this row the value matches.
    verdicts: Vec<u32>,
    /// Results of residual entries on this value: (memo id, result).
    residuals: Vec<(u32, bool)>,
}

impl CacheSlot {
    /// Sets the atoms of the value it holds.
    fn set_atoms(&self, marks: &mut Marks<'_>) {
        let from = self.data.len().saturating_sub(self.atoms as usize * 4);
        for a in u32s(self.data.get(from..).unwrap_or_default()) {
            marks.atom(a);
        }
    }

    /// The clause bits it sets, in their [`ClauseBits::write`] form.
    #[inline(always)]
    fn clause_bytes(&self) -> &[u8] {
        let end = self.data.len().saturating_sub(self.atoms as usize * 4);
        self.data
            .get(self.value_len as usize..end)
            .unwrap_or_default()
    }

    /// The value it holds.
    #[inline(always)]
    fn value(&self) -> &[u8] {
        self.data.get(..self.value_len as usize).unwrap_or_default()
    }
}

fn u32s(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|a| u32::from_le_bytes([a[0], a[1], a[2], a[3]]))
}

/// Recent values of each field of one index, in sets of [`WAYS`] slots
/// chosen by hash: event streams repeat the same images, users, parents and
/// command lines, and a remembered value costs a hash and a compare instead
/// of a scan. Bounded: a new value takes the place of its set's least
/// recently found one.
struct ValueCache {
    index: u64,
    /// `CACHE_SLOTS` slots, shared by all fields (a slot records its field).
    slots: Vec<CacheSlot>,
    /// Per row, `DOOR_BITS` bits: values seen once. A value takes a slot only
    /// when seen a second time, so values that never come back (a command
    /// line with a fresh GUID) do not push out the ones that do.
    door: Vec<u64>,
    /// Per row: values taken since the row's door was last cleared.
    door_set: Vec<u32>,
    /// The last fill number given.
    fills: u32,
    /// The last long values searched, by field and first bytes (see
    /// [`FieldScan::scan_lower_reusing`]).
    reuse: Vec<Reuse<TakenMarks>>,
    /// Verdicts of rules over several fields, in buckets of [`MEMO_WAYS`]
    /// (see [`Index::verdict_key`]), the newest first.
    rule_memo: Vec<RuleMemo>,
}

/// Field names remembered per event (see `Scratch::names`).
const MAX_REMEMBERED_NAMES: usize = 64;

/// Most fields a rule may read for its verdict to be remembered.
const MEMO_FIELDS: usize = 6;
/// Verdicts remembered per index.
const RULE_MEMO_SLOTS: usize = 16384;
/// Verdicts per bucket of the table (see [`Index::verdict_key`]).
const MEMO_WAYS: usize = 8;
/// A row's fill number when its value cannot name it (not kept, not a
/// string, or the field came twice); 0 is an absent field.
const NO_FILL: u32 = u32::MAX;

/// A rule's verdict on the values (named by fill numbers, 0 for absent) of
/// the fields it reads: a rule is a function of those values, and a fill
/// number names one value byte for byte.
#[derive(Clone, Copy)]
struct RuleMemo {
    rule: u32,
    fills: [u32; MEMO_FIELDS],
    verdict: bool,
}

impl Default for RuleMemo {
    fn default() -> Self {
        RuleMemo {
            rule: u32::MAX,
            fills: [0; MEMO_FIELDS],
            verdict: false,
        }
    }
}

impl ValueCache {
    fn new(index: u64, rows: usize) -> ValueCache {
        ValueCache {
            index,
            slots: (0..CACHE_SLOTS).map(|_| CacheSlot::default()).collect(),
            door: vec![0; rows * DOOR_BITS / 64],
            door_set: vec![0; rows],
            fills: 0,
            rule_memo: vec![RuleMemo::default(); RULE_MEMO_SLOTS],
            reuse: (0..REUSE_ENTRIES).map(|_| Reuse::default()).collect(),
        }
    }

    /// A new fill number; when they run out, everything remembered is
    /// forgotten first (and `false` says numbers given earlier this event
    /// no longer name their values).
    fn next_fill(&mut self) -> (u32, bool) {
        if self.fills + 1 < NO_FILL {
            self.fills += 1;
            return (self.fills, true);
        }
        for s in &mut self.slots {
            s.ready = false;
            s.hash = 0;
            s.fill = 0;
        }
        self.rule_memo.fill(RuleMemo::default());
        self.fills = 1;
        (1, false)
    }
}

/// Bits of one word of one clause set: clause `c` of the rules with local
/// ids `64 * w ..` holds where `bits` are set; `at = w * clause sets + c`.
#[derive(Debug, Clone, Copy)]
struct ClauseBits {
    at: u32,
    bits: u64,
}

/// Bytes a [`ClauseBits`] takes in a cache slot.
const CLAUSE_BITS_BYTES: usize = 12;

impl ClauseBits {
    /// One entry per clause set word, its bits the union of those given for it.
    fn merge(marks: &mut Vec<ClauseBits>) {
        marks.sort_unstable_by_key(|cb| cb.at);
        marks.dedup_by(|b, a| {
            let same = a.at == b.at;
            if same {
                a.bits |= b.bits;
            }
            same
        });
    }

    /// Its form in a cache slot (little-endian `at`, then `bits`).
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.at.to_le_bytes());
        out.extend_from_slice(&self.bits.to_le_bytes());
    }

    /// Back from [`ClauseBits::write`]'s form.
    #[inline(always)]
    fn read(b: &[u8; CLAUSE_BITS_BYTES]) -> ClauseBits {
        let [a0, a1, a2, a3, b0, b1, b2, b3, b4, b5, b6, b7] = *b;
        ClauseBits {
            at: u32::from_le_bytes([a0, a1, a2, a3]),
            bits: u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        }
    }
}

/// The rows a rule's verdict is keyed by (see [`Index::reads`]).
#[derive(Debug, Clone, Copy, Default)]
struct ReadRows {
    keyed: bool,
    len: u8,
    rows: [u32; MEMO_FIELDS],
}

impl ReadRows {
    /// `None` past [`MEMO_FIELDS`] rows.
    fn new(rows: &[u32]) -> Option<ReadRows> {
        let mut out = ReadRows {
            keyed: true,
            len: u8::try_from(rows.len()).ok()?,
            rows: [0; MEMO_FIELDS],
        };
        out.rows.get_mut(..rows.len())?.copy_from_slice(rows);
        Some(out)
    }

    fn rows(&self) -> Option<&[u32]> {
        self.rows
            .get(..usize::from(self.len))
            .filter(|_| self.keyed)
    }
}

/// Slots per set of a value cache.
const WAYS: usize = 4;
/// Values a row's door remembers before it is cleared: as many as the
/// cache holds (a TinyLFU doorkeeper's size), so a value that comes back
/// within that many others of its field is taken on its second sighting.
const DOOR_VALUES: usize = CACHE_SLOTS;
/// Bits per row of a cache's door: two per value, a quarter set at most,
/// so a new value passes for one seen before rarely (about 1 in 16 when full).
const DOOR_BITS: usize = DOOR_VALUES * 8;
const _: () = assert!(DOOR_BITS.is_power_of_two() && 2 * DOOR_BITS.trailing_zeros() <= 48);

/// The hash a value is kept under.
fn value_hash(text: &[u8]) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(text);
    h.finish()
}

/// The set (slots `WAYS * set ..` `WAYS * set + WAYS`) of a value of
/// `row`: several ways, so recurring values that hash alike all stay.
fn set_of(hash: u64, row: usize) -> usize {
    (hash ^ (row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as usize % (CACHE_SLOTS / WAYS)
}

/// How one row's value came in the current event.
#[derive(Clone, Copy, Default)]
struct RowState {
    /// The epoch (event) it was last seen in: the rest is about that event.
    seen: u32,
    how: Seen,
    /// Its cache slot plus one (0 or `u32::MAX`: none).
    slot: u32,
    /// Its fill number ([`NO_FILL`]: not nameable).
    fill: u32,
}

impl RowState {
    /// Records how row `fi`'s value came this event (for its single-field
    /// rules), and the slot and fill number that hold it, if kept (for
    /// residual results and rule verdicts); a row that comes twice has neither.
    #[inline(always)]
    fn came(
        rows: &mut [RowState],
        dups: &mut Vec<u32>,
        fi: Option<usize>,
        epoch: u32,
        how: Seen,
        kept: Option<(usize, u32)>,
    ) {
        let Some((i, r)) = fi.and_then(|i| Some((i, rows.get_mut(i)?))) else {
            return;
        };
        let twice = r.seen == epoch;
        if twice {
            dups.push(i as u32);
        }
        let (slot, fill) = match kept {
            Some((at, f)) if !twice => (at as u32 + 1, f),
            _ => (u32::MAX, NO_FILL),
        };
        *r = RowState {
            seen: epoch,
            how,
            slot,
            fill,
        };
    }
}

/// What a search found: an atom, or the atoms taken from the last value of
/// the field (see [`FieldScan::scan_lower_reusing`]) with the clause bits
/// they set, as made for the last value that took them.
enum Hit<'a> {
    Atom(u32),
    Taken(&'a [u32], &'a mut TakenMarks),
}

/// The clause bits of a set of atoms taken from the last value of a field,
/// merged (by [`Marks::taken`]): values of one shape take the same atoms, so
/// they are looked up once, not per atom and value.
#[derive(Default)]
struct TakenMarks {
    atoms: Vec<u32>,
    marks: Vec<ClauseBits>,
}

/// Lower-cases `text` and calls `out` with the atoms of the field's own
/// literals (`scan`) and of the keyword literals (`words`) it holds.
#[inline(always)]
fn search(
    buffers: &mut Buffers,
    text: &str,
    scan: Option<&FieldScan>,
    words: Option<&FieldScan>,
    reuse: Option<(&mut [Reuse<TakenMarks>], usize)>,
    mut out: impl FnMut(Hit<'_>),
) {
    buffers.lower(text);
    if let Some(scan) = scan {
        match reuse {
            // A long value: the last one of its field that began alike may
            // share most of it (see `FieldScan::scan_lower_reusing`).
            Some((table, row)) if buffers.lower.len() >= REUSE_FROM_LEN && !table.is_empty() => {
                let mut h = rustc_hash::FxBuildHasher.build_hasher();
                h.write_usize(row);
                h.write(buffers.lower.get(..REUSE_SPAN).unwrap_or_default());
                let key = h.finish();
                let len = table.len();
                if let Some(last) = table.get_mut(key as usize % len) {
                    // The field is checked, not only hashed: literal ids
                    // of another field's scan must never be taken.
                    last.claim(row, key);
                    let (taken, memo) =
                        scan.scan_lower_reusing(&buffers.lower, last, |a| out(Hit::Atom(a)));
                    out(Hit::Taken(taken, memo));
                }
            }
            _ => scan.scan_lower(&buffers.lower, |a| out(Hit::Atom(a))),
        }
    }
    if let Some(words) = words {
        words.scan_lower(&buffers.lower, |a| out(Hit::Atom(a)));
    }
}

/// What [`FieldPass::lookup`] found.
enum Lookup {
    /// The value is in the cache (and now counts for the event).
    Found,
    /// It is not, and hashes to this.
    Missed(u64),
    /// Values like it are not kept (too long, caches off, or nothing to search).
    NotKept,
}

/// One event's pass over its field values (see [`Index::scan`]).
struct FieldPass<'a> {
    index: &'a Index,
    keywords: Option<&'a FieldScan>,
    cache: &'a mut ValueCache,
    marks: Marks<'a>,
    rows: &'a mut [RowState],
    dups: &'a mut Vec<u32>,
    pending: &'a mut Vec<(u32, u32, u64)>,
    slot_marks: &'a mut Vec<ClauseBits>,
    lazy: &'a mut Vec<u32>,
    buffers: &'a mut Buffers,
    found: &'a mut Vec<u32>,
    candidates: &'a mut Vec<u32>,
    stats: &'a mut CacheStats,
    no_cache: bool,
    epoch: u32,
    /// Fill numbers ran out and restarted during this event.
    restarted: bool,
}

impl FieldPass<'_> {
    /// Whether a string value this long is looked for in (and kept in) the value cache.
    #[inline(always)]
    fn keeps(&self, len: usize) -> bool {
        len <= CACHE_MAX_VALUE && !self.no_cache
    }

    #[inline(always)]
    fn came(&mut self, fi: Option<usize>, how: Seen, kept: Option<(usize, u32)>) {
        RowState::came(self.rows, self.dups, fi, self.epoch, how, kept);
    }

    /// Looks a string value of field `fi` (`None`: a field only keywords
    /// read) up in the value cache; when it is there, its clause bits and
    /// verdicts count for the event.
    #[inline(always)]
    fn lookup(&mut self, fi: Option<usize>, text: &[u8], with_keywords: bool) -> Lookup {
        let with = with_keywords && self.keywords.is_some();
        if (fi.is_none() && !with) || !self.keeps(text.len()) {
            return Lookup::NotKept;
        }
        let hash = value_hash(text);
        let row = fi.unwrap_or(self.index.fields.len());
        let set = set_of(hash, row);
        self.stats.lookups += 1;
        let Some(ways) = self.cache.slots.get_mut(WAYS * set..WAYS * set + WAYS) else {
            return Lookup::Missed(hash);
        };
        let mut way = WAYS;
        for (w, slot) in ways.iter().enumerate() {
            if slot.hash == hash
                && slot.ready
                && slot.row == row as u32
                && slot.keywords == with
                && same_bytes(slot.value(), text)
            {
                way = w;
                break;
            }
        }
        let Some(slot) = ways.get_mut(way) else {
            return Lookup::Missed(hash);
        };
        let at = WAYS * set + way;
        slot.used = self.epoch;
        self.stats.hits += 1;
        let fill = slot.fill;
        for cb in slot.clause_bytes().as_chunks::<CLAUSE_BITS_BYTES>().0 {
            self.marks.clauses(ClauseBits::read(cb));
        }
        self.candidates
            .extend(slot.verdicts.iter().map(|&r| r << 1 | 1));
        self.lazy.push(at as u32);
        self.came(fi, Seen::Cached, Some((at, fill)));
        Lookup::Found
    }

    /// One field's value: its own literals (when `fi` names an indexed
    /// field) and, with `with_keywords`, the keyword literals (strings and
    /// numbers only); from the value cache when it is there (`missed`: it
    /// was just looked for there and not found, under this hash).
    fn value(
        &mut self,
        fi: Option<usize>,
        value: FieldValue<'_>,
        with_keywords: bool,
        missed: Option<u64>,
    ) {
        let index = self.index;
        let scan = fi.and_then(|i| index.fields.get(i)).map(|(_, s)| s);
        // An integer as decimal text, without allocating.
        let mut digits = [0u8; 24];
        let (text, cacheable): (&str, bool) = match &value {
            FieldValue::Str(t) => (t, true),
            FieldValue::Int(i) => {
                use std::io::Write;
                let mut out = &mut digits[..];
                let _ = write!(out, "{i}");
                let len = 24 - out.len();
                (
                    std::str::from_utf8(&digits[..len]).unwrap_or_default(),
                    false,
                )
            }
            FieldValue::Bool(b) => (if *b { "true" } else { "false" }, false),
            FieldValue::Null => {
                self.came(fi, Seen::Searched, None);
                return;
            }
        };
        let words = self
            .keywords
            .filter(|_| with_keywords && !matches!(value, FieldValue::Bool(_)));
        if scan.is_none() && words.is_none() {
            self.came(fi, Seen::Searched, None);
            return;
        }
        if !cacheable || !self.keeps(text.len()) {
            self.came(fi, Seen::Searched, None);
            let marks = &mut self.marks;
            search(self.buffers, text, scan, words, None, |hit| match hit {
                Hit::Atom(a) => marks.atom_and_rules(a),
                Hit::Taken(atoms, memo) => marks.taken(atoms, memo),
            });
            return;
        }
        let hash = match missed {
            Some(hash) => hash,
            None => match self.lookup(fi, text.as_bytes(), with_keywords) {
                Lookup::Found => return,
                Lookup::Missed(hash) => hash,
                Lookup::NotKept => value_hash(text.as_bytes()),
            },
        };
        let with = words.is_some();
        let row = fi.unwrap_or(index.fields.len());
        let set = set_of(hash, row);
        let epoch = self.epoch;
        let cache = &mut *self.cache;
        // The way a new value takes: the one found least recently.
        let at = (WAYS * set..WAYS * set + WAYS)
            .max_by_key(|&at| {
                cache
                    .slots
                    .get(at)
                    .map_or(0, |s| epoch.wrapping_sub(s.used))
            })
            .unwrap_or(WAYS * set);
        let (marks, found) = (&mut self.marks, &mut *self.found);
        found.clear();
        let reuse = Some((&mut cache.reuse[..], row));
        search(self.buffers, text, scan, words, reuse, |hit| match hit {
            Hit::Atom(a) => {
                marks.atom_and_rules(a);
                found.push(a);
            }
            Hit::Taken(atoms, memo) => {
                marks.taken(atoms, memo);
                found.extend_from_slice(atoms);
            }
        });
        // Two bits per value, from the hash's top bits (its low ones choose
        // the cache set): a value never seen passes for seen only when
        // others set both.
        let width = DOOR_BITS.trailing_zeros();
        let bits = [hash >> (64 - width), hash >> (64 - 2 * width)]
            .map(|b| row * DOOR_BITS + b as usize % DOOR_BITS);
        let has = |b: usize| {
            cache
                .door
                .get(b / 64)
                .is_some_and(|w| w & (1 << (b % 64)) != 0)
        };
        if !bits.iter().all(|&b| has(b)) {
            // First sighting (as far as the door remembers): not kept.
            for b in bits {
                if let Some(w) = cache.door.get_mut(b / 64) {
                    *w |= 1 << (b % 64);
                }
            }
            if let Some(set) = cache.door_set.get_mut(row) {
                *set += 1;
                if *set as usize >= DOOR_VALUES {
                    *set = 0;
                    let first = row * DOOR_BITS / 64;
                    if let Some(words) = cache.door.get_mut(first..first + DOOR_BITS / 64) {
                        words.fill(0);
                    }
                }
            }
            self.came(fi, Seen::Searched, None);
            return;
        }
        found.sort_unstable();
        found.dedup();
        // The clause bits of rules over several fields; single-field rules
        // are decided once, by this event, and kept as verdicts.
        let slot_marks = &mut *self.slot_marks;
        slot_marks.clear();
        for &a in found.iter() {
            for &cb in index.marks_of(a) {
                let w = cb.at as usize / index.clause_sets.max(1);
                let bits = cb.bits & index.multi.get(w).copied().unwrap_or(0);
                if bits != 0 {
                    slot_marks.push(ClauseBits { at: cb.at, bits });
                }
            }
        }
        ClauseBits::merge(slot_marks);
        let (fill, still) = cache.next_fill();
        if !still {
            self.restarted = true;
        }
        let Some(slot) = cache.slots.get_mut(at) else {
            return;
        };
        // A value found earlier this event gives up its slot: its atoms first.
        if let Some(k) = self.lazy.iter().position(|&l| l as usize == at) {
            self.lazy.swap_remove(k);
            slot.set_atoms(marks);
        }
        slot.fill = fill;
        slot.used = epoch;
        slot.hash = hash;
        slot.row = row as u32;
        slot.keywords = with;
        slot.residuals.clear();
        slot.verdicts.clear();
        slot.atoms = found.len() as u32;
        slot.data.clear();
        slot.data
            .reserve(found.len() * 4 + slot_marks.len() * CLAUSE_BITS_BYTES + text.len());
        slot.data.extend_from_slice(text.as_bytes());
        slot.value_len = text.len() as u32;
        for cb in slot_marks.iter() {
            cb.write(&mut slot.data);
        }
        for a in found.iter() {
            slot.data.extend_from_slice(&a.to_le_bytes());
        }
        // A row without single-field rules has no verdicts to wait for.
        slot.ready = index.row_rules.get(row).is_none_or(Vec::is_empty);
        if !slot.ready {
            self.pending.push((row as u32, at as u32, hash));
        }
        self.came(fi, Seen::Searched, Some((at, fill)));
    }
}

/// Residual results kept with the cached values of this event's fields.
struct SlotMemo<'a> {
    slots: &'a mut [CacheSlot],
    rows: &'a [RowState],
    epoch: u32,
}

impl SlotMemo<'_> {
    fn slot(&self, field: u32) -> Option<usize> {
        match self.rows.get(field as usize) {
            Some(r) if r.seen == self.epoch && r.slot > 0 => Some(r.slot as usize - 1),
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
    /// Candidates decided by a value's verdicts or the verdict memo, and
    /// those evaluated (with and without a memo key).
    pub remembered: u64,
    pub evaluated_keyed: u64,
    pub evaluated_unkeyed: u64,
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
    /// The event's clause sets (see [`Index::local_rules`]).
    sets: Vec<u64>,
    epoch: u32,
    /// `rule << 1 | decided`: decided rules are known to match (a cached
    /// verdict); the others are evaluated.
    candidates: Vec<u32>,
    /// Per row: how its value came (valid for the epoch it names).
    rows: Vec<RowState>,
    /// Rows that came twice in this event.
    dups: Vec<u32>,
    /// Slots filled this event, awaiting their verdicts: (row, slot, hash).
    pending: Vec<(u32, u32, u64)>,
    /// Single-field rules that matched this event (for `pending`).
    single_true: Vec<u32>,
    /// The clause bits of the value being kept, for its cache slot.
    slot_marks: Vec<ClauseBits>,
    /// Slots found this event whose atoms are not set yet: atoms only serve
    /// evaluation, and a recurring event's verdicts are mostly remembered.
    lazy: Vec<u32>,
    /// Per candidate: its verdict this event.
    verdicts: Vec<Verdict>,
    /// The field names of the last event (of index `names_of`), in order,
    /// with their rows: events of one source list their fields in the same
    /// order, so a name is compared with the last event's at its place
    /// before it is hashed.
    names_of: u64,
    names: Vec<(u32, u32, u32)>,
    names_text: String,
    buffers: Buffers,
    /// The atoms of the value being scanned, for its cache slot.
    found: Vec<u32>,
    /// Which index's caches the current event uses.
    current: usize,
}

/// A candidate rule's verdict on the event.
#[derive(Clone, Copy)]
enum Verdict {
    Yes,
    No,
    /// Not known yet: evaluate, and remember under this key (see [`Index::verdict_key`]).
    Eval(Option<(usize, [u32; MEMO_FIELDS])>),
}

/// How a row's value came this event.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Seen {
    /// From a cache slot with its verdicts.
    #[default]
    Cached,
    /// Searched (or null, or not a string): its rules are evaluated.
    Searched,
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

/// Setting atom bits and clause bits for one event.
struct Marks<'a> {
    index: &'a Index,
    bits: &'a mut [u64],
    hits: &'a mut Vec<u32>,
    sets: &'a mut [u64],
}

impl Marks<'_> {
    /// Sets atom `a`; false when it was set already.
    #[inline(always)]
    fn atom(&mut self, a: u32) -> bool {
        let (w, b) = (a as usize / 64, 1u64 << (a % 64));
        let Some(word) = self.bits.get_mut(w) else {
            return false;
        };
        if *word & b != 0 {
            return false;
        }
        *word |= b;
        self.hits.push(a);
        true
    }

    #[inline(always)]
    fn clauses(&mut self, cb: ClauseBits) {
        if let Some(w) = self.sets.get_mut(cb.at as usize) {
            *w |= cb.bits;
        }
    }

    /// Sets `atoms` and the clauses they satisfy, as [`Marks::atom_and_rules`]
    /// of each does; their clause bits come merged from `memo`, made again
    /// only when the atoms differ from those it was made for.
    fn taken(&mut self, atoms: &[u32], memo: &mut TakenMarks) {
        if memo.atoms != atoms {
            memo.atoms.clear();
            memo.atoms.extend_from_slice(atoms);
            memo.marks.clear();
            for &a in atoms {
                memo.marks.extend_from_slice(self.index.marks_of(a));
            }
            ClauseBits::merge(&mut memo.marks);
        }
        for &a in atoms {
            self.atom(a);
        }
        for &cb in &memo.marks {
            self.clauses(cb);
        }
    }

    /// Sets atom `a` and the clauses it satisfies.
    fn atom_and_rules(&mut self, a: u32) {
        if self.atom(a) {
            let index = self.index;
            for &cb in index.marks_of(a) {
                self.clauses(cb);
            }
        }
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
        let mut no_clause = Vec::new();
        let weight = |a| atoms.weight(a);
        // (local id, clauses) of every rule with clauses.
        let mut local_rules = Vec::new();
        let mut local_clauses = Vec::new();
        for (i, p) in programs.iter().enumerate() {
            let Some(p) = p else { continue };
            let clauses = p.clauses(&weight);
            if clauses.is_empty() {
                no_clause.push(i as u32);
                continue;
            }
            local_rules.push(i as u32);
            local_clauses.push(clauses);
        }
        let words = local_rules.len().div_ceil(64).max(1);
        let clause_sets = local_clauses.iter().map(Vec::len).max().unwrap_or(0);
        let mut missing = vec![0u64; clause_sets * words];
        let mut live = vec![0u64; words];
        let mut per_atom: Vec<Vec<(u32, u64)>> = vec![Vec::new(); atoms.list.len()];
        for (l, clauses) in local_clauses.iter().enumerate() {
            let (w, bit) = (l / 64, 1u64 << (l % 64));
            live[w] |= bit;
            for c in clauses.len()..clause_sets {
                missing[w * clause_sets + c] |= bit;
            }
            for (c, clause) in clauses.iter().enumerate() {
                for &a in clause {
                    per_atom[a as usize].push(((w * clause_sets + c) as u32, bit));
                }
            }
        }
        let mut atom_start = Vec::with_capacity(per_atom.len() + 1);
        let mut atom_marks: Vec<ClauseBits> = Vec::new();
        for mut pairs in per_atom {
            let first = atom_marks.len();
            atom_start.push(first as u32);
            pairs.sort_unstable_by_key(|p| p.0);
            for (at, bit) in pairs {
                match atom_marks
                    .get_mut(first..)
                    .and_then(<[ClauseBits]>::last_mut)
                {
                    Some(last) if last.at == at => last.bits |= bit,
                    _ => atom_marks.push(ClauseBits { at, bits: bit }),
                }
            }
        }
        atom_start.push(atom_marks.len() as u32);
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
        // Rules of one (indexed) field, and what they decide when it is absent.
        let rows = fields.len() + 1;
        let mut single = vec![0u32; rules.len()];
        let (mut row_rules, mut row_always, mut row_absent) = (
            vec![Vec::new(); rows],
            vec![Vec::new(); rows],
            vec![Vec::new(); rows],
        );
        let empty = crate::event::FlatEvent::new();
        for (i, (p, r)) in programs.iter().zip(rules).enumerate() {
            let Some(p) = p else { continue };
            let Some(&row) = r.detection.single_field().and_then(|f| by_name.get(f)) else {
                continue;
            };
            single[i] = row + 1;
            row_rules[row as usize].push(i as u32);
            let mut facts = Facts {
                bits: &[],
                memo: None,
            };
            if p.eval(&mut facts, &r.detection, &mut Ctx::new(&empty)) {
                row_absent[row as usize].push(i as u32);
            }
        }
        let mut multi = vec![0u64; words];
        for (l, &i) in local_rules.iter().enumerate() {
            if single[i as usize] == 0 {
                multi[l / 64] |= 1 << (l % 64);
            }
        }
        let mut always = Vec::new();
        for i in no_clause {
            match single[i as usize] {
                0 => always.push(i),
                row => row_always[row as usize - 1].push(i),
            }
        }
        // Per rule: the indexed rows it reads (fields without literals have
        // no atoms to set), and whether those are all the fields it reads.
        let read_rows: Vec<Option<(Box<[u32]>, bool)>> = programs
            .iter()
            .zip(rules)
            .map(|(p, r)| {
                p.as_ref()?;
                let fields = r.detection.fields_read()?;
                let rows: Box<[u32]> = fields
                    .iter()
                    .filter_map(|f| by_name.get(*f).copied())
                    .collect();
                let all = rows.len() == fields.len();
                Some((rows, all))
            })
            .collect();
        let reads = read_rows
            .iter()
            .zip(&single)
            .map(|(read, &single)| {
                read.as_ref()
                    .filter(|(_, all)| single == 0 && *all)
                    .and_then(|(rows, _)| ReadRows::new(rows))
                    .unwrap_or_default()
            })
            .collect();
        let atom_rows = read_rows
            .into_iter()
            .map(|read| read.map(|(rows, _)| rows))
            .collect();
        let rows_checked = (0..rows as u32)
            .filter(|&r| !row_always[r as usize].is_empty() || !row_absent[r as usize].is_empty())
            .collect();
        Index {
            id: NEXT_INDEX_ID.fetch_add(1, Ordering::Relaxed),
            always,
            single,
            row_rules,
            row_always,
            row_absent,
            rows_checked,
            reads,
            atom_rows,
            fields,
            keywords,
            by_name,
            local_rules,
            words,
            clause_sets,
            missing,
            live,
            multi,
            atom_start,
            atom_marks,
            programs,
            applicable,
        }
    }

    /// Scans the event's fields and collects candidate rules into `s.candidates`.
    fn scan(&self, event: &dyn Event, s: &mut Scratch) {
        let words_needed = self.atom_start.len().saturating_sub(1).div_ceil(64);
        if s.bits.len() < words_needed {
            s.bits.resize(words_needed, 0);
        }
        s.sets.clear();
        s.sets.resize(self.clause_sets * self.words, 0);
        let rows = self.fields.len() + 1;
        if s.rows.len() < rows {
            s.rows.resize(rows, RowState::default());
        }
        s.epoch = s.epoch.wrapping_add(1);
        if s.epoch == 0 {
            s.rows.iter_mut().for_each(|x| x.seen = 0);
            s.epoch = 1;
        }
        for &h in &s.hits {
            if let Some(w) = s.bits.get_mut(h as usize / 64) {
                *w = 0;
            }
        }
        s.hits.clear();
        s.candidates.clear();
        s.dups.clear();
        s.pending.clear();
        s.lazy.clear();
        let ci = match s.caches.iter().position(|c| c.index == self.id) {
            Some(i) => i,
            None => {
                if s.caches.len() >= CACHED_INDEXES {
                    s.caches.remove(0);
                }
                // One row per field, and one for values of fields only keywords read.
                s.caches.push(ValueCache::new(self.id, rows));
                s.caches.len() - 1
            }
        };
        s.current = ci;
        let Scratch {
            bits,
            hits,
            sets,
            epoch,
            candidates,
            rows: row_state,
            dups,
            pending,
            slot_marks,
            lazy,
            names_of,
            names,
            names_text,
            buffers,
            found,
            caches,
            stats,
            no_cache,
            ..
        } = s;
        let epoch = *epoch;
        let mut pass = FieldPass {
            index: self,
            keywords: self.keywords.as_ref(),
            cache: &mut caches[ci],
            marks: Marks {
                index: self,
                bits,
                hits,
                sets,
            },
            rows: row_state,
            dups,
            pending,
            slot_marks,
            lazy,
            buffers,
            found,
            candidates,
            stats,
            no_cache: *no_cache,
            epoch,
            restarted: false,
        };
        if *names_of != self.id {
            *names_of = self.id;
            names.clear();
            names_text.clear();
        }
        // The row of the `k`th field, named `name`: events of one source list
        // their fields in the same order, so the last event's name at that
        // place is compared before the name is hashed.
        let mut row_of = |k: usize, name: &[u8]| -> Option<usize> {
            let known = names.get(k).and_then(|&(s, e, row)| {
                same_bytes(names_text.as_bytes().get(s as usize..e as usize)?, name).then_some(row)
            });
            let row = known.unwrap_or_else(|| {
                let name = utf8(name);
                let row = self.by_name.get(name).copied().unwrap_or(u32::MAX);
                // Remember it at this place (bounded: events have few fields).
                if k < MAX_REMEMBERED_NAMES && names_text.len() + name.len() <= u32::MAX as usize {
                    let start = names_text.len() as u32;
                    names_text.push_str(name);
                    names.truncate(k);
                    names.push((start, names_text.len() as u32, row));
                    if names_text.len() > 64 * MAX_REMEMBERED_NAMES {
                        names.clear();
                        names_text.clear();
                    }
                }
                row
            });
            (row != u32::MAX).then_some(row as usize)
        };
        if let Some(flat) = event.as_flat() {
            // The common case without a call per field: strings are tried
            // in the value cache first, from their bytes.
            for (k, (name, value)) in flat.raw_fields().enumerate() {
                let fi = row_of(k, name);
                let missed = match value {
                    RawValue::Str(text) => match pass.lookup(fi, text, true) {
                        Lookup::Found => continue,
                        Lookup::Missed(hash) => Some(hash),
                        Lookup::NotKept => None,
                    },
                    _ => None,
                };
                pass.value(fi, value.field_value(), true, missed);
            }
        } else {
            let mut k = 0;
            let visited = event.visit_fields(&mut |name, value| {
                let fi = row_of(k, name.as_bytes());
                k += 1;
                pass.value(fi, value, true, None);
            });
            if !visited {
                for (fi, (name, _)) in self.fields.iter().enumerate() {
                    if let Some(v) = event.field(name) {
                        pass.value(Some(fi), v, false, None);
                    }
                }
                if let Some(words) = pass.keywords {
                    for v in event.values() {
                        pass.buffers.lower(&v);
                        let marks = &mut pass.marks;
                        words.scan_lower(&pass.buffers.lower, |a| marks.atom_and_rules(a));
                    }
                }
            }
        }
        let FieldPass {
            marks: Marks { sets, .. },
            rows: row_state,
            dups,
            pending,
            candidates,
            restarted,
            ..
        } = pass;
        if restarted {
            // Fill numbers given before the restart no longer name their values.
            row_state
                .iter_mut()
                .filter(|r| r.seen == epoch)
                .for_each(|r| r.fill = NO_FILL);
        }
        // Rules whose every clause holds (every rule with clauses has a
        // first one: words where no first clause holds are passed over).
        for (w, (set, missing)) in sets
            .chunks_exact(self.clause_sets.max(1))
            .zip(self.missing.chunks_exact(self.clause_sets.max(1)))
            .enumerate()
        {
            let mut m = self.live.get(w).copied().unwrap_or(0) & set[0];
            if m == 0 {
                continue;
            }
            for (s, x) in set.iter().zip(missing).skip(1) {
                m &= s | x;
            }
            while m != 0 {
                let l = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                if let Some(&r) = self.local_rules.get(l) {
                    candidates.push(r << 1);
                }
            }
        }
        // Single-field rules of rows whose value was searched, or absent.
        for &row in &self.rows_checked {
            let r = row as usize;
            let state = row_state.get(r).copied().unwrap_or_default();
            if state.seen != epoch {
                candidates.extend(self.row_absent[r].iter().map(|&i| i << 1 | 1));
            } else if state.how == Seen::Searched {
                candidates.extend(self.row_always[r].iter().map(|&i| i << 1));
            }
        }
        // A row that came twice: which value the rules read is the event's
        // business, so its single-field rules are all evaluated.
        for &row in dups.iter() {
            candidates.extend(self.row_rules[row as usize].iter().map(|&i| i << 1));
            pending.retain(|p| p.0 != row);
        }
        candidates.extend(self.always.iter().map(|&r| r << 1));
        // Sorted by rule; a rule both decided and not is evaluated.
        candidates.sort_unstable();
        candidates.dedup_by_key(|c| *c >> 1);
    }

    /// Where rule `i`'s verdict on this event's values is remembered: its
    /// [`RuleMemo`] slot and the fill numbers of the fields it reads (0:
    /// absent), when it reads several fields and all their values are named.
    #[inline]
    fn verdict_key(
        &self,
        i: usize,
        rows: &[RowState],
        epoch: u32,
    ) -> Option<(usize, [u32; MEMO_FIELDS])> {
        let read = self.reads.get(i)?.rows()?;
        let mut fills = [0u32; MEMO_FIELDS];
        for (f, &row) in fills.iter_mut().zip(read) {
            let r = rows.get(row as usize)?;
            *f = if r.seen == epoch { r.fill } else { 0 };
            if *f == NO_FILL {
                return None;
            }
        }
        // The verdicts of one event's candidates mostly share their newest
        // value (its command line, say): they are kept side by side, in the
        // few ways of that value's bucket, so an event reads one or two
        // cache lines of the table, not one per candidate.
        let newest = fills.iter().copied().max().unwrap_or(0);
        let bucket = (u64::from(newest).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
            % (RULE_MEMO_SLOTS / MEMO_WAYS);
        Some((bucket * MEMO_WAYS, fills))
    }

    /// The clause bits atom `a` sets.
    fn marks_of(&self, a: u32) -> &[ClauseBits] {
        match (
            self.atom_start.get(a as usize),
            self.atom_start.get(a as usize + 1),
        ) {
            (Some(&lo), Some(&hi)) => self
                .atom_marks
                .get(lo as usize..hi as usize)
                .unwrap_or_default(),
            _ => &[],
        }
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
            sets,
            caches,
            rows,
            epoch,
            current,
            candidates,
            pending,
            single_true,
            lazy,
            verdicts,
            dups,
            stats,
            ..
        } = s;
        let Some(ValueCache {
            slots, rule_memo, ..
        }) = caches.get_mut(*current)
        else {
            return;
        };
        let epoch = *epoch;
        let rows: &[RowState] = rows;
        // Each candidate's verdict: decided by its value, remembered, or to
        // be evaluated (then remembered where it has a key).
        verdicts.clear();
        let mut evaluate = false;
        for &c in candidates.iter() {
            let i = (c >> 1) as usize;
            let v = if c & 1 == 1 {
                Verdict::Yes
            } else {
                match self.verdict_key(i, rows, epoch) {
                    Some((at, fills)) => match rule_memo
                        .get(at..at + MEMO_WAYS)
                        .unwrap_or_default()
                        .iter()
                        .find(|m| m.rule == i as u32 && m.fills == fills)
                    {
                        Some(m) if m.verdict => Verdict::Yes,
                        Some(_) => Verdict::No,
                        None => Verdict::Eval(Some((at, fills))),
                    },
                    None => Verdict::Eval(None),
                }
            };
            match v {
                Verdict::Eval(Some(_)) => stats.evaluated_keyed += 1,
                Verdict::Eval(None) => stats.evaluated_unkeyed += 1,
                _ => stats.remembered += 1,
            }
            evaluate |= matches!(v, Verdict::Eval(_));
            verdicts.push(v);
        }
        if evaluate {
            for (&c, v) in candidates.iter().zip(verdicts.iter_mut()) {
                let Verdict::Eval(key) = *v else { continue };
                let i = (c >> 1) as usize;
                let (Some(Some(p)), Some(r)) = (self.programs.get(i), rules.get(i)) else {
                    *v = Verdict::No;
                    continue;
                };
                if !lazy.is_empty() {
                    let mut marks = Marks {
                        index: self,
                        bits,
                        hits,
                        sets,
                    };
                    // A row that came twice names only its last value: all then.
                    let read = self.atom_rows.get(i).and_then(Option::as_deref);
                    match read.filter(|_| dups.is_empty()) {
                        Some(read) => {
                            for &row in read {
                                let Some(at) = rows
                                    .get(row as usize)
                                    .filter(|r| r.seen == epoch && r.slot > 0)
                                    .map(|r| r.slot - 1)
                                else {
                                    continue;
                                };
                                if let Some(k) = lazy.iter().position(|&l| l == at) {
                                    lazy.swap_remove(k);
                                    if let Some(slot) = slots.get(at as usize) {
                                        slot.set_atoms(&mut marks);
                                    }
                                }
                            }
                        }
                        None => {
                            for &at in lazy.iter() {
                                if let Some(slot) = slots.get(at as usize) {
                                    slot.set_atoms(&mut marks);
                                }
                            }
                            lazy.clear();
                        }
                    }
                }
                let mut memo = SlotMemo {
                    slots: &mut *slots,
                    rows,
                    epoch,
                };
                let mut facts = Facts {
                    bits,
                    memo: Some(&mut memo),
                };
                let hit = p.eval(&mut facts, &r.detection, ctx);
                if let Some((at, fills)) = key
                    && let Some(ways) = rule_memo.get_mut(at..at + MEMO_WAYS)
                {
                    // The rule's older entry, else a free way, else the
                    // oldest (the ways shift down; the newest is first).
                    let k = ways
                        .iter()
                        .position(|m| m.rule == i as u32 || m.rule == u32::MAX)
                        .unwrap_or(MEMO_WAYS - 1);
                    ways[..=k].rotate_right(1);
                    ways[0] = RuleMemo {
                        rule: i as u32,
                        fills,
                        verdict: hit,
                    };
                }
                *v = if hit { Verdict::Yes } else { Verdict::No };
            }
        }
        single_true.clear();
        for (&c, v) in candidates.iter().zip(verdicts.iter()) {
            let i = (c >> 1) as usize;
            let (Verdict::Yes, Some(r)) = (v, rules.get(i)) else {
                continue;
            };
            if !pending.is_empty() && self.single.get(i).is_some_and(|&x| x != 0) {
                single_true.push(i as u32);
            }
            if keep(r, ctx) {
                out.push(i);
            }
        }
        // Slots filled by this event: their single-field rules were all
        // evaluated on it (the row was searched), so the verdicts are known.
        for &(row, at, hash) in pending.iter() {
            let Some(slot) = slots.get_mut(at as usize) else {
                continue;
            };
            if slot.ready || slot.row != row || slot.hash != hash {
                // Taken by another field of this event since.
                continue;
            }
            slot.verdicts.clear();
            slot.verdicts.extend(
                single_true
                    .iter()
                    .filter(|&&i| self.single.get(i as usize) == Some(&(row + 1))),
            );
            slot.ready = true;
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
                s.candidates.iter().map(|c| c >> 1).collect()
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
                    let k = self
                        .marks_of(a)
                        .iter()
                        .map(|cb| cb.bits.count_ones() as usize)
                        .sum();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A value is kept on its second sighting, within as many others of its
    /// field as the cache holds; a new value seldom passes for one seen.
    #[test]
    fn the_door_keeps_values_seen_twice_and_seldom_mistakes_new_ones() {
        use crate::{LoadReport, RuleSet, event::FlatEvent};
        let mut set = RuleSet::new();
        let mut report = LoadReport::default();
        set.load_str(
            std::path::Path::new("r.yml"),
            "title: t\nlogsource: {product: p, category: c}\ndetection:\n  s: {CommandLine|contains: x}\n  condition: s\n",
            &mut report,
        );
        assert!(report.rejected.is_empty(), "{report}");
        let src = LogSource::new("p", "c");
        let hits_for = |values: std::ops::Range<u32>| {
            let before = Index::cache_stats().hits;
            for i in values {
                let mut m = serde_json::Map::new();
                m.insert("CommandLine".into(), format!("run {i}").into());
                let _ = set.matching_rules(&src, &FlatEvent::from_json(&m));
            }
            Index::cache_stats().hits - before
        };
        // Values seen once: not found, and (mostly) not kept.
        assert_eq!(hits_for(0..DOOR_VALUES as u32 - 4_000), 0);
        // New values seen twice: the second sighting finds only the few
        // the door took for seen (two bits each, a fifth of them set: about
        // 1 in 25; one bit each would be about 1 in 10).
        let fresh = DOOR_VALUES as u32..DOOR_VALUES as u32 + 2_000;
        assert_eq!(hits_for(fresh.clone()), 0);
        let mistaken = hits_for(fresh.clone());
        assert!(
            mistaken < 100,
            "{mistaken} of 2000 new values passed for seen"
        );
        // The third sighting finds them kept.
        assert!(hits_for(fresh) >= 1_950);
    }

    #[test]
    fn fill_numbers_running_out_forget_everything_they_named() {
        let mut cache = ValueCache::new(1, 2);
        cache.slots[3].ready = true;
        cache.slots[3].hash = 42;
        cache.slots[3].fill = 7;
        cache.rule_memo[5] = RuleMemo {
            rule: 1,
            fills: [7, 0, 0, 0, 0, 0],
            verdict: true,
        };
        cache.fills = NO_FILL - 2;
        assert_eq!(cache.next_fill(), (NO_FILL - 1, true));
        // The next number would be NO_FILL: numbers restart, and nothing a
        // number named before is kept.
        assert_eq!(cache.next_fill(), (1, false));
        assert!(!cache.slots[3].ready && cache.slots[3].fill == 0);
        assert_eq!(cache.rule_memo[5].rule, u32::MAX);
        assert_eq!(cache.next_fill(), (2, true));
    }

    /// `WAYS + 1` values of one event in one set: those found fill every
    /// way, the last is kept in the way of one found earlier in the same
    /// event, whose atoms must still count when the rule over all of them is
    /// evaluated.
    #[test]
    fn a_way_changing_hands_within_an_event_keeps_the_first_values_atoms() {
        use crate::{LoadReport, RuleSet, event::FlatEvent};
        // Fields f0..f{WAYS} (rows in name order, as WAYS < 10); the rule
        // needs each to hold "vK".
        let selections: String = (0..=WAYS)
            .map(|k| format!("  s{k}: {{f{k}|contains: v{k}}}\n"))
            .collect();
        let mut set = RuleSet::new();
        let mut report = LoadReport::default();
        set.load_str(
            std::path::Path::new("r.yml"),
            &format!(
                "title: t\nlogsource: {{product: p, category: c}}\ndetection:\n{selections}  \
                 condition: all of s*\n"
            ),
            &mut report,
        );
        assert!(report.rejected.is_empty(), "{report}");
        let target = set_of(value_hash(b"v0 0"), 0);
        let values: Vec<String> = (0..=WAYS)
            .map(|k| {
                (0..)
                    .map(|i| format!("v{k} {i}"))
                    .find(|v| set_of(value_hash(v.as_bytes()), k) == target)
                    .unwrap_or_default()
            })
            .collect();
        let event = |fields: usize| {
            let mut m = serde_json::Map::new();
            for (k, v) in values.iter().enumerate().take(fields) {
                m.insert(format!("f{k}"), v.clone().into());
            }
            FlatEvent::from_json(&m)
        };
        let src = LogSource::new("p", "c");
        // The first WAYS values are kept (second sightings) and fill the set.
        for _ in 0..2 {
            assert!(set.matching_rules(&src, &event(WAYS)).is_empty());
        }
        // The last one's second sighting is kept in the way of one found in that event.
        for round in 0..3 {
            assert_eq!(
                set.matching_rules(&src, &event(WAYS + 1)),
                vec![0],
                "round {round}"
            );
        }
    }

    #[test]
    fn clause_bits_read_back_what_was_written() {
        let cb = ClauseBits {
            at: 0x0102_0304,
            bits: 0x8000_0000_0000_0001,
        };
        let mut out = Vec::new();
        cb.write(&mut out);
        assert_eq!(out.len(), CLAUSE_BITS_BYTES);
        let back = ClauseBits::read(out.as_chunks().0.first().expect("one"));
        assert_eq!((back.at, back.bits), (cb.at, cb.bits));
    }
}
