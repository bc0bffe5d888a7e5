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
    /// Calls `f` with every field the event has, if it can list them cheaply,
    /// and returns true; false (the default) makes the engine look fields up
    /// by name instead. Each value must be what [`Event::field`] returns.
    fn visit_fields(&self, f: &mut dyn FnMut(&str, FieldValue<'_>)) -> bool {
        let _ = f;
        false
    }

    /// The event itself when it is a [`FlatEvent`], which the engine reads
    /// directly (no call per field).
    #[doc(hidden)]
    fn as_flat(&self) -> Option<&FlatEvent> {
        None
    }
}

/// A flat JSON object keyed by Sigma field names; what `vigil rules match` reads.
#[derive(Debug, Clone)]
pub struct JsonEvent(pub serde_json::Map<String, serde_json::Value>);

fn json_value(v: &serde_json::Value) -> FieldValue<'_> {
    match v {
        serde_json::Value::String(s) => FieldValue::Str(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Str(Cow::Owned(n.to_string())),
        },
        serde_json::Value::Bool(b) => FieldValue::Bool(*b),
        serde_json::Value::Null => FieldValue::Null,
        other => FieldValue::Str(Cow::Owned(other.to_string())),
    }
}

impl Event for JsonEvent {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.0.get(name).map(json_value)
    }

    fn visit_fields(&self, f: &mut dyn FnMut(&str, FieldValue<'_>)) -> bool {
        for (k, v) in &self.0 {
            f(k, json_value(v));
        }
        true
    }

    /// Strings, numbers, and nested values as their JSON text.
    fn values(&self) -> Vec<Cow<'_, str>> {
        self.0
            .values()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                serde_json::Value::Bool(_) | serde_json::Value::Null => None,
                other => Some(Cow::Owned(other.to_string())),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum FlatValue {
    Str(usize, usize),
    Int(i64),
    Bool(bool),
    Null,
}

/// An event laid out flat: every name and string value in one buffer, read
/// front to back. A JSON map holds each name and value in its own heap
/// allocation, and reading events that are not in cache is then dominated by
/// chasing those pointers; this is what `vigil rules match` and `bench`
/// evaluate. A name pushed again replaces the earlier value.
#[derive(Debug, Clone, Default)]
pub struct FlatEvent {
    text: String,
    /// (name start, name end, value).
    fields: Vec<(usize, usize, FlatValue)>,
}

/// A field value of a [`FlatEvent`] as stored (see [`FlatEvent::raw_fields`]):
/// strings as their bytes, which are UTF-8.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawValue<'a> {
    Str(&'a [u8]),
    Int(i64),
    Bool(bool),
    Null,
}

impl<'a> RawValue<'a> {
    pub(crate) fn field_value(self) -> FieldValue<'a> {
        match self {
            RawValue::Str(s) => FieldValue::Str(Cow::Borrowed(utf8(s))),
            RawValue::Int(i) => FieldValue::Int(i),
            RawValue::Bool(b) => FieldValue::Bool(b),
            RawValue::Null => FieldValue::Null,
        }
    }
}

