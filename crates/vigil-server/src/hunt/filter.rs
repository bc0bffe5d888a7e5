//! A search request checked and compiled: which chunks to open (device,
//! time, kinds, and an index term when a condition allows one) and which of
//! their records match.
//!
//! A record matches when one of its views satisfies every condition: each
//! Sigma event it is (vigil-evaluate's mapping: `process_creation`,
//! `file_event`, `network_connection`, auditd), and one view every record
//! has — `ProcessGuid`, `Image`, `CommandLine` of the process it is about,
//! `sha256`, `blake3`, `DeviceId` — so a condition on a process finds its
//! exits, registry changes and detections too.

use super::index::{Term, hex, kind_named};
use std::borrow::Cow;
use tonic::Status;
use vigil_proto::v1::{FieldCondition, MatchOp, Record, SearchEventsRequest, record::Payload};
use vigil_rules::{Event, FieldValue};

/// Conditions per request, at most; values and field names are bounded too.
const MAX_CONDITIONS: usize = 16;
const MAX_VALUE: usize = 4096;

#[derive(Debug, Clone)]
struct Cond {
    field: String,
    op: MatchOp,
    /// Lowercased for `contains`.
    value: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) device: Option<String>,
    pub(crate) kind: Option<u8>,
    pub(crate) since: Option<i64>,
    pub(crate) until: Option<i64>,
    conds: Vec<Cond>,
    /// The index term the chunks are chosen by, when a condition allows one.
    pub(crate) term: Option<Vec<u8>>,
}

impl Filter {
    pub(crate) fn compile(req: &SearchEventsRequest) -> Result<Filter, Status> {
        let kind = match req.kind.as_str() {
            "" => None,
            k => Some(kind_named(k).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown kind {k:?}: one of {}",
                    super::index::KINDS.join(", ")
                ))
            })?),
        };
        if req.conditions.len() > MAX_CONDITIONS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_CONDITIONS} conditions"
            )));
        }
        let mut conds = Vec::new();
        for c in &req.conditions {
            conds.push(cond(c)?);
        }
        if req.device_id.len() > 128 {
            return Err(Status::invalid_argument("malformed device_id"));
        }
        if req.since_unix_ns != 0 && req.until_unix_ns != 0 && req.until_unix_ns < req.since_unix_ns
        {
            return Err(Status::invalid_argument("until is before since"));
        }
        let term = conds
            .iter()
            .filter(|c| c.op == MatchOp::Equals)
            .find_map(|c| Term::for_field(&c.field).map(|t| t.material(&c.value)));
        Ok(Filter {
            device: (!req.device_id.is_empty()).then(|| req.device_id.clone()),
            kind,
            since: (req.since_unix_ns != 0).then_some(req.since_unix_ns),
            until: (req.until_unix_ns != 0).then_some(req.until_unix_ns),
            conds,
            term,
        })
    }

    pub(crate) fn scan(&self) -> vigil_store::Scan<'_> {
        vigil_store::Scan {
            device: self.device.as_deref(),
            since_ns: self.since,
            until_ns: self.until,
            kinds: self
                .kind
                .map_or(0, |k| 1u32.checked_shl(u32::from(k)).unwrap_or(0)),
            term: self.term.as_deref(),
        }
    }

    /// Whether `r` of `device` matches; time bounds checked when `timed`.
    pub(crate) fn matches(&self, device: &str, r: &Record, timed: bool) -> bool {
        if self.device.as_deref().is_some_and(|d| d != device) {
            return false;
        }
        if timed
            && (self.since.is_some_and(|s| r.time_unix_ns < s)
                || self.until.is_some_and(|u| r.time_unix_ns > u))
        {
            return false;
        }
        let Some(p) = &r.payload else {
            return false;
        };
        if self.kind.is_some_and(|k| super::index::kind_of(p) != k) {
            return false;
        }
        if self.conds.is_empty() {
            return true;
        }
        let base = BaseView { device, payload: p };
        if self.holds(&base) {
            return true;
        }
        let mut any = false;
        vigil_evaluate::for_each_event(p, &[], |e| {
            if !any && self.holds(e) {
                any = true;
            }
        });
        any
    }

    fn holds(&self, e: &dyn Event) -> bool {
        self.conds.iter().all(|c| {
            let Some(v) = e.field(&c.field) else {
                return false;
            };
            let text: Cow<'_, str> = match v {
                FieldValue::Str(s) => s,
                FieldValue::Int(i) => Cow::Owned(i.to_string()),
                FieldValue::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
                FieldValue::Null => return false,
            };
            match c.op {
                MatchOp::Equals => text == c.value,
                MatchOp::Prefix => text.starts_with(&c.value),
                MatchOp::Contains => text.to_lowercase().contains(&c.value),
                MatchOp::Unspecified => false,
            }
        })
    }
}

