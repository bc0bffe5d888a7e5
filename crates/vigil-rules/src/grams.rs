//! Many needles searched at once in short texts, by grams.
//!
//! Each needle is filed under one of its grams (4 bytes for needles of four
//! to eight, 8 for longer ones): the gram the fewest other needles contain,
//! which is also the least likely to be common text. A needle of nine bytes
//! or more is filed under two adjacent 8-byte grams, and that tier reads only
//! every other position of a text (one of the two lands on it). At each
//! position read, a bitmap small enough for the L1 cache says whether
//! any needle is filed under the gram there, and only then are needles
//! compared. Positions do not depend on each other (an automaton's next state
//! depends on the last), so the loop runs at a few cycles per byte however
//! many needles there are, where an Aho-Corasick automaton over thousands of
//! needles walks states that miss the cache. Long grams keep true gram hits in
//! ordinary text rare. Needles of one to three bytes go through direct tables.
//!
//! What it is not: a general multi-pattern searcher. It reports every
//! occurrence (overlapping), works on bytes exactly as given (callers
//! lower-case both sides), and is meant for event fields of tens to a few
//! thousand bytes.

use rustc_hash::FxHashMap;

const HASH: u64 = 0x9E37_79B9_7F4A_7C15;

/// The needles filed under one gram.
#[derive(Debug, Clone, Copy)]
struct Group {
    gram: u64,
    /// `members[start..end]`.
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    needle: u32,
    /// Where the gram sits in the needle.
    offset: u32,
    /// The needle's bytes: `Tier::bytes[at..at + len]` (beside the other
    /// members', so a check reads no pointer first).
    at: u32,
    len: u32,
}

/// Needles filed under grams of `width` bytes.
#[derive(Debug, Clone)]
struct Tier {
    width: usize,
    /// Positions read: every one, or every other (see [`Tier::new`]).
    stride: usize,
    bitmap: Box<[u64]>,
    bitmap_shift: u32,
    /// The groups, open-addressed by the top bits of the gram's hash (at
    /// most half full, linear probing; `end == 0`: empty): a gram the
    /// bitmap let through costs one read when no needle is filed under it.
    table: Box<[Group]>,
    table_shift: u32,
    members: Box<[Member]>,
    /// The tier's needles, one after another.
    bytes: Box<[u8]>,
    /// Its longest needle.
    max_len: usize,
}