/// Bytes cut from a [`FlatEvent`]'s text at the boundaries it recorded
/// (always whole characters).
pub(crate) fn utf8(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

impl FlatEvent {
    pub fn new() -> FlatEvent {
        FlatEvent::default()
    }

    /// Every field, front to back, as [`Event::visit_fields`] lists them:
    /// names and strings as bytes (cut without checking for character
    /// boundaries, which the engine's cached path does not need).
    pub(crate) fn raw_fields(&self) -> impl Iterator<Item = (&[u8], RawValue<'_>)> {
        let text = self.text.as_bytes();
        self.fields.iter().map(move |&(s, e, v)| {
            let value = match v {
                FlatValue::Str(a, b) => RawValue::Str(text.get(a..b).unwrap_or_default()),
                FlatValue::Int(i) => RawValue::Int(i),
                FlatValue::Bool(b) => RawValue::Bool(b),
                FlatValue::Null => RawValue::Null,
            };
            (text.get(s..e).unwrap_or_default(), value)
        })
    }

    /// Adds (or replaces) the field `name`.
    pub fn push(&mut self, name: &str, value: FieldValue<'_>) {
        let v = match value {
            FieldValue::Str(s) => {
                let start = self.text.len();
                self.text.push_str(&s);
                FlatValue::Str(start, self.text.len())
            }
            FieldValue::Int(i) => FlatValue::Int(i),
            FieldValue::Bool(b) => FlatValue::Bool(b),
            FieldValue::Null => FlatValue::Null,
        };
        if let Some(i) = self.position(name) {
            self.fields[i].2 = v;
            return;
        }
        let start = self.text.len();
        self.text.push_str(name);
        self.fields.push((start, self.text.len(), v));
    }

    /// The same fields as a JSON object (nested values become their JSON text,
    /// as [`JsonEvent`] reads them).
    pub fn from_json(map: &serde_json::Map<String, serde_json::Value>) -> FlatEvent {
        let mut e = FlatEvent {
            text: String::with_capacity(
                map.iter()
                    .map(|(k, v)| k.len() + v.as_str().map_or(8, str::len))
                    .sum(),
            ),
            fields: Vec::with_capacity(map.len()),
        };
        for (k, v) in map {
            e.push(k, json_value(v));
        }
        e
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|&(s, e, _)| self.text.get(s..e) == Some(name))
    }

    fn value(&self, v: FlatValue) -> FieldValue<'_> {
        match v {
            FlatValue::Str(s, e) => {
                FieldValue::Str(Cow::Borrowed(self.text.get(s..e).unwrap_or_default()))
            }
            FlatValue::Int(i) => FieldValue::Int(i),
            FlatValue::Bool(b) => FieldValue::Bool(b),
            FlatValue::Null => FieldValue::Null,
        }
    }
}

impl Event for FlatEvent {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.position(name).map(|i| self.value(self.fields[i].2))
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        self.fields
            .iter()
            .filter_map(|&(_, _, v)| match self.value(v) {
                FieldValue::Str(s) => Some(s),
                FieldValue::Int(i) => Some(Cow::Owned(i.to_string())),
                _ => None,
            })
            .collect()
    }

    fn visit_fields(&self, f: &mut dyn FnMut(&str, FieldValue<'_>)) -> bool {
        for &(s, e, v) in &self.fields {
            f(self.text.get(s..e).unwrap_or_default(), self.value(v));
        }
        true
    }

    fn as_flat(&self) -> Option<&FlatEvent> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_event_reads_like_the_json_it_came_from() {
        let serde_json::Value::Object(m) = serde_json::json!({
            "Image": "C:\\x.exe", "Pid": 4, "Elevated": true, "Gone": null,
            "Float": 1.5, "Nested": {"a": 1}
        }) else {
            unreachable!()
        };
        let flat = FlatEvent::from_json(&m);
        let json = JsonEvent(m);
        for name in [
            "Image", "Pid", "Elevated", "Gone", "Float", "Nested", "Missing",
        ] {
            assert_eq!(flat.field(name), json.field(name), "{name}");
        }
        let mut seen = Vec::new();
        assert!(flat.visit_fields(&mut |n, v| seen.push((n.to_owned(), v.as_text().into_owned()))));
        assert_eq!(seen.len(), 6);
        assert_eq!(flat.values().len(), json.values().len());
    }

    #[test]
    fn pushing_a_name_again_replaces_it() {
        let mut e = FlatEvent::new();
        e.push("A", FieldValue::Int(1));
        e.push("A", FieldValue::Str(Cow::Borrowed("two")));
        assert_eq!(e.field("A"), Some(FieldValue::Str(Cow::Borrowed("two"))));
        let mut n = 0;
        e.visit_fields(&mut |_, _| n += 1);
        assert_eq!(n, 1);
    }
}
