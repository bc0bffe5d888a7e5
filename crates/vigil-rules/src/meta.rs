//! What every kind of Sigma document shares: the descriptive attributes
//! (title, id, level, author, ...) and the readers of plain YAML values.
//! A leaf module: rules, filters and correlations all build on it, and it
//! builds on none of them.

use crate::error::RuleError;
use serde_json::{Map, Value};

/// Sigma's `level`, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "informational" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// The metadata every kind of document shares.
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) level: Option<Level>,
    pub(crate) status: String,
    pub(crate) tags: Vec<String>,
    /// `author`: who wrote the rule (several are separated by commas).
    pub(crate) author: String,
    /// `references`: URLs or reports the rule is based on.
    pub(crate) references: Vec<String>,
}

pub(crate) fn text_field(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, RuleError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RuleError::WrongType {
            field: key.into(),
            expected: "a string",
        }),
    }
}

pub(crate) fn string_list(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<Vec<String>, RuleError> {
    let wrong = || RuleError::WrongType {
        field: key.into(),
        expected: "a list of strings",
    };
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(wrong),
        Some(_) => Err(wrong()),
    }
}

pub(crate) fn meta(map: &Map<String, Value>) -> Result<Meta, RuleError> {
    let title = text_field(map, "title")?.ok_or(RuleError::MissingField("title"))?;
    // The spec makes `id` optional; Vigil needs one to name alerts, so it
    // falls back to the title.
    let id = text_field(map, "id")?.unwrap_or_else(|| title.clone());
    let level = match text_field(map, "level")? {
        None => None,
        Some(l) => Some(Level::parse(&l).ok_or(RuleError::WrongType {
            field: "level".into(),
            expected: "one of informational, low, medium, high, critical",
        })?),
    };
    Ok(Meta {
        id,
        name: text_field(map, "name")?,
        title,
        description: text_field(map, "description")?.unwrap_or_default(),
        level,
        status: text_field(map, "status")?.unwrap_or_default(),
        tags: string_list(map, "tags")?,
        author: text_field(map, "author")?.unwrap_or_default(),
        references: string_list(map, "references")?,
    })
}
