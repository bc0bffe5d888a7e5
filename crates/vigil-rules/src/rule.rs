use crate::detection::Detection;
use crate::error::RuleError;
use crate::eval::Ctx;
use crate::event::Event;
use crate::field::CompileOptions;
use crate::logsource::LogSource;
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

/// One compiled detection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// The optional `name` correlations refer to.
    pub name: Option<String>,
    pub title: String,
    pub description: String,
    pub level: Level,
    pub status: String,
    pub tags: Vec<String>,
    pub logsource: LogSource,
    pub(crate) detection: Detection,
}

/// A global filter (sigma-filters-specification.md): suppresses matches of the
/// rules it names when its own condition holds.
#[derive(Debug, Clone)]
pub struct Filter {
    pub id: String,
    pub title: String,
    pub logsource: LogSource,
    /// Rule ids or names the filter applies to.
    pub rules: Vec<String>,
    pub(crate) detection: Detection,
}

/// What one YAML document compiles to.
#[derive(Debug, Clone)]
pub(crate) enum Document {
    Rule(Rule),
    Filter(Filter),
    Correlation(crate::correlation::Correlation),
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
    })
}

fn logsource(map: &Map<String, Value>) -> Result<LogSource, RuleError> {
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
    Ok(LogSource {
        product: lsf("product"),
        category: lsf("category"),
        service: lsf("service"),
    })
}

/// Compiles one YAML document that has already been parsed.
pub(crate) fn compile_document(doc: &Value, opts: &CompileOptions) -> Result<Document, RuleError> {
    let map = doc.as_object().ok_or(RuleError::WrongType {
        field: "rule".into(),
        expected: "a mapping",
    })?;
    if let Some(c) = map.get("correlation") {
        return Ok(Document::Correlation(
            crate::correlation::Correlation::compile(meta(map)?, c)?,
        ));
    }
    if let Some(f) = map.get("filter") {
        let m = meta(map)?;
        let body = f.as_object().ok_or(RuleError::WrongType {
            field: "filter".into(),
            expected: "a mapping",
        })?;
        let rules = string_list(body, "rules")?;
        if rules.is_empty() {
            return Err(RuleError::MissingField("filter.rules"));
        }
        let mut detection = body.clone();
        detection.remove("rules");
        return Ok(Document::Filter(Filter {
            id: m.id,
            title: m.title,
            logsource: logsource(map)?,
            rules,
            detection: Detection::compile(&Value::Object(detection), opts)?,
        }));
    }
    let m = meta(map)?;
    let detection = Detection::compile(
        map.get("detection")
            .ok_or(RuleError::MissingField("detection"))?,
        opts,
    )?;
    Ok(Document::Rule(Rule {
        id: m.id,
        name: m.name,
        title: m.title,
        description: m.description,
        level: m.level.unwrap_or(Level::Medium),
        status: m.status,
        tags: m.tags,
        logsource: logsource(map)?,
        detection,
    }))
}

impl Rule {
    /// Whether the rule's detection matches `event` (the log source is not checked).
    pub fn matches(&self, event: &dyn Event) -> bool {
        self.detection.matches(&mut Ctx::new(event))
    }

    pub(crate) fn matches_in<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        self.detection.matches(ctx)
    }

    /// The fields the rule's detection reads, sorted, each once (`fieldref`
    /// targets included). Keywords read no named field; see
    /// [`Rule::has_keywords`]. What a log source must provide for the rule.
    pub fn fields(&self) -> Vec<&str> {
        self.detection.named_fields().0
    }

    /// Whether the detection has keywords (values searched for in every
    /// string value of the event).
    pub fn has_keywords(&self) -> bool {
        self.detection.named_fields().1
    }

    /// Whether `reference` (from a correlation or filter) names this rule.
    pub fn is_named(&self, reference: &str) -> bool {
        self.id == reference || self.name.as_deref() == Some(reference)
    }
}

impl Filter {
    pub fn matches(&self, event: &dyn Event) -> bool {
        self.detection.matches(&mut Ctx::new(event))
    }

    pub(crate) fn matches_in<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        self.detection.matches(ctx)
    }
}