/// Equal byte strings, without a call for the short ones needles, field
/// names and many values are (overlapping word loads cover every byte).
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |x: &[u8], at: usize| -> u64 {
        x.get(at..at + 8)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let half = |x: &[u8], at: usize| -> u32 {
        x.get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    match n {
        0 => true,
        1..4 => a == b,
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

fn gram(b: &[u8], width: usize) -> u64 {
    let mut g = [0u8; 8];
    g[..width].copy_from_slice(&b[..width]);
    u64::from_le_bytes(g)
}

impl Tier {
    /// `needles`: (id, bytes), every one at least `width + stride - 1` long.
    /// With `stride` 2 a needle is filed under two adjacent grams, so that
    /// reading every other position of a text finds each occurrence once.
    fn new(
        width: usize,
        stride: usize,
        needles: &[(u32, &[u8])],
        freq: &FxHashMap<u64, u32>,
    ) -> Tier {
        // About 32 bitmap bits per needle (so few positions get past the
        // bitmap).
        let n = needles.len().max(1);
        let bits = (n * 16 * stride.max(2))
            .next_power_of_two()
            .clamp(512, 1 << 18);
        let bitmap_shift = 64 - bits.trailing_zeros();
        let mut bitmap = vec![0u64; bits / 64].into_boxed_slice();
        let mut filed: Vec<(u64, Member)> = Vec::with_capacity(needles.len() * stride);
        let rarity = |g: u64| freq.get(&g).copied().unwrap_or(0);
        let mut bytes = Vec::new();
        for &(id, b) in needles {
            let at = bytes.len() as u32;
            bytes.extend_from_slice(b);
            // The run of `stride` adjacent grams other needles share least.
            let first = (0..=b.len() - width - (stride - 1))
                .min_by_key(|&i| {
                    let r: u32 = (i..i + stride).map(|j| rarity(gram(&b[j..], width))).sum();
                    (r, i)
                })
                .unwrap_or(0);
            for offset in first..first + stride {
                let g = gram(&b[offset..], width);
                let h = g.wrapping_mul(HASH);
                let bit = (h >> bitmap_shift) as usize;
                bitmap[bit / 64] |= 1 << (bit % 64);
                filed.push((
                    g,
                    Member {
                        needle: id,
                        offset: offset as u32,
                        at,
                        len: b.len() as u32,
                    },
                ));
            }
        }
        // One group per gram, its members side by side.
        filed.sort_by_key(|(g, m)| (*g, m.needle));
        let mut groups: Vec<Group> = Vec::new();
        let mut members = Vec::with_capacity(filed.len());
        for (g, m) in filed {
            match groups.last_mut() {
                Some(Group { gram, end, .. }) if *gram == g => *end += 1,
                _ => groups.push(Group {
                    gram: g,
                    start: members.len() as u32,
                    end: members.len() as u32 + 1,
                }),
            }
            members.push(m);
        }
        let slots = (groups.len() * 2).next_power_of_two().max(16);
        let table_shift = 64 - slots.trailing_zeros();
        let empty = Group {
            gram: 0,
            start: 0,
            end: 0,
        };
        let mut table = vec![empty; slots].into_boxed_slice();
        for grp in groups {
            let mut t = (grp.gram.wrapping_mul(HASH) >> table_shift) as usize;
            while table[t].end != 0 {
                t = (t + 1) % slots;
            }
            table[t] = grp;
        }
        let max_len = needles.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
        Tier {
            width,
            stride,
            bitmap,
            bitmap_shift,
            table,
            table_shift,
            members: members.into_boxed_slice(),
            bytes: bytes.into_boxed_slice(),
            max_len,
        }
    }

    /// Reports the needles filed under gram `g`, found at `i` in `hay`.
    #[inline(always)]
    fn probe(&self, g: u64, i: usize, hay: &[u8], f: &mut impl FnMut(u32, usize, usize)) {
        let h = g.wrapping_mul(HASH);
        let bit = (h >> self.bitmap_shift) as usize;
        if self
            .bitmap
            .get(bit / 64)
            .is_none_or(|w| w & (1 << (bit % 64)) == 0)
        {
            return;
        }
        self.verify(h, g, i, hay, f);
    }

    #[inline(never)]
    fn verify(&self, h: u64, g: u64, i: usize, hay: &[u8], f: &mut impl FnMut(u32, usize, usize)) {
        let mut t = (h >> self.table_shift) as usize;
        let grp = loop {
            match self.table.get(t) {
                Some(grp) if grp.end != 0 && grp.gram != g => t = (t + 1) % self.table.len(),
                Some(grp) if grp.end != 0 => break grp,
                _ => return,
            }
        };
        let members = self
            .members
            .get(grp.start as usize..grp.end as usize)
            .unwrap_or_default();
        for m in members {
            let off = m.offset as usize;
            let Some(start) = i.checked_sub(off) else {
                continue;
            };
            let (at, len) = (m.at as usize, m.len as usize);
            if let (Some(h), Some(n)) = (hay.get(start..start + len), self.bytes.get(at..at + len))
                && same_bytes(h, n)
            {
                f(m.needle, start, start + len);
            }
        }
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.bitmap.len() * 8
            + self.table.len() * size_of::<Group>()
            + self.members.len() * size_of::<Member>()
            + self.bytes.len()
    }
}

/// Needles of one to three bytes: direct bit tables say whether a needle
/// is there, a map gives which.
#[derive(Debug, Clone, Default)]
struct Short {
    /// By byte: a one-byte needle.
    one: [u64; 4],
    /// The one-byte needles.
    one_list: Vec<u8>,
    /// By two bytes (65,536 bits each): a two-byte needle; the start of a three-byte one.
    two: Box<[u64]>,
    three: Box<[u64]>,
    /// By a hash of three bytes (65,536 bits): a three-byte needle may be there.
    three_hashed: Box<[u64]>,
    /// By a hash of two bytes (4,096 bits, small enough to stay in the L1
    /// cache): a two-byte needle or the start of a three-byte one may be
    /// there. Most positions of a text stop here.
    pairs: Box<[u64]>,
    /// Keyed by `len << 24 | bytes`.
    ids: FxHashMap<u32, Vec<u32>>,
}

fn short_key(b: &[u8]) -> u32 {
    let mut k = (b.len() as u32) << 24;
    for (i, &x) in b.iter().enumerate() {
        k |= u32::from(x) << (8 * i);
    }
    k
}

fn tri_hash(x: u8, y: u8, z: u8) -> usize {
    ((u32::from(x) | u32::from(y) << 8 | u32::from(z) << 16).wrapping_mul(0x9E37_79B1) >> 16)
        as usize
}

/// Bits of [`Short::pairs`].
const PAIR_BITS: usize = 4096;

fn pair_hash(k: usize) -> usize {
    (k as u32).wrapping_mul(0x9E37_79B1) as usize >> (32 - PAIR_BITS.trailing_zeros())
}

fn set_bit(bits: &mut Box<[u64]>, k: usize) {
    if bits.is_empty() {
        *bits = vec![0u64; 1024].into_boxed_slice();
    }
    bits[k / 64] |= 1 << (k % 64);
}

fn has_bit(bits: &[u64], k: usize) -> bool {
    bits.get(k / 64).is_some_and(|x| x & (1 << (k % 64)) != 0)
}

impl Short {
    fn set_pair(&mut self, k: usize) {
        if self.pairs.is_empty() {
            self.pairs = vec![0u64; PAIR_BITS / 64].into_boxed_slice();
        }
        let h = pair_hash(k);
        if let Some(w) = self.pairs.get_mut(h / 64) {
            *w |= 1 << (h % 64);
        }
    }

    fn add(&mut self, id: u32, b: &[u8]) {
        self.ids.entry(short_key(b)).or_default().push(id);
        match b {
            [c] => {
                let (w, bit) = (usize::from(c >> 6), 1u64 << (c & 63));
                if self.one[w] & bit == 0 {
                    self.one_list.push(*c);
                }
                self.one[w] |= bit;
            }
            [x, y] => {
                let k = usize::from(*x) | usize::from(*y) << 8;
                set_bit(&mut self.two, k);
                self.set_pair(k);
            }
            [x, y, z] => {
                let k = usize::from(*x) | usize::from(*y) << 8;
                set_bit(&mut self.three, k);
                self.set_pair(k);
                set_bit(&mut self.three_hashed, tri_hash(*x, *y, *z));
            }
            _ => {}
        }
    }

    fn report(&self, key: &[u8], at: usize, f: &mut impl FnMut(u32, usize, usize)) {
        if let Some(ids) = self.ids.get(&short_key(key)) {
            for &id in ids {
                f(id, at, at + key.len());
            }
        }
    }

    /// Reports the one-byte needles `hay` holds, each once and at
    /// position 0 (they occur many times in a value, and only whether they
    /// occur at all is asked): one pass of independent stores marks the
    /// bytes present, no lookup per position.
    fn report_bytes(&self, hay: &[u8], from: usize, f: &mut impl FnMut(u32, usize, usize)) {
        // Where each byte first occurs (from the back, so the first wins).
        let mut first = [usize::MAX; 256];
        for (i, &b) in hay.iter().enumerate().skip(from).rev() {
            first[usize::from(b)] = i;
        }
        for &b in &self.one_list {
            let at = first[usize::from(b)];
            if at != usize::MAX {
                self.report(&[b], at, f);
            }
        }
    }

    /// Reports the short needles starting at `i`; with `seen`, only those
    /// not reported before and no one-byte needles (see [`Short::report_bytes`]).
    #[inline(always)]
    fn probe(
        &self,
        i: usize,
        hay: &[u8],
        mut seen: Option<&mut Seen>,
        f: &mut impl FnMut(u32, usize, usize),
    ) {
        let c = hay[i];
        if seen.is_none() && self.one[usize::from(c >> 6)] & (1 << (c & 63)) != 0 {
            self.report(&hay[i..=i], i, f);
        }
        let Some(&d) = hay.get(i + 1) else {
            return;
        };
        let k = usize::from(c) | usize::from(d) << 8;
        if !has_bit(&self.pairs, pair_hash(k)) {
            return;
        }
        if has_bit(&self.two, k)
            && seen
                .as_deref_mut()
                .is_none_or(|s| s.first(2 << 24 | k as u32))
        {
            self.report(&hay[i..i + 2], i, f);
        }
        if let Some(&e) = hay.get(i + 2)
            && has_bit(&self.three, k)
            && has_bit(&self.three_hashed, tri_hash(c, d, e))
            && seen.is_none_or(|s| s.first(short_key(&hay[i..i + 3])))
        {
            self.report(&hay[i..i + 3], i, f);
        }
    }
}

/// Two- and three-byte needle keys already reported for one value: a small
/// open-addressed set (keys carry their length in the top byte, so 0 is
/// free). Past [`SEEN_KEYS`] distinct keys, reports are no longer
/// deduplicated, which is only slower.
struct Seen {
    keys: [u32; SEEN_KEYS],
    len: usize,
}

const SEEN_KEYS: usize = 64;

impl Seen {
    fn new() -> Seen {
        Seen {
            keys: [0; SEEN_KEYS],
            len: 0,
        }
    }

    /// Whether `key` is new (and records it).
    #[inline]
    fn first(&mut self, key: u32) -> bool {
        if self.len >= SEEN_KEYS / 2 {
            return true;
        }
        let mut at = (key.wrapping_mul(0x9E37_79B1) >> 26) as usize;
        loop {
            match self.keys[at % SEEN_KEYS] {
                0 => {
                    self.keys[at % SEEN_KEYS] = key;
                    self.len += 1;
                    return true;
                }
                k if k == key => return false,
                _ => at += 1,
            }
        }
    }
}

/// A set of byte-string needles; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct GramSet {
    /// Needles of four to eight bytes, by 4-byte grams.
    mid: Option<Tier>,
    /// Needles of nine bytes or more, by two adjacent 8-byte grams (every
    /// other position read).
    long: Option<Tier>,
    short: Short,
    has_short: bool,
}

impl GramSet {
    /// Builds the set; needle `i` is reported as `i`. Empty needles are never reported.
    pub(crate) fn new(needles: Vec<Vec<u8>>) -> GramSet {
        GramSet::with_long_stride(needles, 2)
    }

    /// As [`GramSet::new`], with needles of `stride + 7` bytes and more
    /// (nine at least) filed under `stride` adjacent 8-byte grams, so every
    /// `stride`th position is read; shorter ones go to the 4-byte tier. Worth
    /// it for sets of long needles only.
    pub(crate) fn with_long_stride(needles: Vec<Vec<u8>>, stride: usize) -> GramSet {
        let mut short = Short::default();
        let (mut mid, mut long) = (None, None);
        // (gram width, stride, needle lengths).
        let long_from = 9.max(stride + 7);
        for (width, stride, lo, hi) in [(4, 1, 4, long_from), (8, stride, long_from, usize::MAX)] {
            let members: Vec<(u32, &[u8])> = needles
                .iter()
                .enumerate()
                .filter(|(_, n)| (lo..hi).contains(&n.len()))
                .map(|(i, n)| (i as u32, &n[..]))
                .collect();
            if members.is_empty() {
                continue;
            }
            // How many needles contain each gram: a needle is filed under its rarest.
            let mut freq: FxHashMap<u64, u32> = FxHashMap::default();
            for &(_, n) in &members {
                let mut seen: Vec<u64> = (0..=n.len() - width)
                    .map(|i| gram(&n[i..], width))
                    .collect();
                seen.sort_unstable();
                seen.dedup();
                for g in seen {
                    *freq.entry(g).or_default() += 1;
                }
            }
            let t = Tier::new(width, stride, &members, &freq);
            if width == 4 {
                mid = Some(t);
            } else {
                long = Some(t);
            }
        }
        for (i, n) in needles.iter().enumerate() {
            if (1..4).contains(&n.len()) {
                short.add(i as u32, n);
            }
        }
        let has_short = !short.ids.is_empty();
        GramSet {
            mid,
            long,
            short,
            has_short,
        }
    }

    /// Calls `f(needle, start, end)` for every occurrence of every needle in `hay`.
    pub(crate) fn find(&self, hay: &[u8], mut f: impl FnMut(u32, usize, usize)) {
        self.search(hay, 0, None, &mut f);
    }

    /// Calls `f(needle)` for the needles that occur in `hay`: each once for
    /// the short ones, at least once for the others.
    pub(crate) fn find_any(&self, hay: &[u8], mut f: impl FnMut(u32)) {
        self.search(hay, 0, Some(&mut Seen::new()), &mut |n, _, _| f(n));
    }

    /// Calls `f(needle, end)` for the needles occurring in `hay` that end
    /// after `kept` (and some that end earlier): short ones once, at their
    /// first occurrence from where the shortest could start, the others at
    /// least once. Each tier reads only from where its longest needle would
    /// have to start to end there.
    pub(crate) fn find_any_ending_after(
        &self,
        hay: &[u8],
        kept: usize,
        mut f: impl FnMut(u32, usize),
    ) {
        self.search(hay, kept, Some(&mut Seen::new()), &mut |n, _, e| f(n, e));
    }

    /// Every tier over `hay`, from where a needle of its own that ends after
    /// `kept` could start (0: all of it); with `seen`, short needles
    /// reported once each.
    fn search(
        &self,
        hay: &[u8],
        kept: usize,
        mut seen: Option<&mut Seen>,
        f: &mut impl FnMut(u32, usize, usize),
    ) {
        // A needle of `len` bytes ending after `kept` starts at or after this.
        let from = |len: usize| (kept + 1).saturating_sub(len);
        // A tight loop per tier: fewer live values than one loop feeding all.
        if let Some(t) = &self.long {
            let first = from(t.max_len);
            for (i, w) in hay.windows(8).enumerate().skip(first).step_by(t.stride) {
                let g = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
                t.probe(g, i, hay, f);
            }
        }
        if let Some(t) = &self.mid {
            for (i, w) in hay.windows(4).enumerate().skip(from(t.max_len)) {
                let g = u64::from(u32::from_le_bytes(w.try_into().unwrap_or([0; 4])));
                t.probe(g, i, hay, f);
            }
        }
        if self.has_short {
            if seen.is_some() {
                self.short.report_bytes(hay, from(1), f);
            }
            for i in from(3)..hay.len() {
                self.short.probe(i, hay, seen.as_deref_mut(), f);
            }
        }
    }

    /// Needles shorter than a gram (engine tuning).
    pub(crate) fn short_count(&self) -> usize {
        self.short.ids.values().map(Vec::len).sum()
    }

    /// Per tier: width, needles, slots, longest slot, distinct grams (engine tuning).
    pub(crate) fn tier_stats(&self) -> String {
        [&self.mid, &self.long]
            .into_iter()
            .flatten()
            .map(|t| {
                let groups = t.table.iter().filter(|g| g.end != 0);
                let longest = groups.clone().map(|g| g.end - g.start).max().unwrap_or(0);
                format!(
                    "w{}/{}: {} needles, {} slots, {} grams, most needles under one gram {longest}",
                    t.width,
                    t.stride,
                    t.members.len() / t.stride,
                    t.table.len(),
                    groups.count(),
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Heap bytes held (for the engine's memory figures).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.short.ids.len() * 16
            + [&self.mid, &self.long]
                .into_iter()
                .flatten()
                .map(Tier::heap_bytes)
                .sum::<usize>()
            + (self.short.two.len() + self.short.three.len() + self.short.three_hashed.len()) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(needles: &[Vec<u8>], hay: &[u8]) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        for (id, n) in needles.iter().enumerate() {
            if n.is_empty() || n.len() > hay.len() {
                continue;
            }
            for s in 0..=hay.len() - n.len() {
                if &hay[s..s + n.len()] == n.as_slice() {
                    out.push((id as u32, s, s + n.len()));
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn found(set: &GramSet, hay: &[u8]) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        set.find(hay, |n, s, e| out.push((n, s, e)));
        out.sort_unstable();
        out
    }

    #[test]
    fn reports_every_occurrence_of_every_needle() {
        let needles: Vec<Vec<u8>> = [
            "powershell",
            "shell",
            "-enc",
            "/c",
            "x",
            "",
            "aaaa",
            "aaa",
            "aaaaaaaaa",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let set = GramSet::new(needles.clone());
        for hay in [
            "powershell.exe -enc aaaaaaaaaaa /c x",
            "",
            "x",
            "aaaaaaa",
            "shellshell",
        ] {
            assert_eq!(
                found(&set, hay.as_bytes()),
                naive(&needles, hay.as_bytes()),
                "{hay}"
            );
        }
    }

    #[test]
    fn stays_small_for_few_needles() {
        let set = GramSet::new(vec![b"mimikatz".to_vec()]);
        assert!(set.heap_bytes() < 1024, "{}", set.heap_bytes());
    }

    fn found_any(set: &GramSet, hay: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        set.find_any(hay, |n| out.push(n));
        out.sort_unstable();
        out.dedup();
        out
    }

    fn ids(all: Vec<(u32, usize, usize)>) -> Vec<u32> {
        let mut v: Vec<u32> = all.into_iter().map(|x| x.0).collect();
        v.dedup();
        v
    }

    proptest! {
        #[test]
        fn agrees_with_a_naive_search(
            needles in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..12), 0..40),
            hay in proptest::collection::vec(0u8..4, 0..60),
        ) {
            let set = GramSet::new(needles.clone());
            prop_assert_eq!(found(&set, &hay), naive(&needles, &hay));
            prop_assert_eq!(found_any(&set, &hay), ids(naive(&needles, &hay)));
        }

        #[test]
        fn agrees_on_many_needles(
            needles in proptest::collection::vec("[a-e\\\\. ]{1,12}", 300..900),
            hay in "[a-e\\\\. ]{0,120}",
        ) {
            let needles: Vec<Vec<u8>> = needles.into_iter().map(String::into_bytes).collect();
            let set = GramSet::new(needles.clone());
            prop_assert_eq!(found(&set, hay.as_bytes()), naive(&needles, hay.as_bytes()));
            prop_assert_eq!(found_any(&set, hay.as_bytes()), ids(naive(&needles, hay.as_bytes())));
        }
    }
}
