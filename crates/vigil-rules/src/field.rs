//! One `field|modifier|...: values` entry of a selection, compiled.
//!
//! Modifiers apply in three groups, as pySigma applies them:
//! 1. value transformations, in the order written: `windash`, `base64`,
//!    `base64offset`, `utf16le`/`wide`, `utf16be`, `utf16`, `expand`;
//! 2. the match type: plain/wildcard (with `contains`, `startswith`,
//!    `endswith`), `re` (with `i`, `m`, `s`), `cidr`, `lt`/`lte`/`gt`/`gte`,
//!    `minute`…`year`, `fieldref`, `exists`;
//! 3. flags: `all` (values AND-ed), `cased`, `neq` (the result negated).
//!
//! A combination that has no meaning (`re|contains`, `cidr|base64`, a
//! number with `re`) is a rejection, never silently ignored.

use crate::error::RuleError;
use crate::eval::Ctx;
use crate::event::FieldValue;
use crate::literals::LiteralSet;
use crate::pattern::{Anchor, Pattern};
use crate::value::{Cidr, CmpOp, TimePart};
use serde_json::Value;
use std::collections::HashMap;

/// Most values one written value may expand to (windash, expand, base64offset multiply).
pub const MAX_EXPANDED_VALUES: usize = 4096;
/// Most values one field entry may hold (hash lists run to thousands).
pub const MAX_VALUES_PER_FIELD: usize = 100_000;

/// Options that shape compilation.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Values for `%name%` placeholders used with the `expand` modifier.
    pub placeholders: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone)]
pub(crate) enum ValueMatcher {
    Pattern(Pattern),
    Cidr(Cidr),
    Compare(CmpOp, f64),
    Time(TimePart, CmpOp, f64),
    FieldRef {
        other: String,
        other_id: u32,
        anchor: Anchor,
        cased: bool,
    },
}

