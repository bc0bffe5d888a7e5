//! The `detection` section: selections and their condition, compiled.

use crate::condition::{self, Cond, OfTarget};
use crate::error::RuleError;
use crate::eval::Ctx;
use crate::field::{CompileOptions, FieldMatcher, compile_field};
use serde_json::Value;

#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// A list of maps: any map matches (each map: all its fields match).
    /// Keyword lists are a map of one keyless entry.
    AnyOf(Vec<Vec<FieldMatcher>>),
}

impl Selection {
    fn matches<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        let Selection::AnyOf(maps) = self;
        maps.iter().any(|m| m.iter().all(|f| f.matches(ctx)))
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
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
    pub(crate) fn intern(&mut self, intern: &mut impl FnMut(&str) -> u32) {
        for Selection::AnyOf(maps) in &mut self.selections {
            for f in maps.iter_mut().flatten() {
                f.intern(intern);
            }
        }
    }

    pub(crate) fn condition(&self) -> &Expr {
        &self.condition
    }

    pub(crate) fn selections(&self) -> &[Selection] {
        &self.selections
    }

    /// One field entry: selection, map within it, entry within the map.
    pub(crate) fn entry(&self, sel: usize, map: usize, entry: usize) -> Option<&FieldMatcher> {
        let Selection::AnyOf(maps) = self.selections.get(sel)?;
        maps.get(map)?.get(entry)
    }

    /// Every field the detection reads, each once; `None` when it has
    /// keywords (they read every value).
    pub(crate) fn fields_read(&self) -> Option<Vec<&str>> {
        let mut out: Vec<&str> = Vec::new();
        for Selection::AnyOf(maps) in &self.selections {
            for f in maps.iter().flatten() {
                out.extend(f.fields_read()?);
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Every named field the detection reads, each once (keyword entries,
    /// which read every value, add none), and whether it has keywords.
    pub(crate) fn named_fields(&self) -> (Vec<&str>, bool) {
        let mut out: Vec<&str> = Vec::new();
        let mut keywords = false;
        for Selection::AnyOf(maps) in &self.selections {
            for f in maps.iter().flatten() {
                match f.fields_read() {
                    Some(names) => out.extend(names),
                    None => keywords = true,
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        (out, keywords)
    }

    /// The one field every entry reads, when there is one: the detection is
    /// then a function of that field's value alone (absent included).
    pub(crate) fn single_field(&self) -> Option<&str> {
        match self.fields_read()?.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    pub(crate) fn matches<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        self.eval(&self.condition, ctx)
    }

    fn eval<'r>(&'r self, e: &'r Expr, ctx: &mut Ctx<'r, '_>) -> bool {
        match e {
            Expr::Sel(i) => self.selections[*i].matches(ctx),
            Expr::Not(inner) => !self.eval(inner, ctx),
            Expr::And(items) => items.iter().all(|i| self.eval(i, ctx)),
            Expr::Or(items) => items.iter().any(|i| self.eval(i, ctx)),
            Expr::AtLeast(n, sels) => {
                let want = if *n == usize::MAX { sels.len() } else { *n };
                let mut hits = 0;
                for &i in sels {
                    if self.selections[i].matches(ctx) {
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

    pub(crate) fn compile(
        detection: &Value,
        opts: &CompileOptions,
    ) -> Result<Detection, RuleError> {
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
                    selections.push(compile_selection(name, body, opts)?);
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

fn compile_selection(
    name: &str,
    body: &Value,
    opts: &CompileOptions,
) -> Result<Selection, RuleError> {
    match body {
        Value::Object(map) => Ok(Selection::AnyOf(vec![compile_map(map, opts)?])),
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let maps = items
                .iter()
                .filter_map(Value::as_object)
                .map(|m| compile_map(m, opts))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Selection::AnyOf(maps))
        }
        Value::Array(items)
            if items.iter().all(|v| !v.is_object() && !v.is_array()) && !items.is_empty() =>
        {
            // Keywords: searched in every value of the event (pySigma's default full-text form).
            Ok(Selection::AnyOf(vec![vec![compile_field(
                "|contains",
                body,
                true,
                opts,
            )?]]))
        }
        Value::String(_) | Value::Number(_) => Ok(Selection::AnyOf(vec![vec![compile_field(
            "|contains",
            body,
            true,
            opts,
        )?]])),
        _ => Err(RuleError::Detection(format!(
            "selection `{name}` must be a mapping, a list of mappings, or a list of keywords"
        ))),
    }
}

fn compile_map(
    map: &serde_json::Map<String, Value>,
    opts: &CompileOptions,
) -> Result<Vec<FieldMatcher>, RuleError> {
    map.iter()
        .map(|(k, v)| {
            let keyless = k.is_empty() || k.starts_with('|');
            if keyless {
                // Keyless entries search every value; make them substring searches like plain keywords.
                let key = if k
                    .split('|')
                    .any(|m| matches!(m, "contains" | "startswith" | "endswith" | "re" | "cidr"))
                {
                    k.clone()
                } else {
                    format!("{k}|contains")
                };
                compile_field(&key, v, true, opts)
            } else {
                compile_field(k, v, false, opts)
            }
        })
        .collect()
}
