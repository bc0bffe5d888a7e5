//! Per-event evaluation context: each field an event is asked for is looked up
//! once, and lower-cased at most once, however many rules read it.

use crate::event::{Event, FieldValue};
use std::borrow::Cow;

/// One field of the event under evaluation.
pub(crate) struct Slot<'e> {
    pub(crate) value: Option<FieldValue<'e>>,
    text: Cow<'e, str>,
    lower: Option<String>,
}

impl<'e> Slot<'e> {
    fn new(value: Option<FieldValue<'e>>) -> Slot<'e> {
        let text = match &value {
            Some(FieldValue::Str(s)) => s.clone(),
            Some(v) => Cow::Owned(v.as_text().into_owned()),
            None => Cow::Borrowed(""),
        };
        Slot {
            value,
            text,
            lower: None,
        }
    }

    /// Absent, or present but null.
    pub(crate) fn is_missing(&self) -> bool {
        matches!(self.value, None | Some(FieldValue::Null))
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The text, cheaply (a borrow of the event's own string when it is one).
    pub(crate) fn text_cow(&self) -> Cow<'e, str> {
        self.text.clone()
    }

    /// The value lower-cased (computed on first use).
    pub(crate) fn lower(&mut self) -> &str {
        if self.lower.is_none() {
            self.lower = Some(lowercase(&self.text));
        }
        self.lower.as_deref().unwrap_or_default()
    }
}

/// Lower-cases with a fast path for ASCII, the common case.
pub(crate) fn lowercase(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// The fields of one event, as rules have asked for them. `'r` is the rule
/// set's lifetime (field names), `'e` the event's.
pub(crate) struct Ctx<'r, 'e> {
    pub(crate) event: &'e dyn Event,
    /// Field id → index + 1 into `slots` (0: not looked up yet).
    slot_of: Vec<u32>,
    slots: Vec<(&'r str, Slot<'e>)>,
    values: Option<Vec<(String, String)>>,
}

/// The id of a field name not interned by a rule set (looked up by name).
pub(crate) const NO_ID: u32 = u32::MAX;

impl<'r, 'e> Ctx<'r, 'e> {
    pub(crate) fn new(event: &'e dyn Event) -> Self {
        Ctx {
            event,
            slot_of: Vec::new(),
            slots: Vec::new(),
            values: None,
        }
    }

    /// The field `name` (interned by its rule set as `id`) of the event.
    pub(crate) fn slot(&mut self, id: u32, name: &'r str) -> &mut Slot<'e> {
        if id == NO_ID {
            let i = match self.slots.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => self.push(name),
            };
            return &mut self.slots[i].1;
        }
        let k = id as usize;
        if k >= self.slot_of.len() {
            self.slot_of.resize(k + 1, 0);
        }
        let i = match self.slot_of[k] {
            0 => {
                let i = self.push(name);
                self.slot_of[k] = i as u32 + 1;
                i
            }
            n => n as usize - 1,
        };
        &mut self.slots[i].1
    }

    fn push(&mut self, name: &'r str) -> usize {
        self.slots.push((name, Slot::new(self.event.field(name))));
        self.slots.len() - 1
    }

    /// Every string value of the event, with its lower-cased form, for keyword searches.
    pub(crate) fn values(&mut self) -> &[(String, String)] {
        if self.values.is_none() {
            self.values = Some(
                self.event
                    .values()
                    .iter()
                    .map(|v| (v.to_string(), lowercase(v)))
                    .collect(),
            );
        }
        self.values.as_deref().unwrap_or_default()
    }
}