impl ValueMatcher {
    /// Matches the field `field` of the event in `ctx`.
    fn matches<'r>(&'r self, id: u32, field: &'r str, ctx: &mut Ctx<'r, '_>) -> bool {
        if let ValueMatcher::FieldRef {
            other,
            other_id,
            anchor,
            cased,
        } = self
        {
            let o = ctx.slot(*other_id, other);
            if o.is_missing() {
                return false;
            }
            // ASCII both sides (the usual case): compare in place, no copies.
            let o_text = o.text_cow();
            let v = ctx.slot(id, field);
            if v.is_missing() {
                return false;
            }
            let v_text = v.text_cow();
            if o_text.is_ascii() && v_text.is_ascii() && *anchor != Anchor::Contains {
                let (v, o) = (v_text.as_bytes(), o_text.as_bytes());
                let eq = |a: &[u8], b: &[u8]| {
                    if *cased {
                        a == b
                    } else {
                        a.eq_ignore_ascii_case(b)
                    }
                };
                return match anchor {
                    Anchor::Exact => eq(v, o),
                    Anchor::Prefix => v.len() >= o.len() && eq(&v[..o.len()], o),
                    Anchor::Suffix => v.len() >= o.len() && eq(&v[v.len() - o.len()..], o),
                    Anchor::Contains => false,
                };
            }
            let o = ctx.slot(*other_id, other);
            let o = if *cased {
                o.text().to_owned()
            } else {
                o.lower().to_owned()
            };
            let v = ctx.slot(id, field);
            if v.is_missing() {
                return false;
            }
            let v = if *cased { v.text() } else { v.lower() };
            return match anchor {
                Anchor::Exact => v == o,
                Anchor::Prefix => v.starts_with(&o),
                Anchor::Suffix => v.ends_with(&o),
                Anchor::Contains => v.contains(&o),
            };
        }
        let slot = ctx.slot(id, field);
        match self {
            ValueMatcher::Pattern(p) => p.matches_slot(slot),
            ValueMatcher::Cidr(c) => !slot.is_missing() && c.contains_text(slot.text()),
            ValueMatcher::Compare(op, n) => slot
                .value
                .as_ref()
                .and_then(FieldValue::as_number)
                .is_some_and(|v| op.holds(v, *n)),
            ValueMatcher::Time(part, op, n) => slot
                .value
                .as_ref()
                .and_then(|v| part.extract(v))
                .is_some_and(|v| op.holds(v as f64, *n)),
            ValueMatcher::FieldRef { .. } => false,
        }
    }

    /// Lower-cased literals every text this value matches contains, as
    /// clauses (see [`Pattern::required_clauses`]). Empty: no guarantee.
    pub(crate) fn required_clauses(&self) -> Vec<Vec<String>> {
        match self {
            ValueMatcher::Pattern(p) => p.required_clauses(),
            _ => Vec::new(),
        }
    }

    /// A case-insensitive, non-empty literal: decided by the literal scan.
    pub(crate) fn plain_literal(&self) -> Option<(&str, Anchor)> {
        match self {
            ValueMatcher::Pattern(Pattern::Literal {
                needle,
                anchor,
                cased: false,
            }) if !needle.is_empty() => Some((&**needle, *anchor)),
            _ => None,
        }
    }

    /// For keyless entries: whether a bare string of the event matches.
    fn matches_text(&self, original: &str, lower: &str) -> bool {
        match self {
            ValueMatcher::Pattern(p) => p.matches_text(original, lower),
            ValueMatcher::Cidr(c) => c.contains_text(original),
            ValueMatcher::Compare(op, n) => original
                .trim()
                .parse::<f64>()
                .is_ok_and(|v| op.holds(v, *n)),
            ValueMatcher::Time(..) | ValueMatcher::FieldRef { .. } => false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FieldMatcher {
    /// `None` for keyless (keyword) entries: any string value of the event.
    pub(crate) field: Option<String>,
    /// `field` interned by the rule set ([`crate::eval::NO_ID`] until then).
    pub(crate) id: u32,
    pub(crate) matchers: Vec<ValueMatcher>,
    /// `|all`: every value must match; otherwise any.
    pub(crate) all: bool,
    /// `|exists`: only presence is tested.
    pub(crate) exists: Option<bool>,
    /// `|neq`: the result is negated.
    pub(crate) negate: bool,
    /// Case-insensitive literals of an any-of list, matched in one pass.
    pub(crate) literals: Option<LiteralSet>,
}

/// What an event must contain for a detection to possibly match, in
/// conjunctive normal form over literal occurrences: every clause must have at
/// least one of its (field, lower-cased literal) pairs present as a substring.
/// No clauses means no such guarantee could be derived.
pub(crate) type Clauses = Vec<Vec<(String, String)>>;

impl FieldMatcher {
    /// Replaces field names by ids from `intern` (one id per distinct name in a rule set).
    pub(crate) fn intern(&mut self, intern: &mut impl FnMut(&str) -> u32) {
        if let Some(f) = &self.field {
            self.id = intern(f);
        }
        for m in &mut self.matchers {
            if let ValueMatcher::FieldRef {
                other, other_id, ..
            } = m
            {
                *other_id = intern(other);
            }
        }
    }

    /// The literals that decide this entry on their own, with whether all
    /// (`|all`) or any of them must occur (for keywords: in some value of
    /// the event); `None` when something else is needed (regex, wildcard
    /// inside a value, number, `cased`, `exists`, an empty value).
    pub(crate) fn literal_atoms(&self) -> Option<(Vec<(String, Anchor)>, bool)> {
        if self.exists.is_some() {
            return None;
        }
        // Keywords keep their literals as matchers (no literal set).
        let lits: Vec<(String, Anchor)> = if self.all || self.field.is_none() {
            if self.literals.is_some() || self.matchers.is_empty() {
                return None;
            }
            self.matchers
                .iter()
                .map(|m| match m {
                    ValueMatcher::Pattern(Pattern::Literal {
                        needle,
                        anchor,
                        cased: false,
                    }) => Some((needle.to_string(), *anchor)),
                    _ => None,
                })
                .collect::<Option<_>>()?
        } else {
            if !self.matchers.is_empty() {
                return None;
            }
            self.literals.as_ref()?.lits.clone()
        };
        if lits.is_empty() || lits.iter().any(|(l, _)| l.is_empty()) {
            return None;
        }
        Some((lits, self.all))
    }

    /// Whether the result depends on this entry's own field alone (not on
    /// other fields, as `fieldref` does, nor on every value, as keywords do).
    pub(crate) fn reads_only_its_field(&self) -> bool {
        self.fields_read()
            .is_some_and(|mut f| f.all(|x| Some(x) == self.field.as_deref()))
    }

    /// The fields this entry reads: its own and any `fieldref` target;
    /// `None` for keywords (they read every value).
    pub(crate) fn fields_read(&self) -> Option<impl Iterator<Item = &str>> {
        let own = self.field.as_deref()?;
        Some(
            std::iter::once(own).chain(self.matchers.iter().filter_map(|m| match m {
                ValueMatcher::FieldRef { other, .. } => Some(other.as_str()),
                _ => None,
            })),
        )
    }

    /// Keyword entries have none: the compiler takes their values one by
    /// one (see `program::keywords`).
    pub(crate) fn clauses(&self) -> Clauses {
        let Some(field) = self.field.as_deref() else {
            return Vec::new();
        };
        if self.negate || self.exists.is_some() {
            return Vec::new();
        }
        if self.all {
            // Every value must match: each is a clause of its own.
            return self
                .matchers
                .iter()
                .filter_map(|m| match m {
                    ValueMatcher::Pattern(p) => p.necessary_literals(),
                    _ => None,
                })
                .map(|ls| ls.into_iter().map(|l| (field.to_owned(), l)).collect())
                .collect();
        }
        let mut lits: Vec<String> = Vec::new();
        if let Some(set) = &self.literals {
            if set.lits.iter().any(|(l, _)| l.is_empty()) {
                return Vec::new();
            }
            lits.extend(set.lits.iter().map(|(l, _)| l.clone()));
        }
        for m in &self.matchers {
            match m {
                ValueMatcher::Pattern(p) => match p.necessary_literals() {
                    Some(ls) => lits.extend(ls),
                    None => return Vec::new(),
                },
                _ => return Vec::new(),
            }
        }
        if lits.is_empty() {
            return Vec::new();
        }
        vec![lits.into_iter().map(|l| (field.to_owned(), l)).collect()]
    }

    /// For a keyword entry: whether its `k`th value matches some value of
    /// the event (before `|all` and `|neq` combine the values).
    pub(crate) fn keyword_matches(&self, k: usize, ctx: &mut Ctx<'_, '_>) -> bool {
        let Some(m) = self.matchers.get(k) else {
            return false;
        };
        ctx.values().iter().any(|(o, l)| m.matches_text(o, l))
    }

    pub(crate) fn matches<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        let Some(field) = &self.field else {
            let values = ctx.values();
            let hit = |m: &ValueMatcher| values.iter().any(|(o, l)| m.matches_text(o, l));
            let r = if self.all {
                self.matchers.iter().all(hit)
            } else {
                self.matchers.iter().any(hit)
            };
            return r != self.negate;
        };
        if let Some(want) = self.exists {
            return ctx.slot(self.id, field).value.is_some() == want;
        }
        if let Some(lits) = &self.literals {
            let slot = ctx.slot(self.id, field);
            if !slot.is_missing() && lits.matches(slot.lower()) {
                return !self.negate;
            }
        }
        let r = if self.all {
            self.matchers.iter().all(|m| m.matches(self.id, field, ctx))
        } else {
            self.matchers.iter().any(|m| m.matches(self.id, field, ctx))
        };
        r != self.negate
    }
}

/// An intermediate value: text (may hold wildcards) or bytes after an encoding.
#[derive(Debug, Clone)]
enum Stage {
    Text(String),
    Bytes(Vec<u8>),
}

impl Stage {
    fn bytes(&self, field: &str, modifier: &str) -> Result<Vec<u8>, RuleError> {
        match self {
            Stage::Bytes(b) => Ok(b.clone()),
            Stage::Text(t) => {
                if has_wildcard(t) {
                    return Err(RuleError::Detection(format!(
                        "`{field}`: `{modifier}` cannot encode a value with wildcards"
                    )));
                }
                Ok(unescape(t).into_bytes())
            }
        }
    }

    /// The final Sigma string: bytes become literal characters, wildcards escaped.
    fn into_sigma_string(self) -> String {
        match self {
            Stage::Text(t) => t,
            Stage::Bytes(b) => {
                // Encoded bytes are literal; map each to the char of the same code (as pySigma does).
                let s: String = b.iter().map(|&c| char::from(c)).collect();
                escape(&s)
            }
        }
    }
}

fn has_wildcard(s: &str) -> bool {
    let mut esc = false;
    for c in s.chars() {
        match c {
            '\\' if !esc => esc = true,
            '*' | '?' if !esc => return true,
            _ => esc = false,
        }
    }
    false
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some('*' | '?' | '\\')) {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const WINDASH: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Every spelling of the dashes that start a word (`\B[-/]\b`, as pySigma).
fn windash(s: &str, field: &str) -> Result<Vec<String>, RuleError> {
    let chars: Vec<char> = s.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let spots: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            matches!(chars[i], '-' | '/')
                && (i == 0 || !word(chars[i - 1]))
                && chars.get(i + 1).is_some_and(|&c| word(c))
        })
        .collect();
    if WINDASH
        .len()
        .checked_pow(spots.len() as u32)
        .is_none_or(|n| n > MAX_EXPANDED_VALUES)
    {
        return Err(RuleError::Detection(format!(
            "`{field}`: windash expands to too many values"
        )));
    }
    let mut out = vec![chars];
    for &i in &spots {
        out = out
            .into_iter()
            .flat_map(|v| {
                WINDASH.iter().map(move |&d| {
                    let mut v = v.clone();
                    v[i] = d;
                    v
                })
            })
            .collect();
    }
    Ok(out.into_iter().map(|v| v.into_iter().collect()).collect())
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = match chunk {
            [a, b, c] => u32::from(*a) << 16 | u32::from(*b) << 8 | u32::from(*c),
            [a, b] => u32::from(*a) << 16 | u32::from(*b) << 8,
            [a] => u32::from(*a) << 16,
            _ => 0,
        };
        let idx = |shift: u32| char::from(T[((n >> shift) & 63) as usize]);
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

/// The three base64 spellings of `b` at offsets 0, 1 and 2, trimmed to the
/// characters that do not depend on the neighbouring bytes (pySigma's table).
fn base64offset(b: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(b);
            let enc = base64(&padded);
            let end = enc.len().saturating_sub(END[(b.len() + i) % 3]);
            enc.get(START[i]..end).unwrap_or_default().to_owned()
        })
        .collect()
}

