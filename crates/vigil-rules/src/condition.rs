//! The Sigma condition grammar: `and`, `or`, `not`, parentheses, `1 of`,
//! `all of`, `N of`, `them`, and identifier patterns with `*`.
//!
//! Precedence, lowest first: `or`, `and`, `not` (spec: "Condition").

/// A parsed condition before selection names are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    Ident(String),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// `N of pattern` (`them` is the pattern `*` minus `_`-prefixed names).
    /// `count` of `None` means `all of`.
    Of {
        count: Option<usize>,
        pattern: OfTarget,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OfTarget {
    Them,
    Pattern(String),
}

/// Bounds nesting so a hostile condition cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                out.push(Tok::LParen);
                chars.next();
            }
            ')' => {
                out.push(Tok::RParen);
                chars.next();
            }
            '|' => {
                return Err(
                    "aggregation expressions (`|`) are deprecated; write a correlation rule".into(),
                );
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.' | '?') => {
                let mut end = i;
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.' | '?') {
                        end = j + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(s[i..end].to_owned()));
            }
            other => return Err(format!("unexpected character `{other}` at offset {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek_word().is_some_and(|w| w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Cond, String> {
        self.enter()?;
        let mut items = vec![self.and()?];
        while self.keyword("or") {
            items.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::Or(items)
        })
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.not()?];
        while self.keyword("and") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::And(items)
        })
    }

    fn not(&mut self) -> Result<Cond, String> {
        if self.keyword("not") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::RParen) {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Tok::RParen) => Err("unexpected `)`".into()),
            Some(Tok::Word(w)) => {
                self.pos += 1;
                let lower = w.to_ascii_lowercase();
                let count = if lower == "all" {
                    Some(None)
                } else {
                    lower.parse::<usize>().ok().map(Some)
                };
                if let Some(count) = count
                    && self.keyword("of")
                {
                    {
                        if count == Some(0) {
                            return Err("`0 of` can never match".into());
                        }
                        let target = match self.toks.get(self.pos).cloned() {
                            Some(Tok::Word(t)) => t,
                            _ => {
                                return Err(format!(
                                    "`{w} of` needs `them` or a selection pattern"
                                ));
                            }
                        };
                        self.pos += 1;
                        let pattern = if target.eq_ignore_ascii_case("them") {
                            OfTarget::Them
                        } else {
                            OfTarget::Pattern(target)
                        };
                        return Ok(Cond::Of { count, pattern });
                    }
                }
                if matches!(lower.as_str(), "and" | "or" | "of" | "them") {
                    return Err(format!("unexpected keyword `{w}`"));
                }
                Ok(Cond::Ident(w))
            }
            None => Err("unexpected end of condition".into()),
        }
    }
}

pub(crate) fn parse(s: &str) -> Result<Cond, String> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err("empty condition".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let c = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token after position {}", p.pos));
    }
    Ok(c)
}

/// Whether `name` matches a selection pattern with `*` (and `?`) wildcards.
///
/// Greedy, remembering only the last `*`: at most `pattern × name` steps and
/// no recursion. (Trying every split at every `*` took exponential time: a
/// rule with `1 of se***…***lection_*` hung the loader; found by `fuzz/`'s
/// `sigma_rules`, reproducer in `fuzz/regressions/sigma_rules`.)
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where to resume after the last `*`: (pattern after it, name it has taken up to).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, ni));
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // The last `*` takes one more byte; try the rest from there.
                Some((sp, taken)) => {
                    pi = sp;
                    ni = taken + 1;
                    star = Some((sp, taken + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Cond {
        Cond::Ident(s.into())
    }

    #[test]
    fn name_patterns() {
        for (p, n, m) in [
            ("selection_*", "selection_a", true),
            ("selection_*", "selection_", true),
            ("selection_*", "selectio", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYcZ", false),
            ("a*b*c", "abcbc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*sel*", "my_selection", true),
            ("**a**", "bab", true),
            ("*a", "aab", false),
        ] {
            assert_eq!(name_matches(p, n), m, "{p} {n}");
        }
    }

    /// fuzz/regressions/sigma_rules/timeout-of-many-stars.yml: many `*` against
    /// a name that does not match took exponential time.
    #[test]
    fn many_stars_are_linear_enough() {
        let pattern = format!("se{}lection_*", "*".repeat(130));
        let started = std::time::Instant::now();
        assert!(!name_matches(&pattern, &"s".repeat(200)));
        assert!(name_matches(&pattern, "selection_x"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    proptest::proptest! {
        /// The same answers as trying every split at every `*` (the former code).
        #[test]
        fn name_matches_as_exhaustive_search(p in "[ab*?]{0,8}", n in "[ab]{0,10}") {
            fn go(p: &[u8], n: &[u8]) -> bool {
                match (p.first(), n.first()) {
                    (None, None) => true,
                    (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
                    (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
                    (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
                    _ => false,
                }
            }
            proptest::prop_assert_eq!(name_matches(&p, &n), go(p.as_bytes(), n.as_bytes()));
        }
    }

    #[test]
    fn precedence_or_and_not() {
        assert_eq!(
            parse("a or b and not c").unwrap(),
            Cond::Or(vec![
                id("a"),
                Cond::And(vec![id("b"), Cond::Not(Box::new(id("c")))])
            ])
        );
        assert_eq!(
            parse("(a or b) and c").unwrap(),
            Cond::And(vec![Cond::Or(vec![id("a"), id("b")]), id("c")])
        );
    }

    #[test]
    fn of_forms() {
        assert_eq!(
            parse("1 of selection_* and not all of filter*").unwrap(),
            Cond::And(vec![
                Cond::Of {
                    count: Some(1),
                    pattern: OfTarget::Pattern("selection_*".into())
                },
                Cond::Not(Box::new(Cond::Of {
                    count: None,
                    pattern: OfTarget::Pattern("filter*".into())
                })),
            ])
        );
        assert_eq!(
            parse("all of them").unwrap(),
            Cond::Of {
                count: None,
                pattern: OfTarget::Them
            }
        );
        assert_eq!(
            parse("2 of them").unwrap(),
            Cond::Of {
                count: Some(2),
                pattern: OfTarget::Them
            }
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "a and",
            "(a",
            "a)",
            "a | count() > 5",
            "1 of",
            "a b",
            "and",
            "0 of them",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn wildcard_names() {
        assert!(name_matches("sel*", "selection"));
        assert!(name_matches("*_x", "a_x"));
        assert!(!name_matches("sel*", "filter"));
        assert!(name_matches("s?l", "sel"));
    }
}