fn cond(c: &FieldCondition) -> Result<Cond, Status> {
    let op = MatchOp::try_from(c.op)
        .ok()
        .filter(|o| *o != MatchOp::Unspecified)
        .ok_or_else(|| {
            Status::invalid_argument(format!("condition on {:?}: no match op", c.field))
        })?;
    if c.field.is_empty() || c.field.len() > 128 || c.field.chars().any(char::is_control) {
        return Err(Status::invalid_argument("a condition needs a field name"));
    }
    if !BASE_FIELDS.contains(&c.field.as_str())
        && !vigil_evaluate::Source::ALL
            .iter()
            .any(|s| s.provides(&c.field))
    {
        return Err(Status::invalid_argument(format!(
            "unknown field {:?}: a Sigma field of process_creation, file_event, \
             network_connection or auditd events, or one of {}",
            c.field,
            BASE_FIELDS.join(", ")
        )));
    }
    if c.value.len() > MAX_VALUE {
        return Err(Status::invalid_argument(format!(
            "condition on {:?}: value longer than {MAX_VALUE} bytes",
            c.field
        )));
    }
    let value = if op == MatchOp::Contains {
        c.value.to_lowercase()
    } else {
        c.value.clone()
    };
    Ok(Cond {
        field: c.field.clone(),
        op,
        value,
    })
}

/// Fields every record has, whatever its kind ([`BaseView`]).
const BASE_FIELDS: [&str; 6] = [
    "DeviceId",
    "ProcessGuid",
    "Image",
    "CommandLine",
    "sha256",
    "blake3",
];

/// The fields every record has, whatever its kind.
struct BaseView<'a> {
    device: &'a str,
    payload: &'a Payload,
}

impl Event for BaseView<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let s = |v: &str| (!v.is_empty()).then(|| FieldValue::Str(Cow::Owned(v.to_owned())));
        let p = self.payload;
        let process = super::acting_process(p);
        let hashes = match p {
            Payload::ProcessStart(s) => s.executable_hashes.as_ref(),
            Payload::File(f) => f.hashes.as_ref(),
            _ => None,
        };
        match name {
            "DeviceId" => s(self.device),
            "ProcessGuid" => s(&process?.guid),
            "Image" => s(&process?.executable?.text),
            "CommandLine" => s(&process?.command_line),
            "sha256" => hashes
                .filter(|h| !h.sha256.is_empty())
                .and_then(|h| s(&hex(&h.sha256))),
            "blake3" => hashes
                .filter(|h| !h.blake3.is_empty())
                .and_then(|h| s(&hex(&h.blake3))),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::{Path as PbPath, ProcessExit, ProcessStart};

    fn req(conds: &[(&str, MatchOp, &str)]) -> SearchEventsRequest {
        SearchEventsRequest {
            conditions: conds
                .iter()
                .map(|(f, o, v)| FieldCondition {
                    field: (*f).into(),
                    op: *o as i32,
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn start() -> Record {
        Record {
            sequence: 1,
            time_unix_ns: 100,
            payload: Some(Payload::ProcessStart(ProcessStart {
                guid: "g1".into(),
                executable: Some(PbPath {
                    text: "/usr/bin/cat".into(),
                    ..Default::default()
                }),
                command_line: "cat /etc/SHADOW".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn conditions_match_sigma_fields_with_each_op() {
        let r = start();
        let m =
            |c: &[(&str, MatchOp, &str)]| Filter::compile(&req(c)).unwrap().matches("d", &r, true);
        assert!(m(&[("Image", MatchOp::Equals, "/usr/bin/cat")]));
        assert!(!m(&[("Image", MatchOp::Equals, "/usr/bin/ca")]));
        assert!(m(&[("Image", MatchOp::Prefix, "/usr/bin/")]));
        assert!(m(&[("CommandLine", MatchOp::Contains, "etc/shadow")]));
        assert!(!m(&[("CommandLine", MatchOp::Prefix, "CAT")]));
        assert!(m(&[("DeviceId", MatchOp::Equals, "d")]));
        assert!(!m(&[
            ("Image", MatchOp::Equals, "/usr/bin/cat"),
            ("ProcessGuid", MatchOp::Equals, "other")
        ]));
        // An exit has no Sigma event; the base view still names its process.
        let exit = Record {
            payload: Some(Payload::ProcessExit(ProcessExit {
                guid: "g1".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let f = Filter::compile(&req(&[("ProcessGuid", MatchOp::Equals, "g1")])).unwrap();
        assert!(f.matches("d", &exit, false));
        assert_eq!(f.term, Some(Term::Guid.material("g1")));
    }

    #[test]
    fn bad_requests_are_refused_naming_the_problem() {
        let e = Filter::compile(&SearchEventsRequest {
            kind: "proc".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.message().contains("process_start"), "{}", e.message());
        assert!(Filter::compile(&req(&[("", MatchOp::Equals, "x")])).is_err());
        let e = Filter::compile(&req(&[("Imagee", MatchOp::Equals, "x")])).unwrap_err();
        assert!(
            e.message().contains("unknown field \"Imagee\""),
            "{}",
            e.message()
        );
        assert!(Filter::compile(&req(&[("Image", MatchOp::Unspecified, "x")])).is_err());
        let long = "x".repeat(MAX_VALUE + 1);
        assert!(Filter::compile(&req(&[("Image", MatchOp::Equals, &long)])).is_err());
        let f = Filter::compile(&SearchEventsRequest {
            since_unix_ns: 200,
            ..Default::default()
        })
        .unwrap();
        assert!(!f.matches("d", &start(), true), "before since");
        // Only an equality on an indexed field picks a term.
        let f = Filter::compile(&req(&[("CommandLine", MatchOp::Equals, "x")])).unwrap();
        assert!(f.term.is_none());
    }
}
