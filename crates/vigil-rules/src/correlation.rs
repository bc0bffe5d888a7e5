//! Correlation rules (sigma-correlation-rules-specification.md): several
//! matches, grouped by field values, inside a time span. This is how rule
//! authors write indicator-of-attack sequences. This module compiles them;
//! the `engine` module evaluates them over a stream.
//!
use crate::error::RuleError;
use crate::event::Event;
use crate::meta::{Level, Meta, string_list};
use crate::value::CmpOp;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    ValueSum,
    ValueAvg,
    ValuePercentile,
}

impl CorrelationType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "event_count" => Self::EventCount,
            "value_count" => Self::ValueCount,
            "temporal" => Self::Temporal,
            "temporal_ordered" => Self::TemporalOrdered,
            "value_sum" => Self::ValueSum,
            "value_avg" => Self::ValueAvg,
            "value_percentile" => Self::ValuePercentile,
            _ => return None,
        })
    }

    pub(crate) fn needs_field(self) -> bool {
        matches!(
            self,
            Self::ValueCount | Self::ValueSum | Self::ValueAvg | Self::ValuePercentile
        )
    }
}

/// Where a correlation runs: Vigil's custom attribute, written as a
/// namespaced top-level mapping (Sigma allows arbitrary custom fields; its own
/// `scope` attribute is a list of the kinds of machine a rule is meant for,
/// so Vigil does not reuse that name):
///
/// ```yaml
/// vigil:
///     scope: tenant
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// On each sensor, over that device's events (the default; works offline).
    #[default]
    Device,
    /// On the server, over the ingested events of every device of the tenant.
    Tenant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Device => "device",
            Scope::Tenant => "tenant",
        }
    }
}

/// Reads the `vigil` custom attribute of a document: its `scope`, the
/// default when absent. Unknown keys under `vigil` are refused (a misspelt
/// `scope` would otherwise run a rule in the wrong place without a word).
pub(crate) fn vigil_scope(map: &serde_json::Map<String, Value>) -> Result<Scope, RuleError> {
    let wrong = |field: &str, expected| RuleError::WrongType {
        field: field.into(),
        expected,
    };
    let v = match map.get("vigil") {
        None | Some(Value::Null) => return Ok(Scope::Device),
        Some(Value::Object(v)) => v,
        Some(_) => return Err(wrong("vigil", "a mapping such as `scope: tenant`")),
    };
    if let Some(k) = v.keys().find(|k| *k != "scope") {
        return Err(RuleError::Detection(format!(
            "unknown Vigil attribute `vigil.{k}` (known: scope)"
        )));
    }
    match v.get("scope") {
        None | Some(Value::Null) => Ok(Scope::Device),
        Some(Value::String(s)) if s == "device" => Ok(Scope::Device),
        Some(Value::String(s)) if s == "tenant" => Ok(Scope::Tenant),
        Some(_) => Err(wrong("vigil.scope", "`device` or `tenant`")),
    }
}

/// One compiled correlation rule.
#[derive(Debug, Clone)]
pub struct Correlation {
    pub id: String,
    pub name: Option<String>,
    pub title: String,
    pub description: String,
    pub level: Level,
    pub tags: Vec<String>,
    /// `author`, empty when the rule names none.
    pub author: String,
    /// `references` (URLs, reports), in the rule's order.
    pub references: Vec<String>,
    /// Where it runs (`vigil: {scope: ...}`).
    pub scope: Scope,
    pub kind: CorrelationType,
    /// Referenced rules or correlations, by id or name, in order.
    pub rules: Vec<String>,
    pub group_by: Vec<String>,
    pub timespan_ns: i64,
    /// The field(s) `value_*` types aggregate.
    pub fields: Vec<String>,
    /// Whether referenced rules also raise their own matches.
    pub generate: bool,
    pub(crate) condition: Vec<(CmpOp, f64)>,
    /// alias → (rule name → field).
    pub(crate) aliases: HashMap<String, HashMap<String, String>>,
}

impl Correlation {
    /// Whether `other` correlates the same way (everything but the
    /// descriptive fields), so state gathered under one is valid for the other.
    pub(crate) fn same_definition(&self, other: &Correlation) -> bool {
        self.kind == other.kind
            && self.scope == other.scope
            && self.rules == other.rules
            && self.group_by == other.group_by
            && self.timespan_ns == other.timespan_ns
            && self.fields == other.fields
            && self.generate == other.generate
            && self.condition == other.condition
            && self.aliases == other.aliases
    }
}

/// Largest time span accepted (one year).
const MAX_TIMESPAN_NS: i64 = 366 * 86_400 * 1_000_000_000;

fn parse_timespan(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let unit_ns: i64 = match unit {
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 7 * 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit_ns).filter(|t| *t <= MAX_TIMESPAN_NS)
}

