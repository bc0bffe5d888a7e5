use crate::detection::Detection;
use crate::error::RuleError;
use crate::event::Event;
use crate::field::CompileOptions;
use crate::logsource::LogSource;
use serde_json::Value;

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

/// One compiled detection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub level: Level,
    pub status: String,
    pub tags: Vec<String>,
    pub logsource: LogSource,
    pub(crate) detection: Detection,
}

impl Rule {
    /// Compiles one YAML document that has already been parsed.
    pub(crate) fn from_value(doc: &Value, opts: &CompileOptions) -> Result<Rule, RuleError> {
        let map = doc.as_object().ok_or(RuleError::WrongType {
            field: "rule".into(),
            expected: "a mapping",
        })?;
        if map.contains_key("correlation") {
            return Err(RuleError::Correlation);
        }
        if map.contains_key("filter") && !map.contains_key("detection") {
            return Err(RuleError::Detection(
                "filter documents are not supported yet".into(),
            ));
        }
        let text = |key: &'static str| -> Result<Option<String>, RuleError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(RuleError::WrongType {
                    field: key.into(),
                    expected: "a string",
                }),
            }
        };
        let title = text("title")?.ok_or(RuleError::MissingField("title"))?;
        // The spec makes `id` optional; Vigil needs one to name alerts, so it
        // falls back to the title.
        let id = text("id")?.unwrap_or_else(|| title.clone());
        let level = match text("level")? {
            None => Level::Medium,
            Some(l) => Level::parse(&l).ok_or(RuleError::WrongType {
                field: "level".into(),
                expected: "one of informational, low, medium, high, critical",
            })?,
        };
        let tags = match map.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or(RuleError::WrongType {
                    field: "tags".into(),
                    expected: "a list of strings",
                })?,
            Some(_) => {
                return Err(RuleError::WrongType {
                    field: "tags".into(),
                    expected: "a list of strings",
                });
            }
        };
        let ls = map
            .get("logsource")
            .ok_or(RuleError::MissingField("logsource"))?;
        let ls = ls.as_object().ok_or(RuleError::WrongType {
            field: "logsource".into(),
            expected: "a mapping",
        })?;
        let lsf = |k: &str| {
            ls.get(k)
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        };
        let logsource = LogSource {
            product: lsf("product"),
            category: lsf("category"),
            service: lsf("service"),
        };
        let detection = Detection::compile(
            map.get("detection")
                .ok_or(RuleError::MissingField("detection"))?,
            opts,
        )?;
        Ok(Rule {
            id,
            title,
            description: text("description")?.unwrap_or_default(),
            level,
            status: text("status")?.unwrap_or_default(),
            tags,
            logsource,
            detection,
        })
    }

    /// Whether the rule's detection matches `event` (the log source is not checked).
    pub fn matches(&self, event: &dyn Event) -> bool {
        self.detection.matches(event)
    }

    /// ATT&CK technique tags (`attack.t1003.008`), upper-cased as analysts write them.
    pub fn attack_techniques(&self) -> impl Iterator<Item = String> + '_ {
        self.tags.iter().filter_map(|t| {
            t.strip_prefix("attack.t")
                .map(|rest| format!("T{}", rest.to_ascii_uppercase()))
        })
    }
}
