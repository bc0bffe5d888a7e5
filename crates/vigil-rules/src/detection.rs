//! The `detection` section: selections and their condition, compiled.

use crate::condition::{self, Cond, OfTarget};
use crate::error::RuleError;
use crate::event::Event;
use crate::pattern::{Anchor, Pattern};
use serde_json::Value;

/// Every modifier in sigma-appendix-modifiers.md; the ones this build does not
/// evaluate yet are rejected by name rather than ignored.
const KNOWN_MODIFIERS: &[&str] = &[
    "contains",
    "startswith",
    "endswith",
    "all",
    "base64",
    "base64offset",
    "utf16le",
    "utf16be",
    "wide",
    "utf16",
    "windash",
    "re",
    "i",
    "m",
    "s",
    "cidr",
    "expand",
    "fieldref",
    "lt",
    "lte",
    "gt",
    "gte",
    "exists",
    "cased",
    "neq",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
];

#[derive(Debug, Clone)]
pub(crate) struct FieldMatcher {
    field: String,
    patterns: Vec<Pattern>,
    /// `|all`: every pattern must match; otherwise any.
    all: bool,
    /// `|exists`: only presence is tested.
    exists: Option<bool>,
}

impl FieldMatcher {
    fn matches(&self, event: &dyn Event) -> bool {
        let value = event.field(&self.field);
        if let Some(want) = self.exists {
            return value.is_some() == want;
        }
        let value = value.as_ref();
        if self.all {
            self.patterns.iter().all(|p| p.matches(value))
        } else {
            self.patterns.iter().any(|p| p.matches(value))
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// A list of maps: any map matches (each map: all its fields match).
    AnyOf(Vec<Vec<FieldMatcher>>),
    /// Keyless values searched in every string of the event.
    Keywords(Vec<Pattern>),
}

impl Selection {
    fn matches(&self, event: &dyn Event) -> bool {
        match self {
            Selection::AnyOf(maps) => maps.iter().any(|m| m.iter().all(|f| f.matches(event))),
            Selection::Keywords(patterns) => {
                let values = event.values();
                patterns
                    .iter()
                    .any(|p| values.iter().any(|v| p.matches_str(v)))
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Sel(usize),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// At least `n` of the selections (`usize::MAX` as `n` means all).
    AtLeast(usize, Vec<usize>),
}

#[derive(Debug, Clone)]
pub(crate) struct Detection {
    selections: Vec<Selection>,
    condition: Expr,
}

impl Detection {
    pub(crate) fn matches(&self, event: &dyn Event) -> bool {
        self.eval(&self.condition, event)
    }

    fn eval(&self, e: &Expr, event: &dyn Event) -> bool {
        match e {
            Expr::Sel(i) => self.selections[*i].matches(event),
            Expr::Not(inner) => !self.eval(inner, event),
            Expr::And(items) => items.iter().all(|i| self.eval(i, event)),
            Expr::Or(items) => items.iter().any(|i| self.eval(i, event)),
            Expr::AtLeast(n, sels) => {
                let want = if *n == usize::MAX { sels.len() } else { *n };
                sels.iter()
                    .filter(|&&i| self.selections[i].matches(event))
                    .take(want)
                    .count()
                    >= want
            }
        }
    }

    pub(crate) fn compile(detection: &Value) -> Result<Detection, RuleError> {
        let map = detection.as_object().ok_or(RuleError::WrongType {
            field: "detection".into(),
            expected: "a mapping",
        })?;
        let mut names = Vec::new();
        let mut selections = Vec::new();
        let mut condition = None;
        for (name, body) in map {
            match name.as_str() {
                "condition" => condition = Some(body),
                "timeframe" => {
                    return Err(RuleError::Detection(
                        "`timeframe` belongs in a correlation rule".into(),
                    ));
                }
                _ => {
                    selections.push(compile_selection(name, body)?);
                    names.push(name.clone());
                }
            }
        }
        let condition = condition.ok_or(RuleError::MissingField("detection.condition"))?;
        let conds = match condition {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<_>>>()
                .ok_or(RuleError::WrongType {
                    field: "condition".into(),
                    expected: "a string or list of strings",
                })?,
            _ => {
                return Err(RuleError::WrongType {
                    field: "condition".into(),
                    expected: "a string or list of strings",
                });
            }
        };
        let mut exprs = Vec::new();
        for c in conds {
            let parsed = condition::parse(c).map_err(RuleError::Condition)?;
            exprs.push(resolve(&parsed, &names)?);
        }
        let condition = if exprs.len() == 1 {
            exprs.remove(0)
        } else {
            Expr::Or(exprs)
        };
        Ok(Detection {
            selections,
            condition,
        })
    }
}

fn resolve(c: &Cond, names: &[String]) -> Result<Expr, RuleError> {
    Ok(match c {
        Cond::Ident(n) => {
            let i = names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| RuleError::UnknownSelection(n.clone()))?;
            Expr::Sel(i)
        }
        Cond::Not(inner) => Expr::Not(Box::new(resolve(inner, names)?)),
        Cond::And(items) => Expr::And(
            items
                .iter()
                .map(|i| resolve(i, names))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Or(items) => Expr::Or(
            items
                .iter()
                .map(|i| resolve(i, names))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Of { count, pattern } => {
            let sels: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| match pattern {
                    OfTarget::Them => !n.starts_with('_'),
                    OfTarget::Pattern(p) => condition::name_matches(p, n),
                })
                .map(|(i, _)| i)
                .collect();
            if sels.is_empty() {
                let p = match pattern {
                    OfTarget::Them => "them".to_owned(),
                    OfTarget::Pattern(p) => p.clone(),
                };
                return Err(RuleError::UnknownSelection(p));
            }
            Expr::AtLeast(count.unwrap_or(usize::MAX), sels)
        }
    })
}

fn compile_selection(name: &str, body: &Value) -> Result<Selection, RuleError> {
    match body {
        Value::Object(map) => Ok(Selection::AnyOf(vec![compile_map(map)?])),
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let maps = items
                .iter()
                .filter_map(Value::as_object)
                .map(compile_map)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Selection::AnyOf(maps))
        }
        Value::Array(items)
            if items.iter().all(|v| !v.is_object() && !v.is_array()) && !items.is_empty() =>
        {
            keywords(name, items)
        }
        Value::String(_) | Value::Number(_) => keywords(name, std::slice::from_ref(body)),
        _ => Err(RuleError::Detection(format!(
            "selection `{name}` must be a mapping, a list of mappings, or a list of keywords"
        ))),
    }
}

fn keywords(name: &str, items: &[Value]) -> Result<Selection, RuleError> {
    let patterns = items
        .iter()
        .map(|v| {
            let s = scalar_text(v).ok_or_else(|| {
                RuleError::Detection(format!("keyword in `{name}` must be a string or number"))
            })?;
            Pattern::string(&s, Anchor::Contains, false).map_err(|reason| RuleError::Regex {
                field: name.into(),
                reason,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Selection::Keywords(patterns))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn compile_map(map: &serde_json::Map<String, Value>) -> Result<Vec<FieldMatcher>, RuleError> {
    map.iter().map(|(k, v)| compile_field(k, v)).collect()
}

fn compile_field(key: &str, value: &Value) -> Result<FieldMatcher, RuleError> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default().to_owned();
    let mods: Vec<&str> = parts.collect();
    let unsupported = |m: &str| RuleError::UnsupportedModifier {
        field: field.clone(),
        modifier: m.to_owned(),
    };
    let mut anchor = Anchor::Exact;
    let (mut all, mut cased, mut re, mut exists) = (false, false, false, false);
    let (mut re_i, mut re_m, mut re_s) = (false, false, false);
    for m in &mods {
        match *m {
            "contains" => anchor = Anchor::Contains,
            "startswith" => anchor = Anchor::Prefix,
            "endswith" => anchor = Anchor::Suffix,
            "all" => all = true,
            "cased" => cased = true,
            "re" => re = true,
            "i" => re_i = true,
            "m" => re_m = true,
            "s" => re_s = true,
            "exists" => exists = true,
            m if KNOWN_MODIFIERS.contains(&m) => return Err(unsupported(m)),
            m => {
                return Err(RuleError::UnknownModifier {
                    field: field.clone(),
                    modifier: m.to_owned(),
                });
            }
        }
    }
    if (re_i || re_m || re_s) && !re {
        return Err(RuleError::Detection(format!(
            "`{field}`: i/m/s modifiers only go with `re`"
        )));
    }
    if field.is_empty() && !mods.is_empty() {
        return Err(RuleError::Detection(format!(
            "keyless modifiers `{key}` are not supported yet"
        )));
    }
    if exists {
        let want = value.as_bool().ok_or(RuleError::WrongType {
            field: key.to_owned(),
            expected: "`true` or `false` with `exists`",
        })?;
        return Ok(FieldMatcher {
            field,
            patterns: Vec::new(),
            all: false,
            exists: Some(want),
        });
    }
    let values: &[Value] = match value {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    };
    if values.is_empty() {
        return Err(RuleError::Detection(format!(
            "`{key}` has an empty list of values"
        )));
    }
    let regex_err = |reason| RuleError::Regex {
        field: field.clone(),
        reason,
    };
    let mut patterns = Vec::with_capacity(values.len());
    for v in values {
        let p = match v {
            Value::Null => Pattern::Null,
            Value::String(s) if re => Pattern::regex(s, re_i, re_m, re_s).map_err(regex_err)?,
            Value::String(s) => Pattern::string(s, anchor, cased).map_err(regex_err)?,
            Value::Number(n) if anchor == Anchor::Exact && !re => match n.as_i64() {
                Some(i) => Pattern::Number(i),
                None => Pattern::string(&n.to_string(), anchor, cased).map_err(regex_err)?,
            },
            Value::Number(n) => {
                Pattern::string(&n.to_string(), anchor, cased).map_err(regex_err)?
            }
            Value::Bool(b) if anchor == Anchor::Exact => Pattern::Bool(*b),
            _ => {
                return Err(RuleError::WrongType {
                    field: key.to_owned(),
                    expected: "scalar values",
                });
            }
        };
        patterns.push(p);
    }
    Ok(FieldMatcher {
        field,
        patterns,
        all,
        exists: None,
    })
}