impl Correlation {
    pub(crate) fn compile(
        meta: Meta,
        body: &Value,
        scope: Scope,
    ) -> Result<Correlation, RuleError> {
        let bad = |m: String| RuleError::Detection(format!("correlation: {m}"));
        let map = body.as_object().ok_or(RuleError::WrongType {
            field: "correlation".into(),
            expected: "a mapping",
        })?;
        let kind = map
            .get("type")
            .and_then(Value::as_str)
            .ok_or(RuleError::MissingField("correlation.type"))?;
        let kind =
            CorrelationType::parse(kind).ok_or_else(|| bad(format!("unknown type `{kind}`")))?;
        let rules = string_list(map, "rules")?;
        if rules.is_empty() {
            return Err(RuleError::MissingField("correlation.rules"));
        }
        let group_by = string_list(map, "group-by")?;
        let timespan = map
            .get("timespan")
            .or_else(|| map.get("timeframe"))
            .and_then(Value::as_str)
            .ok_or(RuleError::MissingField("correlation.timespan"))?;
        let timespan_ns = parse_timespan(timespan).ok_or_else(|| {
            bad(format!(
                "timespan `{timespan}` must be a positive number followed by s, m, h or d"
            ))
        })?;
        let mut condition = Vec::new();
        let mut fields = Vec::new();
        match map.get("condition") {
            None | Some(Value::Null) => {}
            Some(Value::Object(c)) => {
                for (k, v) in c {
                    if k == "field" {
                        fields = match v {
                            Value::String(s) => vec![s.clone()],
                            Value::Array(a) => a
                                .iter()
                                .map(|x| x.as_str().map(str::to_owned))
                                .collect::<Option<_>>()
                                .ok_or_else(|| {
                                    bad("condition.field must be a string or list".into())
                                })?,
                            _ => {
                                return Err(bad("condition.field must be a string or list".into()));
                            }
                        };
                        continue;
                    }
                    let op = CmpOp::parse_condition(k)
                        .ok_or_else(|| bad(format!("unknown condition operator `{k}`")))?;
                    let n = v
                        .as_f64()
                        .ok_or_else(|| bad(format!("condition `{k}` needs a number")))?;
                    condition.push((op, n));
                }
            }
            Some(_) => return Err(bad("condition must be a mapping such as `gte: 10`".into())),
        }
        if condition.is_empty()
            && !matches!(
                kind,
                CorrelationType::Temporal | CorrelationType::TemporalOrdered
            )
        {
            return Err(RuleError::MissingField("correlation.condition"));
        }
        if kind.needs_field() && fields.is_empty() {
            return Err(RuleError::MissingField("correlation.condition.field"));
        }
        let mut aliases = HashMap::new();
        if let Some(a) = map.get("aliases") {
            let a = a
                .as_object()
                .ok_or_else(|| bad("aliases must be a mapping".into()))?;
            for (alias, per_rule) in a {
                let per_rule = per_rule
                    .as_object()
                    .ok_or_else(|| bad(format!("alias `{alias}` must map rule names to fields")))?;
                let m: HashMap<String, String> = per_rule
                    .iter()
                    .map(|(r, f)| f.as_str().map(|f| (r.clone(), f.to_owned())))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(format!("alias `{alias}`: fields must be strings")))?;
                aliases.insert(alias.clone(), m);
            }
        }
        let generate = match map.get("generate").or_else(|| body.get("generate")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(RuleError::WrongType {
                    field: "correlation.generate".into(),
                    expected: "a boolean",
                });
            }
        };
        Ok(Correlation {
            id: meta.id,
            name: meta.name,
            title: meta.title,
            description: meta.description,
            level: meta.level.unwrap_or(Level::Medium),
            tags: meta.tags,
            author: meta.author,
            references: meta.references,
            scope,
            kind,
            rules,
            group_by,
            timespan_ns,
            fields,
            generate,
            condition,
            aliases,
        })
    }

    pub fn is_named(&self, reference: &str) -> bool {
        self.id == reference || self.name.as_deref() == Some(reference)
    }

    pub(crate) fn eager(&self) -> bool {
        self.condition
            .iter()
            .all(|(op, _)| matches!(op, CmpOp::Gt | CmpOp::Gte))
    }

    pub(crate) fn holds(&self, v: f64) -> bool {
        self.condition.iter().all(|(op, n)| op.holds(v, *n))
    }

    /// The group key of `event`, matched by the rule called `source`.
    pub(crate) fn key(&self, source: &[&str], event: &dyn Event) -> String {
        let mut key = String::new();
        for (i, g) in self.group_by.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            let field = self
                .aliases
                .get(g)
                .and_then(|m| source.iter().find_map(|s| m.get(*s)))
                .map_or(g.as_str(), String::as_str);
            if let Some(v) = event.field(field) {
                key.push_str(&v.as_text());
            }
        }
        key
    }

    pub(crate) fn value(&self, event: &dyn Event) -> Option<String> {
        let mut out = String::new();
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push('\u{1f}');
            }
            out.push_str(&event.field(f)?.as_text());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("90m"), Some(90 * 60_000_000_000));
        assert_eq!(parse_timespan("1d"), Some(86_400_000_000_000));
        assert_eq!(parse_timespan("0s"), None);
        assert_eq!(parse_timespan("5y"), None);
        assert_eq!(parse_timespan(""), None);
        assert_eq!(parse_timespan("9999999999999d"), None);
    }
}
