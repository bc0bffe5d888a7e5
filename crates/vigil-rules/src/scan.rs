//! One field's literals, searched together: which of them occur in a value,
//! honouring each literal's anchor. Exact values are one hash lookup;
//! prefixes and suffixes are an anchored walk through a trie (suffixes over
//! the reversed value), which stops at the first byte no literal continues
//! with; substrings are one pass of Aho-Corasick (few literals) or of a
//! [`GramSet`] (many). Values arrive lower-cased; literals are stored so.
//! With many substring literals, a long value may take the ones it shares
//! with the last value searched (the same start, a fresh id at the end: see
//! [`FieldScan::scan_lower_reusing`]); the caller keeps that last value.

use crate::grams::GramSet;
use crate::pattern::Anchor;
use aho_corasick::automaton::Automaton;
use aho_corasick::{
    AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, Anchored, MatchKind, StartKind, dfa,
};
use rustc_hash::FxHashMap;

/// From this many bytes of substring literals on, a field is searched by
/// grams: an Aho-Corasick DFA that large misses the cache at every byte.
const GRAMS_FROM_BYTES: usize = 8 << 10;

#[derive(Debug)]
enum Walk {
    Trie(Box<dfa::DFA>),
    /// The trie could not be built (too large): the same literals by grams.
    Grams(Box<GramSet>),
}

#[derive(Debug)]
enum Search {
    Ac(AhoCorasick),
    Grams(Box<GramSet>),
}

/// A field's literals with the atom each one sets; see the module documentation.
#[derive(Debug)]
pub(crate) struct FieldScan {
    exact: FxHashMap<Box<[u8]>, u32>,
    prefix: Option<(Walk, Vec<u32>)>,
    /// Over reversed literals; walked over the reversed value.
    suffix: Option<(Walk, Vec<u32>)>,
    contains: Option<(Search, Vec<u32>)>,
    /// With many literals: those longer than [`REUSE_SPAN`] bytes apart from
    /// `contains`, so that a value sharing a long prefix with the last one
    /// searched needs only its tail searched for the others (see
    /// [`FieldScan::scan_lower_reusing`]).
    long_contains: Option<(Box<GramSet>, Vec<u32>)>,
}

/// The longest literal whose occurrences [`FieldScan::scan_lower_reusing`]
/// takes from the previous value.
pub(crate) const REUSE_SPAN: usize = 32;
/// Common prefixes shorter than this are not worth reusing.
const REUSE_MIN: usize = REUSE_SPAN + 8;

/// The last value searched for one field's literals, with where each literal
/// of `contains` first ends in it (lower-cased bytes).
#[derive(Default)]
pub(crate) struct Reuse<M = ()> {
    /// The field (whose literal ids `ends` holds) and the hash of the
    /// value's first bytes it was filed under.
    row: usize,
    key: u64,
    text: Vec<u8>,
    ends: Vec<(u32, u32)>,
    /// The atoms the last search took from the value before it.
    taken: Vec<u32>,
    /// What the caller derives from `taken` (kept for the next value,
    /// which usually takes the same).
    memo: M,
}

impl<M: Default> Reuse<M> {
    /// Makes it the place of values of field `row` filed under `key`:
    /// what it held for another field or start is forgotten (its buffers kept).
    pub(crate) fn claim(&mut self, row: usize, key: u64) {
        if self.row != row || self.key != key {
            self.row = row;
            self.key = key;
            self.text.clear();
            self.ends.clear();
            self.memo = M::default();
        }
    }
}

/// How many bytes `a` and `b` begin with alike (eight compared at a time).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut n = 0;
    for (x, y) in a.as_chunks::<8>().0.iter().zip(b.as_chunks::<8>().0) {
        let (x, y) = (u64::from_le_bytes(*x), u64::from_le_bytes(*y));
        if x != y {
            return n + (x ^ y).trailing_zeros() as usize / 8;
        }
        n += 8;
    }
    n + a[n.min(a.len())..]
        .iter()
        .zip(&b[n.min(b.len())..])
        .take_while(|(x, y)| x == y)
        .count()
}

