use std::borrow::Cow;

/// A field's value as a rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// Present but null.
    Null,
}

impl FieldValue<'_> {
    /// The value as a number, when it is one or is numeric text.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            FieldValue::Int(i) => Some(*i as f64),
            FieldValue::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as text, the way Sigma compares strings against numbers.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Str(s) => Cow::Borrowed(s.as_ref()),
            FieldValue::Int(i) => Cow::Owned(i.to_string()),
            FieldValue::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            FieldValue::Null => Cow::Borrowed(""),
        }
    }
}

/// Anything a rule can be evaluated against: a lookup of Sigma field names.
pub trait Event {
    /// The value of `field`, or `None` when the event has no such field.
    fn field(&self, name: &str) -> Option<FieldValue<'_>>;
    /// Every string value of the event, for keyword (keyless) selections.
    fn values(&self) -> Vec<Cow<'_, str>>;
}

/// A flat JSON object keyed by Sigma field names; what `vigil rules match` reads.
#[derive(Debug, Clone)]
pub struct JsonEvent(pub serde_json::Map<String, serde_json::Value>);

impl Event for JsonEvent {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        Some(match self.0.get(name)? {
            serde_json::Value::String(s) => FieldValue::Str(Cow::Borrowed(s)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int(i),
                None => FieldValue::Str(Cow::Owned(n.to_string())),
            },
            serde_json::Value::Bool(b) => FieldValue::Bool(*b),
            serde_json::Value::Null => FieldValue::Null,
            other => FieldValue::Str(Cow::Owned(other.to_string())),
        })
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        self.0
            .values()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
                _ => None,
            })
            .collect()
    }
}
