//! A rule's detection compiled against one log source's literal table.
//!
//! Field entries whose outcome is fully decided by case-insensitive literals
//! (the bulk of Sigma: `Image|endswith`, `CommandLine|contains`, exact
//! `OriginalFileName`) become [`Node::Atoms`]: bits the field scan set for
//! the event; keyword lists of literals likewise, over every value.
//! Everything else (regexes, wildcards inside a value, numbers, `cidr`,
//! `cased`, `exists`, `fieldref`) stays a
//! [`Node::Residual`], evaluated on the event itself and only when the atoms
//! around it have not already decided the rule.
//!
//! The same tree yields the rule's prefilter [clauses](Node::clauses): what
//! any matching event must contain, in conjunctive normal form over atoms.

use crate::detection::{Detection, Expr, Selection};
use crate::eval::Ctx;
use crate::field::FieldMatcher;
use crate::pattern::Anchor;

/// Most clauses kept per rule (the most selective ones): each is a bitset
/// an event fills, and past four they rarely narrow the candidates further.
pub(crate) const MAX_CLAUSES: usize = 4;

/// Clauses in conjunctive normal form: each inner list is a disjunction of atoms.
pub(crate) type AtomClauses = Vec<Vec<u32>>;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A field entry decided by literals: any (or, with `|all`, every) atom
    /// set; `negate` for `|neq`.
    Atoms {
        ids: Box<[u32]>,
        /// The same atoms as (64-bit word of the atom bits, mask): a rule's
        /// literals are interned together, so a long list is a few words.
        words: Box<[(u32, u64)]>,
        all: bool,
        negate: bool,
    },
    /// A field entry evaluated on the event: the entry's place in its
    /// detection, and what its values need (as clauses) for the prefilter
    /// and to decide it false without reading the event.
    Residual {
        /// Selection, map within it, entry within the map.
        at: [u32; 3],
        /// For a keyword entry taken value by value: the value
        /// ([`WHOLE`]: the entry).
        value: u32,
        hints: AtomClauses,
        /// For an entry that reads only its own field: (field, id) under
        /// which its result is remembered with the field's cached value.
        memo: Option<(u32, u32)>,
    },
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    /// At least `n` of the nodes (`usize::MAX`: all).
    AtLeast(usize, Vec<Node>),
}

/// Results of residual entries remembered per field value (see
/// [`Node::Residual`]'s `memo`): a regex over a command line seen before is
/// not run again.
pub(crate) trait Memo {
    fn get(&self, field: u32, id: u32) -> Option<bool>;
    fn put(&mut self, field: u32, id: u32, result: bool);
}

/// What the field scan found for the event under evaluation.
pub(crate) struct Facts<'a> {
    /// One bit per atom of the log source.
    pub(crate) bits: &'a [u64],
    pub(crate) memo: Option<&'a mut dyn Memo>,
}

fn entry_at(det: &Detection, [sel, map, entry]: [u32; 3]) -> Option<&FieldMatcher> {
    det.entry(sel as usize, map as usize, entry as usize)
}

/// Interns (field, lower-cased literal, anchor) as an atom id.
pub(crate) type Intern<'a> = dyn FnMut(&str, &str, Anchor) -> u32 + 'a;

impl Node {
    /// A field entry decided by the atoms `ids`.
    pub(crate) fn atoms(ids: Vec<u32>, all: bool, negate: bool) -> Node {
        let mut words: Vec<(u32, u64)> = Vec::new();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        for a in sorted {
            let (w, bit) = (a / 64, 1u64 << (a % 64));
            match words.last_mut() {
                Some((lw, m)) if *lw == w => *m |= bit,
                _ => words.push((w, bit)),
            }
        }
        Node::Atoms {
            ids: ids.into_boxed_slice(),
            words: words.into_boxed_slice(),
            all,
            negate,
        }
    }

    /// Compiles `det`'s condition. `intern` gives atom ids.
    pub(crate) fn compile(det: &Detection, intern: &mut Intern<'_>) -> Node {
        let mut n = lower(det, det.condition(), intern);
        n.order();
        n
    }