fn walk(needles: &[Vec<u8>]) -> Walk {
    dfa::Builder::new()
        .match_kind(MatchKind::Standard)
        .start_kind(StartKind::Anchored)
        .build(needles)
        .map(|d| Walk::Trie(Box::new(d)))
        .unwrap_or_else(|_| Walk::Grams(Box::new(GramSet::new(needles.to_vec()))))
}

impl Walk {
    /// Calls `f(literal)` for every literal that is a prefix of `hay`
    /// (read backwards when `backwards`: suffixes, over reversed literals).
    fn prefixes(&self, hay: &[u8], backwards: bool, mut f: impl FnMut(usize)) {
        match self {
            Walk::Trie(d) => {
                let Ok(mut sid) = d.start_state(Anchored::Yes) else {
                    return;
                };
                let at = |i: usize| {
                    if backwards {
                        hay[hay.len() - 1 - i]
                    } else {
                        hay[i]
                    }
                };
                for i in 0..hay.len() {
                    let b = at(i);
                    sid = d.next_state(Anchored::Yes, sid, b);
                    if d.is_special(sid) {
                        if d.is_dead(sid) {
                            return;
                        }
                        if d.is_match(sid) {
                            // A match state also lists literals that end here
                            // but start later; only those starting at 0 count.
                            for k in 0..d.match_len(sid) {
                                let p = d.match_pattern(sid, k);
                                if d.pattern_len(p) == i + 1 {
                                    f(p.as_usize());
                                }
                            }
                        }
                    }
                }
            }
            Walk::Grams(g) if backwards => {
                let rev: Vec<u8> = hay.iter().rev().copied().collect();
                g.find(&rev, |n, s, _| {
                    if s == 0 {
                        f(n as usize)
                    }
                })
            }
            Walk::Grams(g) => g.find(hay, |n, s, _| {
                if s == 0 {
                    f(n as usize)
                }
            }),
        }
    }
}

/// Scratch buffer for one value.
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) lower: Vec<u8>,
}

impl Buffers {
    /// Lower-cases `text` into the buffer, as [`crate::eval::lowercase`] does.
    pub(crate) fn lower(&mut self, text: &str) {
        self.lower.clear();
        if text.is_ascii() {
            self.lower.extend_from_slice(text.as_bytes());
            self.lower.make_ascii_lowercase();
        } else {
            self.lower
                .extend_from_slice(crate::eval::lowercase(text).as_bytes());
        }
    }
}

impl FieldScan {
    /// `lits`: (lower-cased literal, anchor, atom).
    pub(crate) fn build(lits: Vec<(String, Anchor, u32)>) -> FieldScan {
        let mut exact = FxHashMap::default();
        let (mut pre, mut suf, mut sub) = (Vec::new(), Vec::new(), Vec::new());
        for (l, a, atom) in lits {
            if l.is_empty() {
                continue;
            }
            match a {
                Anchor::Exact => {
                    exact.insert(l.into_bytes().into_boxed_slice(), atom);
                }
                Anchor::Prefix => pre.push((l.into_bytes(), atom)),
                Anchor::Suffix => {
                    let mut b = l.into_bytes();
                    b.reverse();
                    suf.push((b, atom));
                }
                Anchor::Contains => sub.push((l.into_bytes(), atom)),
            }
        }
        let split = |v: Vec<(Vec<u8>, u32)>| -> (Vec<Vec<u8>>, Vec<u32>) { v.into_iter().unzip() };
        let prefix = (!pre.is_empty()).then(|| {
            let (n, a) = split(pre);
            (walk(&n), a)
        });
        let suffix = (!suf.is_empty()).then(|| {
            let (n, a) = split(suf);
            (walk(&n), a)
        });
        let many = sub.iter().map(|(n, _)| n.len()).sum::<usize>() >= GRAMS_FROM_BYTES;
        let mut long_contains = None;
        if many {
            let (long, short): (Vec<_>, Vec<_>) =
                sub.into_iter().partition(|(n, _)| n.len() > REUSE_SPAN);
            sub = short;
            if !long.is_empty() {
                let (n, a) = split(long);
                // All longer than REUSE_SPAN: every eighth position read.
                long_contains = Some((Box::new(GramSet::with_long_stride(n, 8)), a));
            }
        }
        let contains = (!sub.is_empty()).then(|| {
            let (n, a) = split(sub);
            let search = if many {
                Search::Grams(Box::new(GramSet::new(n)))
            } else {
                AhoCorasickBuilder::new()
                    .kind(Some(AhoCorasickKind::DFA))
                    .match_kind(MatchKind::Standard)
                    .build(&n)
                    .map(Search::Ac)
                    .unwrap_or_else(|_| Search::Grams(Box::new(GramSet::new(n))))
            };
            (search, a)
        });
        FieldScan {
            exact,
            prefix,
            suffix,
            contains,
            long_contains,
        }
    }

