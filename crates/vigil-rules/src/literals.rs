//! Many case-insensitive literals of one field, matched together: a hash set
//! for exact values, Aho-Corasick automata for prefixes, suffixes and
//! substrings once a list is long enough that one pass beats a loop.

use crate::pattern::Anchor;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, MatchKind, StartKind};
use std::collections::HashSet;

/// Below this many values a plain loop is faster than an automaton.
const AUTOMATON_FROM: usize = 6;

#[derive(Debug, Clone)]
enum Multi {
    Few(Vec<String>),
    /// Substring needles with their searchers built once.
    FewFinders(Vec<memchr::memmem::Finder<'static>>),
    Many(AhoCorasick),
}

impl Multi {
    fn build(needles: Vec<String>, anchored: bool) -> Option<Multi> {
        if needles.is_empty() {
            return None;
        }
        if needles.len() < AUTOMATON_FROM {
            return Some(Multi::Few(needles));
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .start_kind(if anchored {
                StartKind::Anchored
            } else {
                StartKind::Unanchored
            })
            .build(&needles)
            .ok()?;
        Some(Multi::Many(ac))
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LiteralSet {
    /// Every needle with its anchor, for the prefilter.
    pub(crate) lits: Vec<(String, Anchor)>,
    exact: HashSet<String>,
    prefix: Option<Multi>,
    suffix: Option<Multi>,
    contains: Option<Multi>,
}

impl LiteralSet {
    /// `lits` are (lower-cased needle, anchor).
    pub(crate) fn build(lits: Vec<(String, Anchor)>) -> LiteralSet {
        let mut set = LiteralSet {
            lits: lits.clone(),
            ..LiteralSet::default()
        };
        let (mut p, mut s, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for (n, a) in lits {
            match a {
                Anchor::Exact => {
                    set.exact.insert(n);
                }
                Anchor::Prefix => p.push(n),
                Anchor::Suffix => s.push(n),
                Anchor::Contains => c.push(n),
            }
        }
        // An empty needle matches everything in its position.
        set.prefix = Multi::build(p, true);
        set.suffix = Multi::build(s, false);
        set.contains = Multi::build(c, false).map(|m| match m {
            Multi::Few(ns) => Multi::FewFinders(
                ns.iter()
                    .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                    .collect(),
            ),
            other => other,
        });
        set
    }

    /// Whether any literal matches the lower-cased `hay`.
    pub(crate) fn matches(&self, hay: &str) -> bool {
        if self.exact.contains(hay) {
            return true;
        }
        if let Some(m) = &self.prefix {
            let hit = match m {
                Multi::Few(ns) => ns.iter().any(|n| hay.starts_with(n.as_str())),
                Multi::FewFinders(_) => false,
                Multi::Many(ac) => ac.find(Input::new(hay).anchored(Anchored::Yes)).is_some(),
            };
            if hit {
                return true;
            }
        }
        if let Some(m) = &self.suffix {
            let hit = match m {
                Multi::Few(ns) => ns.iter().any(|n| hay.ends_with(n.as_str())),
                Multi::FewFinders(_) => false,
                Multi::Many(ac) => ac.find_overlapping_iter(hay).any(|m| m.end() == hay.len()),
            };
            if hit {
                return true;
            }
        }
        if let Some(m) = &self.contains {
            return match m {
                Multi::Few(ns) => ns
                    .iter()
                    .any(|n| memchr::memmem::find(hay.as_bytes(), n.as_bytes()).is_some()),
                Multi::FewFinders(fs) => fs.iter().any(|f| f.find(hay.as_bytes()).is_some()),
                Multi::Many(ac) => ac.is_match(hay),
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_lists_agree() {
        for n in [2, 50] {
            let mut lits = Vec::new();
            for i in 0..n {
                lits.push((format!("exact{i}"), Anchor::Exact));
                lits.push((format!("pre{i}-"), Anchor::Prefix));
                lits.push((format!("-suf{i}"), Anchor::Suffix));
                lits.push((format!("mid{i}mid"), Anchor::Contains));
            }
            let s = LiteralSet::build(lits);
            assert!(s.matches("exact1"));
            assert!(!s.matches("exact1x"));
            assert!(s.matches("pre1-rest"));
            assert!(!s.matches("xpre1-rest"));
            assert!(s.matches("rest-suf1"));
            assert!(!s.matches("rest-suf1x"));
            assert!(s.matches("aamid1midbb"));
            assert!(!s.matches("nothing"));
            // A suffix that also occurs earlier in the haystack still counts at the end.
            assert!(s.matches("-suf1 and -suf1"));
        }
    }
}