    /// Evaluates the node; residual entries read the event through `ctx`.
    pub(crate) fn eval<'r>(
        &self,
        facts: &mut Facts<'_>,
        det: &'r Detection,
        ctx: &mut Ctx<'r, '_>,
    ) -> bool {
        match self {
            Node::Atoms {
                words, all, negate, ..
            } => {
                let word = |w: u32| facts.bits.get(w as usize).copied().unwrap_or(0);
                let r = if *all {
                    words.iter().all(|&(w, m)| word(w) & m == m)
                } else {
                    words.iter().any(|&(w, m)| word(w) & m != 0)
                };
                r != *negate
            }
            Node::Residual {
                at,
                value,
                memo,
                hints,
            } => {
                // A value the entry matches holds an atom of every hint
                // clause (the prefilter's own guarantee): without one, the
                // entry is false and the event need not be read.
                let set = |a: u32| {
                    facts
                        .bits
                        .get(a as usize / 64)
                        .is_some_and(|w| w >> (a % 64) & 1 != 0)
                };
                if !hints.iter().all(|c| c.iter().any(|&a| set(a))) {
                    return false;
                }
                if let (Some((f, id)), Some(m)) = (memo, facts.memo.as_deref())
                    && let Some(r) = m.get(*f, *id)
                {
                    return r;
                }
                let r = entry_at(det, *at).is_some_and(|m| match *value {
                    WHOLE => m.matches(ctx),
                    k => m.keyword_matches(k as usize, ctx),
                });
                if let (Some((f, id)), Some(m)) = (memo, facts.memo.as_deref_mut()) {
                    m.put(*f, *id, r);
                }
                r
            }
            Node::Not(inner) => !inner.eval(facts, det, ctx),
            Node::And(items) => items.iter().all(|i| i.eval(facts, det, ctx)),
            Node::Or(items) => items.iter().any(|i| i.eval(facts, det, ctx)),
            Node::AtLeast(n, items) => {
                let want = if *n == usize::MAX { items.len() } else { *n };
                let mut hits = 0;
                for i in items {
                    if i.eval(facts, det, ctx) {
                        hits += 1;
                        if hits >= want {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }

    /// Gives every residual entry that reads only its own field a memo id;
    /// `field` maps such an entry to its field's index (`None`: not kept).
    pub(crate) fn assign_memos(
        &mut self,
        det: &Detection,
        field: &impl Fn(&FieldMatcher) -> Option<u32>,
        next: &mut u32,
    ) {
        match self {
            Node::Residual { at, memo, .. } => {
                *memo = entry_at(det, *at)
                    .filter(|m| m.reads_only_its_field())
                    .and_then(field)
                    .map(|f| {
                        *next += 1;
                        (f, *next - 1)
                    });
            }
            Node::Not(i) => i.assign_memos(det, field, next),
            Node::And(v) | Node::Or(v) | Node::AtLeast(_, v) => {
                v.iter_mut().for_each(|n| n.assign_memos(det, field, next))
            }
            Node::Atoms { .. } => {}
        }
    }

    /// Relative evaluation cost: literal bits are nearly free, the event is not.
    fn cost(&self) -> usize {
        match self {
            Node::Atoms { .. } => 1,
            Node::Residual { .. } => 100,
            Node::Not(i) => i.cost(),
            Node::And(v) | Node::Or(v) | Node::AtLeast(_, v) => v.iter().map(Node::cost).sum(),
        }
    }

    /// Puts cheap operands first, so literal bits usually decide before the
    /// event is read (evaluation has no side effects, so order is free).
    fn order(&mut self) {
        match self {
            Node::Not(i) => i.order(),
            Node::And(v) | Node::Or(v) | Node::AtLeast(_, v) => {
                v.iter_mut().for_each(Node::order);
                v.sort_by_key(Node::cost);
            }
            Node::Atoms { .. } | Node::Residual { .. } => {}
        }
    }

    /// What any event this node matches must contain; `weight` rates an
    /// atom's selectivity (higher: rarer). Empty: no guarantee.
    pub(crate) fn clauses(&self, weight: &impl Fn(u32) -> usize) -> AtomClauses {
        match self {
            Node::Atoms { negate: true, .. } => Vec::new(),
            Node::Atoms { ids, all: true, .. } => {
                all_of(ids.iter().map(|&a| vec![vec![a]]), weight)
            }
            Node::Atoms { ids, .. } => vec![ids.to_vec()],
            Node::Residual { hints, .. } => hints.clone(),
            Node::Not(_) => Vec::new(),
            Node::And(items) => all_of(items.iter().map(|i| i.clauses(weight)), weight),
            Node::Or(items) => any_of(items.iter().map(|i| i.clauses(weight)), weight),
            Node::AtLeast(n, items) if *n >= items.len() => {
                all_of(items.iter().map(|i| i.clauses(weight)), weight)
            }
            Node::AtLeast(_, items) => any_of(items.iter().map(|i| i.clauses(weight)), weight),
        }
    }
}

/// How selective a clause looks: its weakest atom, then fewer alternatives.
fn score(c: &[u32], weight: &impl Fn(u32) -> usize) -> (usize, std::cmp::Reverse<usize>) {
    (
        c.iter().map(|&a| weight(a)).min().unwrap_or(0),
        std::cmp::Reverse(c.len()),
    )
}

/// Cross products of clauses tried when distributing an `or` (see [`any_of`]).
const MAX_PRODUCT: usize = 64;

/// Either of several alternatives must hold. In CNF, `(A1 and A2) or B` is
/// `(A1 or B) and (A2 or B)`: every way of picking one clause per
/// alternative gives a clause (their union). All such clauses are kept
/// when there are few (the most selective when many, from each
/// alternative's best clauses); nothing if any alternative has no clause.
fn any_of(
    alternatives: impl Iterator<Item = AtomClauses>,
    weight: &impl Fn(u32) -> usize,
) -> AtomClauses {
    let mut alts: Vec<AtomClauses> = Vec::new();
    for mut a in alternatives {
        if a.is_empty() {
            return Vec::new();
        }
        a.sort_by_key(|c| std::cmp::Reverse(score(c, weight)));
        alts.push(a);
    }
    if alts.is_empty() {
        return Vec::new();
    }
    // Fewer clauses from the alternatives with most, until the product is small.
    let mut keep: Vec<usize> = alts.iter().map(Vec::len).collect();
    while keep.iter().product::<usize>() > MAX_PRODUCT {
        let Some(most) = (0..keep.len()).max_by_key(|&i| keep[i]) else {
            break;
        };
        keep[most] -= 1;
    }
    let mut out: AtomClauses = vec![Vec::new()];
    for (a, &k) in alts.iter().zip(&keep) {
        out = out
            .iter()
            .flat_map(|prefix| {
                a.iter().take(k).map(move |c| {
                    let mut u = prefix.clone();
                    u.extend_from_slice(c);
                    u
                })
            })
            .collect();
    }
    for c in &mut out {
        c.sort_unstable();
        c.dedup();
    }
    all_of(std::iter::once(out), weight)
}

fn all_of(parts: impl Iterator<Item = AtomClauses>, weight: &impl Fn(u32) -> usize) -> AtomClauses {
    let mut out: AtomClauses = parts.flatten().collect();
    out.sort_by_key(|c| std::cmp::Reverse(score(c, weight)));
    out.dedup();
    out.truncate(MAX_CLAUSES);
    out
}

fn lower(det: &Detection, e: &Expr, intern: &mut Intern<'_>) -> Node {
    match e {
        Expr::Sel(i) => selection(det, *i, intern),
        Expr::Not(inner) => Node::Not(Box::new(lower(det, inner, intern))),
        Expr::And(items) => Node::And(items.iter().map(|i| lower(det, i, intern)).collect()),
        Expr::Or(items) => Node::Or(items.iter().map(|i| lower(det, i, intern)).collect()),
        Expr::AtLeast(n, sels) => Node::AtLeast(
            *n,
            sels.iter().map(|&s| selection(det, s, intern)).collect(),
        ),
    }
}

fn selection(det: &Detection, sel: usize, intern: &mut Intern<'_>) -> Node {
    let Some(Selection::AnyOf(maps)) = det.selections().get(sel) else {
        return Node::Or(Vec::new());
    };
    let maps: Vec<Node> = maps
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let entries = m
                .iter()
                .enumerate()
                .map(|(ei, f)| entry(f, [sel, mi, ei], intern))
                .collect();
            Node::And(entries)
        })
        .collect();
    if maps.len() == 1 {
        maps.into_iter().next().unwrap_or(Node::Or(Vec::new()))
    } else {
        Node::Or(maps)
    }
}

/// The field keyword atoms belong to: searched in every string and number
/// value of the event (no event field can be named so).
pub(crate) const KEYWORDS: &str = "\0keywords";

/// [`Node::Residual`]'s `value` for an entry evaluated whole.
const WHOLE: u32 = u32::MAX;

fn entry(f: &FieldMatcher, [sel, map, entry]: [usize; 3], intern: &mut Intern<'_>) -> Node {
    let at = [sel as u32, map as u32, entry as u32];
    if let Some((lits, all)) = f.literal_atoms() {
        let field = f.field.as_deref().unwrap_or(KEYWORDS);
        let mut ids: Vec<u32> = lits.iter().map(|(l, a)| intern(field, l, *a)).collect();
        if !all {
            ids.sort_unstable();
            ids.dedup();
        }
        return Node::atoms(ids, all, f.negate);
    }
    if f.field.is_none() {
        return keywords(f, at, intern);
    }
    let hints = f
        .clauses()
        .into_iter()
        .map(|c| {
            let mut c: Vec<u32> = c
                .iter()
                .map(|(field, l)| intern(field, l, Anchor::Contains))
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        })
        .collect();
    Node::Residual {
        at,
        value: WHOLE,
        hints,
        memo: None,
    }
}

/// A keyword entry that literals alone do not decide (a wildcard, a regex,
/// `cased` among its values), taken value by value: its plain literals as
/// keyword atoms, each other value a residual over every value of the
/// event whose hints are all the literals it needs (every literal run of a
/// wildcard value), combined as the entry combines them (`|all`: every
/// one; `|neq`: negated). A rule is then a candidate only when some value
/// holds one of its literals, and a wildcard value lacking one of its runs
/// is decided false from the atom bits, without reading the event.
fn keywords(f: &FieldMatcher, at: [u32; 3], intern: &mut Intern<'_>) -> Node {
    let mut lits = Vec::new();
    let mut items = Vec::new();
    for (k, m) in f.matchers.iter().enumerate() {
        if let Some((l, a)) = m.plain_literal() {
            lits.push(intern(KEYWORDS, l, a));
            continue;
        }
        let hints = m
            .required_clauses()
            .into_iter()
            .map(|c| {
                let mut c: Vec<u32> = c
                    .iter()
                    .map(|l| intern(KEYWORDS, l, Anchor::Contains))
                    .collect();
                c.sort_unstable();
                c.dedup();
                c
            })
            .collect();
        items.push(Node::Residual {
            at,
            value: k as u32,
            hints,
            memo: None,
        });
    }
    if !lits.is_empty() {
        lits.sort_unstable();
        lits.dedup();
        items.push(Node::atoms(lits, f.all, false));
    }
    let n = if f.all {
        Node::And(items)
    } else {
        Node::Or(items)
    };
    if f.negate { Node::Not(Box::new(n)) } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atoms(ids: &[u32]) -> Node {
        Node::atoms(ids.to_vec(), false, false)
    }

    fn sorted(mut c: AtomClauses) -> AtomClauses {
        c.sort();
        c
    }

    #[test]
    fn an_or_of_ands_distributes_into_every_clause() {
        // (1 and 2) or 3  ==  (1 or 3) and (2 or 3)
        let n = Node::Or(vec![Node::And(vec![atoms(&[1]), atoms(&[2])]), atoms(&[3])]);
        assert_eq!(sorted(n.clauses(&|_| 1)), vec![vec![1, 3], vec![2, 3]]);
    }

    #[test]
    fn an_alternative_without_clauses_leaves_the_or_without_any() {
        let n = Node::Or(vec![atoms(&[1]), Node::Not(Box::new(atoms(&[2])))]);
        assert!(n.clauses(&|_| 1).is_empty());
    }

    #[test]
    fn large_products_keep_a_bounded_number_of_valid_clauses() {
        // Ten alternatives of three single-atom clauses each: 3^10 products.
        let alts = (0..10u32)
            .map(|i| Node::And((0..3).map(|j| atoms(&[i * 3 + j])).collect()))
            .collect();
        let clauses = Node::Or(alts).clauses(&|a| a as usize);
        assert!(!clauses.is_empty() && clauses.len() <= MAX_CLAUSES);
        for c in &clauses {
            // Each clause names one atom of every alternative: any event
            // matching some alternative satisfies it.
            for i in 0..10u32 {
                assert!(c.iter().any(|a| a / 3 == i), "{c:?}");
            }
        }
    }
}