fn utf16(s: &[u8], big_endian: bool, bom: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(s);
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if big_endian {
            &[0xfe, 0xff]
        } else {
            &[0xff, 0xfe]
        });
    }
    for u in text.encode_utf16() {
        out.extend_from_slice(&if big_endian {
            u.to_be_bytes()
        } else {
            u.to_le_bytes()
        });
    }
    out
}

/// Replaces `%name%` placeholders with each configured value.
fn expand(s: &str, field: &str, opts: &CompileOptions) -> Result<Vec<String>, RuleError> {
    // Split into literal text and placeholder names; `\%` is a plain percent sign.
    enum Part {
        Text(String),
        Placeholder(String),
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                text.push('%');
                chars.next();
            }
            '%' => {
                let name: String = chars.clone().take_while(|&c| c != '%').collect();
                if chars.clone().nth(name.chars().count()) == Some('%') && !name.is_empty() {
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                    parts.push(Part::Text(std::mem::take(&mut text)));
                    parts.push(Part::Placeholder(name));
                } else {
                    text.push('%');
                }
            }
            c => text.push(c),
        }
    }
    parts.push(Part::Text(text));
    let mut out = vec![String::new()];
    for part in parts {
        match part {
            Part::Text(t) => out.iter_mut().for_each(|o| o.push_str(&t)),
            Part::Placeholder(name) => {
                let values = opts.placeholders.get(&name).ok_or_else(|| {
                    RuleError::Detection(format!(
                        "`{field}`: placeholder `%{name}%` has no configured values"
                    ))
                })?;
                if values.is_empty() || out.len().saturating_mul(values.len()) > MAX_EXPANDED_VALUES
                {
                    return Err(RuleError::Detection(format!(
                        "`{field}`: placeholder `%{name}%` expands to no or too many values"
                    )));
                }
                out = out
                    .iter()
                    .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
                    .collect();
            }
        }
    }
    Ok(out)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Compiles `key: value` (`key` is `field|mod|mod`, or `|mod` / empty for keywords).