    /// Literal counts by kind (engine tuning).
    pub(crate) fn describe(&self) -> String {
        let kind = |w: &Option<(Walk, Vec<u32>)>| match w {
            Some((Walk::Trie(_), a)) => format!("{} trie", a.len()),
            Some((Walk::Grams(_), a)) => format!("{} grams", a.len()),
            None => "0".into(),
        };
        let contains = match &self.contains {
            Some((Search::Ac(_), a)) => format!("{} ac", a.len()),
            Some((Search::Grams(g), a)) => format!(
                "{} grams ({} short; {})",
                a.len(),
                g.short_count(),
                g.tier_stats()
            ),
            None => "0".into(),
        };
        let longer = match &self.long_contains {
            Some((g, a)) => format!(" + {} longer ({})", a.len(), g.tier_stats()),
            None => String::new(),
        };
        format!(
            "exact {}, prefix {}, suffix {}, contains {}{longer}",
            self.exact.len(),
            kind(&self.prefix),
            kind(&self.suffix),
            contains
        )
    }

    /// Calls `f(atom)` for every literal of the field that `text` satisfies
    /// (an atom may be reported more than once).
    pub(crate) fn scan(&self, text: &str, buf: &mut Buffers, f: impl FnMut(u32)) {
        buf.lower(text);
        self.scan_lower(&buf.lower, f);
    }

    /// The exact, prefix and suffix literals `lower` satisfies.
    fn scan_anchored(&self, lower: &[u8], f: &mut impl FnMut(u32)) {
        if let Some(&a) = self.exact.get(lower) {
            f(a);
        }
        if let Some((w, atoms)) = &self.prefix {
            w.prefixes(lower, false, |p| f(atoms[p]));
        }
        if let Some((w, atoms)) = &self.suffix {
            w.prefixes(lower, true, |p| f(atoms[p]));
        }
    }

    /// [`FieldScan::scan`] of a value already lower-cased.
    pub(crate) fn scan_lower(&self, lower: &[u8], mut f: impl FnMut(u32)) {
        self.scan_anchored(lower, &mut f);
        if let Some((s, atoms)) = &self.contains {
            match s {
                Search::Ac(ac) => {
                    for m in ac.find_overlapping_iter(lower) {
                        f(atoms[m.pattern().as_usize()]);
                    }
                }
                Search::Grams(g) => g.find_any(lower, |n| f(atoms[n as usize])),
            }
        }
        if let Some((g, atoms)) = &self.long_contains {
            g.find_any(lower, |n| f(atoms[n as usize]));
        }
    }

