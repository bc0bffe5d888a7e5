//! One YAML document compiled: a detection rule, a global filter or a
//! correlation, whichever its top-level keys say it is.

use crate::correlation::{Correlation, Scope, vigil_scope};
use crate::detection::Detection;
use crate::error::RuleError;
use crate::field::CompileOptions;
use crate::logsource::LogSource;
use crate::meta::{Level, meta, string_list};
use crate::rule::{Filter, Rule};
use serde_json::{Map, Value};

/// What one YAML document compiles to.
#[derive(Debug, Clone)]
pub(crate) enum Document {
    Rule(Rule),
    Filter(Filter),
    Correlation(Correlation),
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
    let scope = vigil_scope(map)?;
    if let Some(c) = map.get("correlation") {
        return Ok(Document::Correlation(Correlation::compile(
            meta(map)?,
            c,
            scope,
        )?));
    }
    // A single event needs no other device: only correlations run tenant-wide.
    if scope == Scope::Tenant {
        return Err(RuleError::WrongType {
            field: "vigil.scope".into(),
            expected: "`device` on a detection rule or filter (only correlations run per tenant)",
        });
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
        author: m.author,
        references: m.references,
        logsource: logsource(map)?,
        detection,
    }))
}
