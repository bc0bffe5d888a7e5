//! One Sigma value with its modifiers, compiled to a matcher.

use crate::eval::Slot;
use crate::event::FieldValue;
use regex::{Regex, RegexBuilder};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Upper bound on a compiled regex (the regex crate's own limit), so a rule
/// cannot make the engine allocate without bound.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Anchor {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    /// Literal comparison after optional lower-casing.
    Literal {
        needle: Needle,
        anchor: Anchor,
        cased: bool,
    },
    /// `re`, or wildcards that are not a plain prefix/suffix/contains. The
    /// hints are lower-cased literals one of which every match contains (for
    /// globs, the longest literal run; for `re`, what regex-syntax extracts),
    /// which lets the prefilter skip the regex. Empty: no such literals.
    Regex(Re, Vec<String>),
    /// A YAML number: equal as number, or as its decimal text.
    Number(i64),
    Bool(bool),
    /// `null`: the field is absent or null.
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Star,
    Question,
}

/// A literal's text, with its substring finder built once (at rule
/// compile time, not per comparison) when it is searched for inside values.
#[derive(Debug, Clone)]
pub(crate) struct Needle {
    text: String,
    /// Boxed: a finder is large, and most patterns are not substrings.
    finder: Option<Box<memchr::memmem::Finder<'static>>>,
}

impl Needle {
    fn new(text: String, anchor: Anchor) -> Needle {
        let finder = (anchor == Anchor::Contains)
            .then(|| Box::new(memchr::memmem::Finder::new(text.as_bytes()).into_owned()));
        Needle { text, finder }
    }

    pub(crate) fn into_string(self) -> String {
        self.text
    }
}