    /// [`FieldScan::scan_lower`], taking from `last` (the last value of the
    /// field searched this way) the literals of `contains` that end within
    /// the prefix it shares with `lower`: only the rest of `lower`, from
    /// where such a literal could start, is searched for them. A value with a
    /// fresh id at its end then costs its tail. `last` then holds `lower`.
    ///
    /// The atoms of the literals taken from `last` are not passed to `f`
    /// but returned (with `last`'s memo): a value of the same shape as the
    /// last one takes the same, and the caller may reuse what it made of them.
    pub(crate) fn scan_lower_reusing<'l, M>(
        &self,
        lower: &[u8],
        last: &'l mut Reuse<M>,
        mut f: impl FnMut(u32),
    ) -> (&'l [u32], &'l mut M) {
        last.taken.clear();
        let Some((Search::Grams(g), atoms)) = &self.contains else {
            self.scan_lower(lower, f);
            return (&last.taken, &mut last.memo);
        };
        self.scan_anchored(lower, &mut f);
        if let Some((g, atoms)) = &self.long_contains {
            g.find_any(lower, |n| f(atoms[n as usize]));
        }
        let shared = common_prefix(&last.text, lower);
        let mut ends = std::mem::take(&mut last.ends);
        let kept = if shared >= REUSE_MIN {
            // Literals of `contains` ending within `shared` were found in
            // `last`; those ending past it are searched for (each tier from
            // where its longest could start).
            ends.retain(|&(_, end)| end as usize <= shared);
            last.taken
                .extend(ends.iter().map(|&(n, _)| atoms[n as usize]));
            shared
        } else {
            ends.clear();
            0
        };
        g.find_any_ending_after(lower, kept, |n, end| {
            if end > kept {
                f(atoms[n as usize]);
                ends.push((n, end as u32));
            }
        });
        last.ends = ends;
        last.text.clear();
        last.text.extend_from_slice(lower);
        (&last.taken, &mut last.memo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Enough literals for the gram search (and a literal set apart as
    /// longer than `REUSE_SPAN`): fillers, plus `extra` drawn from the
    /// values under test so that they occur, at every length class.
    fn big_scan(extra: &[String]) -> FieldScan {
        let mut lits: Vec<(String, Anchor, u32)> = (0..800)
            .map(|i| {
                (
                    format!("filler-{i:04}-literal"),
                    Anchor::Contains,
                    10_000 + i,
                )
            })
            .collect();
        lits.push(("z".repeat(40), Anchor::Contains, 9_999));
        // Found only in some tails: one-, two- and three-byte ones.
        for (i, l) in ["x", "xx", "1x", "x-x"].into_iter().enumerate() {
            lits.push((l.to_owned(), Anchor::Contains, 9_000 + i as u32));
        }
        for (i, l) in extra.iter().enumerate() {
            lits.push((l.to_lowercase(), Anchor::Contains, i as u32));
        }
        FieldScan::build(lits)
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A literal of every length that starts inside the prefix a value
    /// shares with the last one and ends just past it is found, as a full
    /// search finds it.
    #[test]
    fn literals_across_where_a_value_leaves_the_last_one_are_found() {
        let base: String = (0..120)
            .map(|i| char::from(b'a' + (i * 7 % 23) as u8))
            .collect();
        for len in 1..=40usize {
            for past in 1..=len {
                let shared = 80;
                let last = format!("{}#{}", &base[..shared], &base[shared + 1..]);
                let value = format!("{}@{}", &base[..shared], &base[shared + 1..]);
                // Starts `len - past` bytes before the divergence, ends `past` after it.
                let start = shared + past - len;
                let lit = value[start..start + len].to_owned();
                let scan = big_scan(std::slice::from_ref(&lit));
                let (mut buf, mut reuse) = (Buffers::default(), Reuse::<()>::default());
                buf.lower(&last);
                let _ = scan.scan_lower_reusing(&buf.lower, &mut reuse, |_| {});
                buf.lower(&value);
                let mut full = Vec::new();
                scan.scan_lower(&buf.lower, |a| full.push(a));
                let mut reused = Vec::new();
                let (taken, _) =
                    scan.scan_lower_reusing(&buf.lower, &mut reuse, |a| reused.push(a));
                reused.extend_from_slice(taken);
                assert!(full.contains(&0), "{lit:?} not in {value:?}");
                assert_eq!(
                    sorted(reused),
                    sorted(full),
                    "{lit:?} ({len} bytes, {past} past)"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn common_prefix_counts_the_bytes_two_values_begin_with_alike(
            a in proptest::collection::vec(0u8..4, 0..40),
            b in proptest::collection::vec(0u8..4, 0..40),
            join in 0usize..40,
        ) {
            // Often sharing a long start: `b` begins with part of `a`.
            let b: Vec<u8> = a.iter().take(join).chain(&b).copied().collect();
            let naive = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            prop_assert_eq!(common_prefix(&a, &b), naive);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Values that share prefixes of every length with the one searched
        /// before them: taking that value's literals must find exactly what
        /// a full search finds.
        #[test]
        fn reusing_the_last_value_finds_what_a_full_search_finds(
            base in "[a-d/ \\-]{60,140}",
            tails in proptest::collection::vec(("[0-9]{0,3}", "[a-d/ x1-]{0,60}"), 1..8),
            picks in proptest::collection::vec((0usize..8, 0usize..200, 1usize..48), 1..40),
        ) {
            let values: Vec<String> = tails
                .iter()
                .map(|(cut, tail)| {
                    let keep = cut.parse::<usize>().unwrap_or(0) % (base.len() + 1);
                    format!("{}{}", &base[..keep], tail)
                })
                .collect();
            // Literals cut from the values (1 to 47 bytes, so across the
            // short, mid, long and longer-than-REUSE_SPAN classes), many
            // across where a value leaves the one before it.
            let extra: Vec<String> = picks
                .iter()
                .filter_map(|&(v, at, len)| {
                    let value = &values[v % values.len()];
                    let at = at % value.len().max(1);
                    value.get(at..(at + len).min(value.len()))
                })
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let scan = big_scan(&extra);
            let mut last = Reuse::<()>::default();
            let mut buf = Buffers::default();
            for value in &values {
                buf.lower(value);
                let mut full = Vec::new();
                scan.scan_lower(&buf.lower, |a| full.push(a));
                let mut reused = Vec::new();
                let (taken, _) = scan.scan_lower_reusing(&buf.lower, &mut last, |a| reused.push(a));
                reused.extend_from_slice(taken);
                prop_assert_eq!(sorted(reused), sorted(full), "{:?}", value);
            }
        }
    }

    fn hits(scan: &FieldScan, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        scan.scan(text, &mut Buffers::default(), |a| out.push(a));
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn anchors_are_honoured_for_few_and_many_literals() {
        for extra in [0, 100, 1000] {
            let mut lits = vec![
                ("cmd.exe".to_owned(), Anchor::Exact, 0),
                ("c:\\windows\\".to_owned(), Anchor::Prefix, 1),
                ("\\cmd.exe".to_owned(), Anchor::Suffix, 2),
                ("cmd".to_owned(), Anchor::Contains, 3),
                ("windows".to_owned(), Anchor::Prefix, 4),
                ("c:".to_owned(), Anchor::Prefix, 5),
            ];
            for i in 0..extra {
                lits.push((format!("filler{i}"), Anchor::Contains, 100 + i));
                lits.push((format!("pre{i}"), Anchor::Prefix, 1000 + i));
                lits.push((format!("suf{i}"), Anchor::Suffix, 2000 + i));
            }
            let s = FieldScan::build(lits);
            assert_eq!(hits(&s, "C:\\Windows\\System32\\CMD.exe"), vec![1, 2, 3, 5]);
            assert_eq!(hits(&s, "cmd.exe"), vec![0, 3]);
            assert_eq!(hits(&s, "x c:\\windows\\cmd.exe y"), vec![3]);
            assert_eq!(hits(&s, ""), Vec::<u32>::new());
            if extra > 0 {
                assert_eq!(hits(&s, "pre7 filler3 suf9"), vec![103, 1007, 2009]);
            }
        }
    }

    /// The fallback when a trie cannot be built walks the same literals by grams.
    #[test]
    fn gram_walks_find_the_same_prefixes_and_suffixes_as_tries() {
        let lits: Vec<Vec<u8>> = ["c:", "c:\\windows\\", "exe.", "exe.dmc\\", "x"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let trie = walk(&lits);
        assert!(matches!(trie, Walk::Trie(_)));
        let grams = Walk::Grams(Box::new(GramSet::new(lits)));
        for hay in ["c:\\windows\\system32\\cmd.exe", "xc:", "", "c:", "cmd.exe"] {
            for backwards in [false, true] {
                let found = |w: &Walk| {
                    let mut v = Vec::new();
                    w.prefixes(hay.as_bytes(), backwards, |p| v.push(p));
                    v.sort_unstable();
                    v
                };
                assert_eq!(found(&trie), found(&grams), "{hay} backwards={backwards}");
            }
        }
    }

    #[test]
    fn non_ascii_values_are_lower_cased_first() {
        let s = FieldScan::build(vec![("ünïcode".to_owned(), Anchor::Contains, 7)]);
        assert_eq!(hits(&s, "X ÜNÏCODE Y"), vec![7]);
    }
}
