//! Literals a regex cannot match without: one of a small set of strings every
//! match contains, anywhere in it (not only as a prefix or suffix, which is
//! all regex-syntax's extractor offers). Found by walking the parsed regex:
//! a concatenation needs what any of its parts needs, or the run of exact
//! parts side by side; an alternation needs one of what each branch needs.
//! Strings are lower-cased, and a class such as `[Ww]` (what `(?i)` makes of
//! a letter) counts as its one lower-case letter, because the prefilter
//! compares lower-cased text.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Most strings in one set; more make the set useless as a filter.
const MAX_SET: usize = 16;
/// Longest string kept exact (longer runs are cut into candidates).
const MAX_LEN: usize = 64;
/// Most characters of a class expanded (after lower-casing, at most four distinct).
const MAX_CLASS_CHARS: usize = 64;

#[derive(Debug, Clone, Default)]
struct Info {
    /// Every string the node can match, when there are few.
    exact: Option<Vec<String>>,
    /// A set one of which every match contains (the best known).
    required: Option<Vec<String>>,
}

/// How useful a set is as a filter: its shortest string, then fewer strings.
fn score(set: &[String]) -> (usize, std::cmp::Reverse<usize>) {
    (
        set.iter().map(String::len).min().unwrap_or(0),
        std::cmp::Reverse(set.len()),
    )
}

fn usable(set: &[String]) -> bool {
    !set.is_empty() && set.len() <= MAX_SET && set.iter().all(|s| !s.is_empty())
}

fn better(a: Option<Vec<String>>, b: Option<Vec<String>>) -> Option<Vec<String>> {
    match (a.filter(|s| usable(s)), b.filter(|s| usable(s))) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn product(a: &[String], b: &[String]) -> Option<Vec<String>> {
    if a.len() * b.len() > MAX_SET {
        return None;
    }
    let mut out: Vec<String> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| format!("{x}{y}")))
        .collect();
    if out.iter().any(|s| s.len() > MAX_LEN) {
        return None;
    }
    out.sort();
    out.dedup();
    Some(out)
}

fn class(c: &Class) -> Option<Vec<String>> {
    let mut chars: Vec<char> = Vec::new();
    match c {
        Class::Unicode(u) => {
            for r in u.ranges() {
                let n = (r.end() as usize).saturating_sub(r.start() as usize) + 1;
                if chars.len() + n > MAX_CLASS_CHARS {
                    return None;
                }
                chars.extend(r.start()..=r.end());
            }
        }
        Class::Bytes(b) => {
            for r in b.ranges() {
                if !r.end().is_ascii() {
                    return None;
                }
                let n = usize::from(r.end() - r.start()) + 1;
                if chars.len() + n > MAX_CLASS_CHARS {
                    return None;
                }
                chars.extend((r.start()..=r.end()).map(char::from));
            }
        }
    }
    let mut out: Vec<String> = chars.iter().map(|c| c.to_lowercase().collect()).collect();
    out.sort();
    out.dedup();
    (out.len() <= 4).then_some(out)
}

fn info(h: &Hir) -> Info {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Info {
            exact: Some(vec![String::new()]),
            required: None,
        },
        HirKind::Literal(l) => match std::str::from_utf8(&l.0) {
            Ok(s) if s.len() <= MAX_LEN => {
                let s = crate::eval::lowercase(s);
                Info {
                    required: Some(vec![s.clone()]),
                    exact: Some(vec![s]),
                }
            }
            _ => Info::default(),
        },
        HirKind::Class(c) => {
            let exact = class(c);
            Info {
                required: exact.clone(),
                exact,
            }
        }
        HirKind::Capture(c) => info(&c.sub),
        HirKind::Repetition(r) => {
            let sub = info(&r.sub);
            if r.min == 0 {
                let exact = match (&sub.exact, r.max) {
                    (Some(e), Some(1)) => {
                        let mut e = e.clone();
                        e.push(String::new());
                        e.sort();
                        e.dedup();
                        Some(e)
                    }
                    _ => None,
                };
                return Info {
                    exact,
                    required: None,
                };
            }
            let required = better(sub.required, sub.exact.clone());
            let exact = if r.max == Some(1) { sub.exact } else { None };
            Info { exact, required }
        }
        HirKind::Concat(parts) => {
            let mut best: Option<Vec<String>> = None;
            let mut run: Vec<String> = vec![String::new()];
            let mut all_exact = true;
            for p in parts {
                let i = info(p);
                best = better(best, i.required);
                // An optional part (its exact set holds "") adds nothing
                // required: end the run there rather than multiply it out.
                let exact = i
                    .exact
                    .filter(|e| !e.iter().any(String::is_empty) || e.len() == 1);
                match exact.and_then(|e| product(&run, &e)) {
                    Some(r) => run = r,
                    None => {
                        all_exact = false;
                        best = better(best, Some(std::mem::replace(&mut run, vec![String::new()])));
                    }
                }
            }
            let exact = all_exact.then(|| run.clone());
            best = better(best, Some(run));
            Info {
                exact,
                required: best,
            }
        }
        HirKind::Alternation(branches) => {
            let infos: Vec<Info> = branches.iter().map(info).collect();
            let exact = infos
                .iter()
                .map(|i| i.exact.clone())
                .collect::<Option<Vec<_>>>()
                .map(|v| {
                    let mut v: Vec<String> = v.into_iter().flatten().collect();
                    v.sort();
                    v.dedup();
                    v
                })
                .filter(|v| v.len() <= MAX_SET);
            let mut required = Vec::new();
            for i in infos {
                match better(i.required, i.exact) {
                    Some(r) => required.extend(r),
                    None => {
                        return Info {
                            exact,
                            required: None,
                        };
                    }
                }
            }
            required.sort();
            required.dedup();
            Info {
                exact,
                required: Some(required).filter(|r| usable(r)),
            }
        }
    }
}

/// Lower-cased strings one of which every match of `hir` contains, or `None`.
pub(crate) fn required_literals(hir: &Hir) -> Option<Vec<String>> {
    let i = info(hir);
    better(i.required, i.exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(re: &str) -> Option<Vec<String>> {
        required_literals(&regex_syntax::parse(re).unwrap())
    }

    fn set(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn finds_inner_literals() {
        assert_eq!(
            req(r#"(?i)\.exe["']?\s+[^"]{0,64}werfaultsecure\.exe["']?\s+\d{2,10}"#),
            // `(?i)s` also matches U+017F, which lower-cases to itself.
            set(&["werfaultsecure.exe", "werfaultſecure.exe"])
        );
        assert_eq!(req(r"net\s+user\s+"), set(&["user"]));
        assert_eq!(req("foo(bar|baz)"), set(&["foobar", "foobaz"]));
        assert_eq!(req("(?i)IEX"), set(&["iex"]));
        assert_eq!(req(r"\w+`(?:\w+|-|.)`[\w+|\s]"), set(&["`"]));
        assert_eq!(req("abc(?:x|yz)?d"), set(&["abc"]));
        assert_eq!(req("(?:ab|cd)ef"), set(&["abef", "cdef"]));
    }

    #[test]
    fn gives_up_when_nothing_is_required() {
        assert_eq!(req(".*"), None);
        assert_eq!(req("a?"), None);
        assert_eq!(req(r"\s[a-fA-F0-9]{64}\s[a-fA-F0-9]{16}"), None);
        assert_eq!(req("(a|.)b?"), None);
    }
}