impl std::ops::Deref for Needle {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

fn literal(hay: &str, needle: &Needle, anchor: Anchor) -> bool {
    let n = needle.text.as_str();
    match anchor {
        Anchor::Exact => hay == n,
        Anchor::Prefix => hay.starts_with(n),
        Anchor::Suffix => hay.ends_with(n),
        Anchor::Contains => match &needle.finder {
            Some(f) => f.find(hay.as_bytes()).is_some(),
            None => memchr::memmem::find(hay.as_bytes(), n.as_bytes()).is_some(),
        },
    }
}

/// Splits a Sigma string into literal runs and wildcards; `\*`, `\?` and `\\`
/// escape, any other backslash is literal (spec: "Escaping").
fn pieces(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    lit.push(n);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(if c == '*' {
                    Piece::Star
                } else {
                    Piece::Question
                });
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

impl Pattern {
    /// Compiles a string value. `anchor` comes from contains/startswith/endswith.
    pub(crate) fn string(value: &str, anchor: Anchor, cased: bool) -> Result<Pattern, String> {
        let mut p = pieces(value);
        match anchor {
            Anchor::Contains => {
                p.insert(0, Piece::Star);
                p.push(Piece::Star);
            }
            Anchor::Prefix => p.push(Piece::Star),
            Anchor::Suffix => p.insert(0, Piece::Star),
            Anchor::Exact => {}
        }
        p.dedup_by(|a, b| *a == Piece::Star && *b == Piece::Star);
        let fold = |s: &str| {
            if cased {
                s.to_owned()
            } else {
                s.to_lowercase()
            }
        };
        let literal = |s: &str, anchor| Pattern::Literal {
            needle: Needle::new(fold(s), anchor),
            anchor,
            cased,
        };
        Ok(match p.as_slice() {
            [] => literal("", Anchor::Exact),
            [Piece::Star] => literal("", Anchor::Contains),
            [Piece::Lit(s)] => literal(s, Anchor::Exact),
            [Piece::Lit(s), Piece::Star] => literal(s, Anchor::Prefix),
            [Piece::Star, Piece::Lit(s)] => literal(s, Anchor::Suffix),
            [Piece::Star, Piece::Lit(s), Piece::Star] => literal(s, Anchor::Contains),
            _ => {
                let mut re = String::from("^");
                for piece in &p {
                    match piece {
                        Piece::Lit(s) => re.push_str(&regex::escape(s)),
                        Piece::Star => re.push_str(".*"),
                        Piece::Question => re.push('.'),
                    }
                }
                re.push('$');
                let runs: Vec<String> = p
                    .iter()
                    .filter_map(|x| match x {
                        Piece::Lit(s) => Some(crate::eval::lowercase(s)),
                        _ => None,
                    })
                    .collect();
                let hint = runs
                    .iter()
                    .max_by_key(|s| s.len())
                    .cloned()
                    .into_iter()
                    .collect();
                let mut re = build_regex(&re, !cased, false, true, None)?;
                re.needs = runs.into_boxed_slice();
                Pattern::Regex(re, hint)
            }
        })
    }

    pub(crate) fn regex(value: &str, i: bool, m: bool, s: bool) -> Result<Pattern, String> {
        let hir = parse(&pcre_classes_to_ascii(value), i, m, s);
        let hints = hir.as_ref().and_then(regex_literals).unwrap_or_default();
        let run = hir.as_ref().and_then(required_run);
        Ok(Pattern::Regex(build_regex(value, i, m, s, run)?, hints))
    }

    /// Lower-cased literals, one of which occurs in every value this pattern
    /// matches, if such a set is known (for the prefilter).
    pub(crate) fn necessary_literals(&self) -> Option<Vec<String>> {
        match self {
            Pattern::Literal { needle, .. } if !needle.is_empty() => {
                Some(vec![crate::eval::lowercase(needle)])
            }
            Pattern::Regex(_, hints)
                if !hints.is_empty() && hints.iter().all(|h| !h.is_empty()) =>
            {
                Some(hints.clone())
            }
            Pattern::Number(n) => Some(vec![n.to_string()]),
            _ => None,
        }
    }

    /// Lower-cased literals every value this pattern matches contains, in
    /// conjunctive normal form (each clause: one of its literals occurs):
    /// for a wildcard value every literal run of it, otherwise
    /// [`Pattern::necessary_literals`] as one clause. Empty: no guarantee.
    pub(crate) fn required_clauses(&self) -> Vec<Vec<String>> {
        match self {
            Pattern::Regex(re, _) if !re.needs.is_empty() => {
                re.needs.iter().map(|l| vec![l.clone()]).collect()
            }
            _ => self.necessary_literals().into_iter().collect(),
        }
    }

    /// Matches a field of the event under evaluation.
    pub(crate) fn matches_slot(&self, slot: &mut Slot<'_>) -> bool {
        if slot.is_missing() {
            return matches!(self, Pattern::Null);
        }
        match self {
            Pattern::Null => false,
            Pattern::Number(n) => match &slot.value {
                Some(FieldValue::Int(i)) => n == i,
                Some(FieldValue::Str(s)) => s.trim().parse::<i64>().is_ok_and(|i| i == *n),
                _ => false,
            },
            Pattern::Bool(b) => match &slot.value {
                Some(FieldValue::Bool(v)) => b == v,
                Some(FieldValue::Str(s)) => {
                    s.eq_ignore_ascii_case(if *b { "true" } else { "false" })
                }
                _ => false,
            },
            Pattern::Literal {
                needle,
                anchor,
                cased: false,
            } => literal(slot.lower(), needle, *anchor),
            Pattern::Literal {
                needle,
                anchor,
                cased: true,
            } => literal(slot.text(), needle, *anchor),
            Pattern::Regex(re, _) => re.is_match(slot.text()),
        }
    }

    /// For tests and the reference interpreter.
    #[cfg(test)]
    pub(crate) fn matches(&self, value: Option<&FieldValue<'_>>) -> bool {
        struct One<'a>(Option<FieldValue<'a>>);
        impl crate::event::Event for One<'_> {
            fn field(&self, _: &str) -> Option<FieldValue<'_>> {
                self.0.clone()
            }
            fn values(&self) -> Vec<std::borrow::Cow<'_, str>> {
                Vec::new()
            }
        }
        let ev = One(value.cloned());
        let mut ctx = crate::eval::Ctx::new(&ev);
        self.matches_slot(ctx.slot(crate::eval::NO_ID, "f"))
    }

    /// Matches a bare string given with its lower-cased form (keyword searches).
    pub(crate) fn matches_text(&self, original: &str, lower: &str) -> bool {
        match self {
            Pattern::Literal {
                needle,
                anchor,
                cased: false,
            } => literal(lower, needle, *anchor),
            Pattern::Literal {
                needle,
                anchor,
                cased: true,
            } => literal(original, needle, *anchor),
            Pattern::Regex(re, _) => re.is_match(original),
            Pattern::Number(n) => original.trim().parse::<i64>().is_ok_and(|i| i == *n),
            Pattern::Bool(_) | Pattern::Null => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn matches_str(&self, text: &str) -> bool {
        self.matches_text(text, &crate::eval::lowercase(text))
    }
}

/// Sigma's regex flavour is PCRE, where `\w`, `\d` and `\s` are ASCII
/// classes; the regex crate's are Unicode (and far larger compiled: `\w{1,64}`
/// alone exceeds a megabyte). Rewrites them to their ASCII spelling, inside
/// and outside character classes; everything else passes through.
pub(crate) fn pcre_classes_to_ascii(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 16);
    let mut chars = re.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('w' | 'd' | 's')) => {
                    let body = match n {
                        'w' => "0-9A-Za-z_",
                        'd' => "0-9",
                        _ => "\\t\\n\\x0B\\x0C\\r ",
                    };
                    if in_class {
                        out.push_str(body);
                    } else {
                        out.push('[');
                        out.push_str(body);
                        out.push(']');
                    }
                }
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` right after `[` or `[^` is a literal member.
                let mut peek = chars.clone();
                match peek.next() {
                    Some('^') => {
                        out.push('^');
                        chars.next();
                        if chars.clone().next() == Some(']') {
                            out.push_str("\\]");
                            chars.next();
                        }
                    }
                    Some(']') => {
                        out.push_str("\\]");
                        chars.next();
                    }
                    _ => {}
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Most literal alternatives taken from one regex for the prefilter.
const MAX_REGEX_LITERALS: usize = 64;

/// `re` parsed as the regex crate parses it with these flags.
fn parse(re: &str, i: bool, m: bool, s: bool) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .case_insensitive(i)
        .multi_line(m)
        .dot_matches_new_line(s)
        .build()
        .parse(re)
        .ok()
}

/// Literals one of which every match of `hir` contains, lower-cased; `None`
/// when there is no such small set of non-empty literals.
fn regex_literals(hir: &Hir) -> Option<Vec<String>> {
    let mut out = crate::required::required_literals(hir)?;
    out.sort();
    out.dedup();
    (out.len() <= MAX_REGEX_LITERALS && out.iter().all(|l| !l.is_empty())).then_some(out)
}

/// Shortest run worth checking for before a regex runs.
const MIN_RUN: u32 = 8;

/// A run of at least `min` bytes of an ASCII class that every match of a
/// regex contains (`[a-f0-9]{64}`, say): a value without one cannot match,
/// and checking takes a few reads per `min` bytes where the regex walks
/// every byte. Such regexes usually have no literal for the prefilter, so
/// they would otherwise run on every value of their field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassRun {
    /// Bytes 0..128 in the class.
    class: u128,
    min: usize,
}

impl ClassRun {
    fn has(&self, b: u8) -> bool {
        b < 128 && self.class & (1 << b) != 0
    }

    /// Whether `hay` holds `min` class bytes in a row. A window of `min`
    /// bytes is read from its end back: the first byte out of the class
    /// rules out every window holding it, so the next one starts after it.
    pub(crate) fn occurs_in(&self, hay: &[u8]) -> bool {
        let mut start = 0;
        while start + self.min <= hay.len() {
            let window = &hay[start..start + self.min];
            match window.iter().rposition(|&b| !self.has(b)) {
                None => return true,
                Some(out) => start += out + 1,
            }
        }
        false
    }
}

/// A class run (see [`ClassRun`]) every match of `hir` passes through, the
/// longest found: in `hir` itself or in a part every match passes through
/// (captures, concatenations, repetitions of at least one).
fn required_run(hir: &Hir) -> Option<ClassRun> {
    match hir.kind() {
        HirKind::Capture(c) => required_run(&c.sub),
        HirKind::Concat(parts) => parts.iter().filter_map(required_run).max_by_key(|r| r.min),
        HirKind::Repetition(r) if r.min >= 1 => match r.sub.kind() {
            HirKind::Class(c) if r.min >= MIN_RUN => Some(ClassRun {
                class: ascii_class(c)?,
                min: r.min as usize,
            }),
            HirKind::Class(_) => None,
            _ => required_run(&r.sub),
        },
        _ => None,
    }
}

/// The class as a set of ASCII bytes; `None` if it holds anything else
/// (a non-ASCII character spans several bytes, so runs would not count it).
fn ascii_class(c: &Class) -> Option<u128> {
    let ranges: Vec<(u32, u32)> = match c {
        Class::Unicode(u) => u
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        Class::Bytes(b) => b
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
    };
    let mut class = 0u128;
    for (lo, hi) in ranges {
        if hi >= 128 {
            return None;
        }
        for b in lo..=hi {
            class |= 1 << b;
        }
    }
    Some(class)
}

/// A compiled regex, with the class run its matches need if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Re {
    re: Regex,
    run: Option<ClassRun>,
    /// For a wildcard value: its literal runs, lower-cased; every match
    /// contains all of them (in any case unless `cased`).
    needs: Box<[String]>,
}

impl Re {
    pub(crate) fn is_match(&self, hay: &str) -> bool {
        self.run.is_none_or(|r| r.occurs_in(hay.as_bytes())) && self.re.is_match(hay)
    }
}

fn build_regex(re: &str, i: bool, m: bool, s: bool, run: Option<ClassRun>) -> Result<Re, String> {
    let re = RegexBuilder::new(&pcre_classes_to_ascii(re))
        .case_insensitive(i)
        .multi_line(m)
        .dot_matches_new_line(s)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Re {
        re,
        run,
        needs: Box::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn s(v: &str) -> FieldValue<'_> {
        FieldValue::Str(Cow::Borrowed(v))
    }

    #[test]
    fn plain_value_is_whole_and_case_insensitive() {
        let p = Pattern::string("/usr/bin/Cat", Anchor::Exact, false).unwrap();
        assert!(p.matches(Some(&s("/USR/bin/cat"))));
        assert!(!p.matches(Some(&s("/usr/bin/cat2"))));
        assert!(!p.matches(None));
    }

    #[test]
    fn wildcards_and_escapes() {
        let p = Pattern::string(r"*\etc\*shadow?", Anchor::Exact, false).unwrap();
        assert!(p.matches_str(r"x\etc*shadowZ"));
        assert!(!p.matches_str(r"x\etcXshadowZ"));
        let q = Pattern::string(r"a\\*", Anchor::Exact, false).unwrap();
        assert!(q.matches_str(r"a\anything"));
        assert!(!q.matches_str("ab"));
    }

    #[test]
    fn anchors() {
        assert!(
            Pattern::string("/etc/shadow", Anchor::Contains, false)
                .unwrap()
                .matches_str("cat /ETC/shadow")
        );
        assert!(
            Pattern::string("/cat", Anchor::Suffix, false)
                .unwrap()
                .matches_str("/bin/cat")
        );
        assert!(
            !Pattern::string("/cat", Anchor::Suffix, false)
                .unwrap()
                .matches_str("/bin/catx")
        );
        assert!(
            Pattern::string("/bin", Anchor::Prefix, false)
                .unwrap()
                .matches_str("/bin/cat")
        );
        assert!(
            !Pattern::string("abc", Anchor::Contains, true)
                .unwrap()
                .matches_str("xABCx")
        );
    }

    #[test]
    fn null_number_bool() {
        assert!(Pattern::Null.matches(None));
        assert!(Pattern::Null.matches(Some(&FieldValue::Null)));
        assert!(!Pattern::Null.matches(Some(&s(""))));
        assert!(Pattern::Number(4).matches(Some(&FieldValue::Int(4))));
        assert!(Pattern::Number(4).matches(Some(&s("4"))));
        assert!(!Pattern::Number(4).matches(Some(&s("40"))));
        assert!(Pattern::Bool(true).matches(Some(&FieldValue::Bool(true))));
        // An empty string is present: it matches '' but not null.
        assert!(
            Pattern::string("", Anchor::Exact, false)
                .unwrap()
                .matches(Some(&s("")))
        );
    }

    #[test]
    fn pcre_classes_are_ascii() {
        assert_eq!(
            pcre_classes_to_ascii(r"-k\s\w{1,64}"),
            r"-k[\t\n\x0B\x0C\r ][0-9A-Za-z_]{1,64}"
        );
        assert_eq!(pcre_classes_to_ascii(r"[\w.-]+\\d"), r"[0-9A-Za-z_.-]+\\d");
        assert_eq!(pcre_classes_to_ascii(r"[]a]\W"), r"[\]a]\W");
        let re = Pattern::regex(r"^\w+$", false, false, false).unwrap();
        assert!(re.matches_str("abc_1"));
        assert!(!re.matches_str("é"), "PCRE \\w is ASCII");
        assert!(Pattern::regex(r"-k\s\w{1,64}(?:\s?(?:-p|-s))?", false, false, false).is_ok());
    }

    fn lits(re: &str, i: bool, m: bool, s: bool) -> Option<Vec<String>> {
        parse(re, i, m, s).as_ref().and_then(regex_literals)
    }

    #[test]
    fn regex_literals_for_the_prefilter() {
        assert_eq!(
            lits("foo(bar|baz)", false, false, false),
            Some(vec!["foobar".into(), "foobaz".into()])
        );
        assert_eq!(
            lits("(?:IEX|iex)\\(", true, false, false),
            Some(vec!["iex(".into()])
        );
        assert_eq!(lits(".*", false, false, false), None);
        assert_eq!(lits("a?", false, false, false), None);
        assert_eq!(lits("[a-z]+$", false, false, false), None);
    }

    #[test]
    fn regex_is_case_sensitive_unless_i() {
        assert!(
            !Pattern::regex("^A", false, false, false)
                .unwrap()
                .matches_str("abc")
        );
        assert!(
            Pattern::regex("^A", true, false, false)
                .unwrap()
                .matches_str("abc")
        );
        assert!(Pattern::regex("(", false, false, false).is_err());
    }

    fn run_of(re: &str, i: bool) -> Option<ClassRun> {
        parse(&pcre_classes_to_ascii(re), i, false, false)
            .as_ref()
            .and_then(required_run)
    }

    #[test]
    fn required_class_runs_are_found_where_every_match_passes() {
        let hex = run_of(r"\s[a-fA-F0-9]{64}\s[a-fA-F0-9]{16}", false).unwrap();
        assert_eq!(hex.min, 64);
        assert!(hex.has(b'a') && hex.has(b'F') && hex.has(b'7') && !hex.has(b'g'));
        assert_eq!(run_of(r"(?:x[0-9]{10})+y", false).map(|r| r.min), Some(10));
        // Case folding is in the class: [a-f] with i takes A-F too.
        assert!(run_of(r"[a-f]{8}", true).unwrap().has(b'C'));
        // Not on every path, too short, or not ASCII: none.
        assert_eq!(run_of(r"[0-9]{64}|abc", false), None);
        assert_eq!(run_of(r"(?:[0-9]{64})?abc", false), None);
        assert_eq!(run_of(r"[0-9]{7}", false), None);
        assert_eq!(run_of(r"[a-zé]{20}", false), None);
        assert_eq!(run_of(r".{20}", false), None);
    }

    #[test]
    fn a_class_run_is_found_wherever_it_lies() {
        let run = run_of(r"[a-f]{4}[0-9]{8}", false).unwrap();
        assert_eq!(run.min, 8);
        assert!(run.occurs_in(b"12345678"));
        assert!(run.occurs_in(b"x1234567890"));
        assert!(run.occurs_in(b"1 2 3 4 5 6 7 8 123456 12345678"));
        assert!(!run.occurs_in(b"1234567 1234567"));
        assert!(!run.occurs_in(b""));
        assert!(!run.occurs_in(b"1234567"));
    }

    proptest::proptest! {
        /// The check never turns down a value the regex matches, and it
        /// answers as a plain count of runs does.
        #[test]
        fn a_class_run_check_agrees_with_counting(
            hay in "[0-9a-c ]{0,60}",
            min in 1usize..12,
        ) {
            let run = ClassRun { class: (0..10).fold(0u128, |c, d| c | 1 << (b'0' + d)), min };
            let mut best = 0;
            let mut cur = 0;
            for b in hay.bytes() {
                cur = if b.is_ascii_digit() { cur + 1 } else { 0 };
                best = best.max(cur);
            }
            proptest::prop_assert_eq!(run.occurs_in(hay.as_bytes()), best >= min);
            let re = Pattern::regex(&format!("[0-9]{{{min}}}"), false, false, false).unwrap();
            proptest::prop_assert_eq!(re.matches_str(&hay), best >= min);
        }
    }
}
