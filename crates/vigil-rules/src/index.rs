//! The prefilter: for one log source, every literal some rule needs, per
//! field, in one Aho-Corasick automaton. An event's fields are lower-cased once
//! and scanned once; a rule is evaluated only when each of its clauses (see
//! [`crate::field::Clauses`]) saw one of its literals, or when no clause could
//! be derived for it. Cost grows with matches, not with the number of rules.

use crate::eval::Ctx;
use crate::logsource::LogSource;
use crate::rule::Rule;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// Fields with at most this many literals get a DFA automaton.
const DFA_MAX_PATTERNS: usize = 2000;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Debug)]
struct FieldScan {
    field: String,
    id: u32,
    ac: AhoCorasick,
    /// Pattern id → (rule, clause) pairs that the literal satisfies.
    hits: Vec<Vec<(u32, u8)>>,
}

#[derive(Debug)]
pub(crate) struct Index {
    /// Rules with no derivable clause: always evaluated.
    always: Vec<u32>,
    fields: Vec<FieldScan>,
    /// Per rule: the bit mask with one bit per clause (0 when not indexed).
    full: Vec<u8>,
    /// How many rules apply to the source at all.
    pub(crate) applicable: usize,
}

/// Per-thread scratch so candidate selection allocates nothing per event.
#[derive(Default)]
struct Scratch {
    mask: Vec<u8>,
    stamp: Vec<u32>,
    epoch: u32,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Index {
    pub(crate) fn build(
        rules: &[Rule],
        source: &LogSource,
        field_id: impl Fn(&str) -> u32,
    ) -> Index {
        let mut always = Vec::new();
        let mut full = vec![0u8; rules.len()];
        let mut per_field: HashMap<String, HashMap<String, Vec<(u32, u8)>>> = HashMap::new();
        let mut applicable = 0;
        for (i, r) in rules.iter().enumerate() {
            if !r.logsource.covers(source) {
                continue;
            }
            applicable += 1;
            let clauses = r.detection.clauses();
            if clauses.is_empty() {
                always.push(i as u32);
                continue;
            }
            full[i] = ((1u16 << clauses.len()) - 1) as u8;
            for (c, clause) in clauses.into_iter().enumerate() {
                for (field, lit) in clause {
                    let e = per_field.entry(field).or_default().entry(lit).or_default();
                    if !e.contains(&(i as u32, c as u8)) {
                        e.push((i as u32, c as u8));
                    }
                }
            }
        }
        let mut fields = Vec::new();
        let mut names: Vec<_> = per_field.into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (field, lits) in names {
            let mut lits: Vec<(String, Vec<(u32, u8)>)> = lits.into_iter().collect();
            lits.sort();
            // A DFA scans fastest; for the few fields with thousands of
            // literals (hash lists) its memory is not worth it.
            let kind = if lits.len() <= DFA_MAX_PATTERNS {
                Some(AhoCorasickKind::DFA)
            } else {
                None
            };
            // ASCII case-insensitive, so ASCII text (the common case) is
            // scanned as it is, without lower-casing it first.
            let built = AhoCorasickBuilder::new()
                .kind(kind)
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(lits.iter().map(|(l, _)| l.as_str()))
                .or_else(|_| {
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .build(lits.iter().map(|(l, _)| l.as_str()))
                });
            match built {
                Ok(ac) => fields.push(FieldScan {
                    id: field_id(&field),
                    field,
                    ac,
                    hits: lits.into_iter().map(|(_, h)| h).collect(),
                }),
                Err(_) => {
                    // Could not build: evaluate these rules unconditionally.
                    for (_, hs) in lits {
                        for (r, _) in hs {
                            full[r as usize] = 0;
                            always.push(r);
                        }
                    }
                }
            }
        }
        always.sort_unstable();
        always.dedup();
        Index {
            always,
            fields,
            full,
            applicable,
        }
    }

    /// Rules worth evaluating for the event in `ctx`, sorted, without duplicates.
    pub(crate) fn candidates<'r>(&'r self, ctx: &mut Ctx<'r, '_>, out: &mut Vec<u32>) {
        out.clear();
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let s = &mut *s;
            if s.mask.len() < self.full.len() {
                s.mask.resize(self.full.len(), 0);
                s.stamp.resize(self.full.len(), 0);
            }
            s.epoch = s.epoch.wrapping_add(1);
            if s.epoch == 0 {
                s.stamp.iter_mut().for_each(|x| *x = 0);
                s.epoch = 1;
            }
            s.touched.clear();
            for f in &self.fields {
                let slot = ctx.slot(f.id, &f.field);
                if slot.is_missing() {
                    continue;
                }
                // Non-ASCII text is lower-cased first (Unicode case folding
                // is beyond the automaton's ASCII case-insensitivity).
                let hay = if slot.text().is_ascii() {
                    slot.text()
                } else {
                    slot.lower()
                };
                for m in f.ac.find_overlapping_iter(hay) {
                    for &(r, c) in &f.hits[m.pattern().as_usize()] {
                        let ri = r as usize;
                        if s.stamp[ri] != s.epoch {
                            s.stamp[ri] = s.epoch;
                            s.mask[ri] = 0;
                            s.touched.push(r);
                        }
                        s.mask[ri] |= 1 << c;
                    }
                }
            }
            out.extend(
                s.touched
                    .iter()
                    .copied()
                    .filter(|&r| s.mask[r as usize] == self.full[r as usize]),
            );
        });
        out.extend_from_slice(&self.always);
        out.sort_unstable();
        out.dedup();
    }

    pub(crate) fn unconditional(&self) -> usize {
        self.always.len()
    }

    pub(crate) fn unconditional_rules(&self) -> &[u32] {
        &self.always
    }
}