pub(crate) fn compile_field(
    key: &str,
    value: &Value,
    keyless: bool,
    opts: &CompileOptions,
) -> Result<FieldMatcher, RuleError> {
    let mut parts = key.split('|');
    let field_name = parts.next().unwrap_or_default().to_owned();
    let mods: Vec<&str> = parts.collect();
    let field = if keyless {
        "keywords".to_owned()
    } else {
        field_name.clone()
    };
    let err = |m: String| RuleError::Detection(format!("`{field}`: {m}"));

    let mut anchor = Anchor::Exact;
    let (mut all, mut cased, mut negate) = (false, false, false);
    let (mut re, mut re_i, mut re_m, mut re_s) = (false, false, false, false);
    let (mut cidr, mut fieldref, mut exists) = (false, false, false);
    let mut cmp: Option<CmpOp> = None;
    let mut time: Option<TimePart> = None;
    let mut transforms: Vec<&str> = Vec::new();
    for m in &mods {
        match *m {
            "contains" | "startswith" | "endswith" => {
                if anchor != Anchor::Exact {
                    return Err(err(
                        "contains, startswith and endswith exclude each other".into()
                    ));
                }
                anchor = match *m {
                    "contains" => Anchor::Contains,
                    "startswith" => Anchor::Prefix,
                    _ => Anchor::Suffix,
                };
            }
            "all" => all = true,
            "cased" => cased = true,
            "neq" => negate = true,
            "re" => re = true,
            "i" => re_i = true,
            "m" => re_m = true,
            "s" => re_s = true,
            "cidr" => cidr = true,
            "fieldref" => fieldref = true,
            "exists" => exists = true,
            "lt" | "lte" | "gt" | "gte" => {
                if cmp.is_some() {
                    return Err(err("only one of lt, lte, gt, gte".into()));
                }
                cmp = CmpOp::parse(m);
            }
            "minute" | "hour" | "day" | "week" | "month" | "year" => {
                if time.is_some() {
                    return Err(err("only one time modifier".into()));
                }
                time = TimePart::parse(m);
            }
            "windash" | "base64" | "base64offset" | "utf16le" | "utf16be" | "utf16" | "wide"
            | "expand" => transforms.push(m),
            other => {
                return Err(RuleError::UnknownModifier {
                    field: field_name.clone(),
                    modifier: other.to_owned(),
                });
            }
        }
    }
    if (re_i || re_m || re_s) && !re {
        return Err(err("i/m/s modifiers only go with `re`".into()));
    }
    let kinds = [re, cidr, fieldref, exists, cmp.is_some() && time.is_none()]
        .iter()
        .filter(|b| **b)
        .count();
    if kinds > 1 {
        return Err(err(
            "re, cidr, fieldref, exists and lt/lte/gt/gte exclude each other".into(),
        ));
    }
    if (re || cidr || exists || cmp.is_some() || time.is_some())
        && (anchor != Anchor::Exact || !transforms.is_empty())
    {
        return Err(err(format!(
            "`{}` cannot be combined with contains/startswith/endswith or encodings",
            mods.join("|")
        )));
    }
    if keyless && (fieldref || exists || time.is_some()) {
        return Err(err(
            "keywords cannot use fieldref, exists or time modifiers".into(),
        ));
    }
    if exists {
        let want = value.as_bool().ok_or(RuleError::WrongType {
            field: key.to_owned(),
            expected: "`true` or `false` with `exists`",
        })?;
        return Ok(FieldMatcher {
            id: crate::eval::NO_ID,
            literals: None,
            field: Some(field_name),
            matchers: Vec::new(),
            all: false,
            exists: Some(want),
            negate,
        });
    }
    let values: &[Value] = match value {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    };
    if values.is_empty() {
        return Err(err("empty list of values".into()));
    }
    if values.len() > 1 && values.iter().any(Value::is_null) {
        // Specification: "null cannot be part of a list of field values".
        return Err(err(
            "null cannot be part of a list of values; give it a selection of its own".into(),
        ));
    }
    let regex_err = |reason| RuleError::Regex {
        field: field.clone(),
        reason,
    };
    let mut matchers = Vec::with_capacity(values.len());
    for v in values {
        if v.is_array() || v.is_object() {
            return Err(RuleError::WrongType {
                field: key.to_owned(),
                expected: "scalar values",
            });
        }
        if let Some(part) = time {
            let n = number(v).ok_or_else(|| err("time modifiers compare with numbers".into()))?;
            matchers.push(ValueMatcher::Time(part, cmp.unwrap_or(CmpOp::Eq), n));
            continue;
        }
        if let Some(op) = cmp {
            let n =
                number(v).ok_or_else(|| err(format!("`{}` compares with numbers", op.name())))?;
            matchers.push(ValueMatcher::Compare(op, n));
            continue;
        }
        if cidr {
            let s = v
                .as_str()
                .ok_or_else(|| err("cidr takes a network as a string".into()))?;
            matchers.push(ValueMatcher::Cidr(Cidr::parse(s).map_err(err)?));
            continue;
        }
        if fieldref {
            let s = v
                .as_str()
                .ok_or_else(|| err("fieldref takes a field name".into()))?;
            matchers.push(ValueMatcher::FieldRef {
                other: s.to_owned(),
                other_id: crate::eval::NO_ID,
                anchor,
                cased,
            });
            continue;
        }
        if re {
            let s = v.as_str().ok_or_else(|| err("re takes a string".into()))?;
            matchers.push(ValueMatcher::Pattern(
                Pattern::regex(s, re_i, re_m, re_s).map_err(regex_err)?,
            ));
            continue;
        }
        match v {
            Value::Null if transforms.is_empty() => {
                matchers.push(ValueMatcher::Pattern(Pattern::Null));
                continue;
            }
            Value::Bool(b) if transforms.is_empty() && anchor == Anchor::Exact => {
                matchers.push(ValueMatcher::Pattern(Pattern::Bool(*b)));
                continue;
            }
            Value::Number(n) if transforms.is_empty() && anchor == Anchor::Exact => {
                if let Some(i) = n.as_i64() {
                    matchers.push(ValueMatcher::Pattern(Pattern::Number(i)));
                    continue;
                }
            }
            _ => {}
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(err("null cannot be encoded".into())),
        };
        let mut stages = vec![Stage::Text(text)];
        for t in &transforms {
            let mut next = Vec::new();
            for s in stages {
                match *t {
                    "windash" => match s {
                        Stage::Text(t) => {
                            next.extend(windash(&t, &field)?.into_iter().map(Stage::Text))
                        }
                        Stage::Bytes(_) => {
                            return Err(err("windash applies before encodings".into()));
                        }
                    },
                    "expand" => match s {
                        Stage::Text(t) => {
                            next.extend(expand(&t, &field, opts)?.into_iter().map(Stage::Text))
                        }
                        Stage::Bytes(_) => {
                            return Err(err("expand applies before encodings".into()));
                        }
                    },
                    "base64" => next.push(Stage::Text(escape(&base64(&s.bytes(&field, t)?)))),
                    "base64offset" => next.extend(
                        base64offset(&s.bytes(&field, t)?)
                            .into_iter()
                            .map(|e| Stage::Text(escape(&e))),
                    ),
                    "utf16le" | "wide" => {
                        next.push(Stage::Bytes(utf16(&s.bytes(&field, t)?, false, false)))
                    }
                    "utf16be" => next.push(Stage::Bytes(utf16(&s.bytes(&field, t)?, true, false))),
                    "utf16" => next.push(Stage::Bytes(utf16(&s.bytes(&field, t)?, false, true))),
                    _ => next.push(s),
                }
            }
            if next.len() > MAX_EXPANDED_VALUES {
                return Err(err("modifiers expand to too many values".into()));
            }
            stages = next;
        }
        for s in stages {
            matchers.push(ValueMatcher::Pattern(
                Pattern::string(&s.into_sigma_string(), anchor, cased).map_err(regex_err)?,
            ));
        }
    }
    if matchers.len() > MAX_VALUES_PER_FIELD {
        return Err(err(format!("more than {MAX_VALUES_PER_FIELD} values")));
    }
    // Any-of lists of case-insensitive literals run as one set; the rest one by one.
    let mut literals = None;
    if !all && !keyless {
        let (lits, rest): (Vec<_>, Vec<_>) = matchers.into_iter().partition(|m| {
            matches!(
                m,
                ValueMatcher::Pattern(Pattern::Literal { cased: false, .. })
            )
        });
        matchers = rest;
        let lits: Vec<(String, Anchor)> = lits
            .into_iter()
            .filter_map(|m| match m {
                ValueMatcher::Pattern(Pattern::Literal { needle, anchor, .. }) => {
                    Some((needle.into_string(), anchor))
                }
                _ => None,
            })
            .collect();
        if !lits.is_empty() {
            literals = Some(LiteralSet::build(lits));
        }
    }
    Ok(FieldMatcher {
        id: crate::eval::NO_ID,
        field: (!keyless).then_some(field_name),
        matchers,
        all,
        exists: None,
        negate,
        literals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_offsets_match_pysigma() {
        assert_eq!(base64(b"cmd"), "Y21k");
        assert_eq!(base64(b"ab"), "YWI=");
        // pySigma: base64offset of "/bin/sh" (the spec's example family).
        assert_eq!(
            base64offset(b"/bin/sh"),
            vec!["L2Jpbi9za", "9iaW4vc2", "vYmluL3No"]
        );
    }

    #[test]
    fn windash_permutes_leading_dashes_only() {
        let v = windash("cmd -a x-y /b", "f").unwrap();
        assert_eq!(v.len(), 25);
        assert!(v.contains(&"cmd /a x-y -b".to_owned()));
        assert!(v.contains(&"cmd \u{2013}a x-y \u{2014}b".to_owned()));
        assert!(v.iter().all(|s| s.contains("x-y")));
    }

    #[test]
    fn utf16_and_expand() {
        assert_eq!(utf16(b"cmd", false, false), b"c\0m\0d\0");
        assert_eq!(utf16(b"cmd", true, true), b"\xfe\xff\0c\0m\0d");
        let mut opts = CompileOptions::default();
        opts.placeholders
            .insert("dc".into(), vec!["a".into(), "b".into()]);
        assert_eq!(expand("x%dc%y", "f", &opts).unwrap(), vec!["xay", "xby"]);
        assert!(expand("%nope%", "f", &opts).is_err());
        assert_eq!(expand("100%", "f", &opts).unwrap(), vec!["100%"]);
        // The specification's example: `\%plain%name%` is "%plain" then the placeholder.
        opts.placeholders.insert("name".into(), vec!["N".into()]);
        assert_eq!(
            expand(r"\%plain%name%", "f", &opts).unwrap(),
            vec!["%plainN"]
        );
    }

    #[test]
    fn escaping_round_trips() {
        assert!(has_wildcard("a*b"));
        assert!(!has_wildcard(r"a\*b"));
        assert_eq!(unescape(r"a\*b\\c"), r"a*b\c");
        assert_eq!(escape("a*b"), r"a\*b");
    }
}
