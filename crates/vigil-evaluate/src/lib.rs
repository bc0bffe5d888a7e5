//! Vigil's records as Sigma events.
//!
//! What it is: the one place that decides how a sensor record looks to a
//! Sigma rule. Each record kind maps to the log sources of Sigma's Linux
//! taxonomy with the field names SigmaHQ rules use ([`Source`], the
//! crate's README lists every field): a process start is a
//! `process_creation` event and, under `service: auditd`, the SYSCALL,
//! EXECVE and PATH records auditd would have written; a file event is a
//! `file_event` (creation and writes) and auditd SYSCALL/PATH records; an
//! outbound or inbound connection is a `network_connection`. On top of
//! that mapping: the [`Evaluator`] (rules and correlation state, records in,
//! [`Detection`](vigil_proto::v1::Detection)s out), the JSON line form that
//! `vigil rules match` reads ([`to_json_lines`]), and what a rule set can be
//! fed by this sensor at all ([`coverage`]).
//!
//! What it is not: it does no I/O, talks to no kernel and no server, and
//! knows nothing of transport. Events are views over the records (the
//! [`vigil_rules::Event`] trait), built per record without copying fields.

mod auditd;
mod coverage;
mod evaluator;
mod file;
mod json;
mod network;
mod process;
mod source;
mod summary;

pub use auditd::{AuditExecve, AuditPath, AuditSyscall};
pub use coverage::{Coverage, NotFed, coverage};
pub use evaluator::{Evaluator, acting_process, detection_of};
pub use file::FileCreation;
pub use json::{RECORD_KINDS, record_kind, to_json_lines, write_json_lines};
pub use network::NetworkEvent;
pub use process::ProcessCreation;
pub use source::{SigmaEvent, Source, for_each_event};
pub use summary::{clean, summary};

use std::borrow::Cow;
use vigil_proto::v1::Path as PbPath;
use vigil_rules::{Event, FieldValue};

fn text(v: &str) -> Option<FieldValue<'_>> {
    Some(FieldValue::Str(Cow::Borrowed(v)))
}

/// Empty text as absent: an empty name or command line means "not known",
/// and a rule must not read it as a known empty value.
fn known(v: &str) -> Option<FieldValue<'_>> {
    (!v.is_empty()).then_some(FieldValue::Str(Cow::Borrowed(v)))
}

fn int(v: u32) -> Option<FieldValue<'static>> {
    Some(FieldValue::Int(i64::from(v)))
}

fn path(p: &Option<PbPath>) -> Option<&str> {
    p.as_ref()
        .map(|p| p.text.as_str())
        .filter(|t| !t.is_empty())
}

/// Every value of `event` under `names`, as keyword searches see them:
/// strings as they are, numbers as their text (what a JSON line of the same
/// fields gives, so both forms match the same keyword rules).
fn values_of<'a>(
    event: &'a dyn Event,
    names: impl IntoIterator<Item = Cow<'static, str>>,
) -> Vec<Cow<'a, str>> {
    names
        .into_iter()
        .filter_map(|n| match event.field(&n)? {
            FieldValue::Str(s) => Some(s),
            FieldValue::Int(i) => Some(Cow::Owned(i.to_string())),
            FieldValue::Bool(_) | FieldValue::Null => None,
        })
        .collect()
}

/// The last component of a path.
fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// What the kernel would put in `comm`: the base name of the file passed to
/// execve, cut to 15 bytes. `argv0` (as given, which is how the file was
/// named, `insmod` for `/usr/bin/kmod`) is preferred to the resolved
/// executable; a login shell's leading `-` is dropped.
fn comm<'a>(argv0: Option<&'a str>, exe: Option<&'a str>) -> Option<&'a str> {
    let name = argv0
        .map(|a| basename(a).trim_start_matches('-'))
        .filter(|a| !a.is_empty())
        .or_else(|| exe.map(basename).filter(|e| !e.is_empty()))?;
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_the_named_file_cut_to_fifteen_bytes() {
        assert_eq!(comm(Some("insmod"), Some("/usr/bin/kmod")), Some("insmod"));
        assert_eq!(comm(Some("-bash"), Some("/usr/bin/bash")), Some("bash"));
        assert_eq!(comm(None, Some("/usr/bin/split")), Some("split"));
        assert_eq!(comm(Some(""), Some("/usr/bin/id")), Some("id"));
        assert_eq!(
            comm(Some("/opt/a-very-long-program-name"), None),
            Some("a-very-long-pro")
        );
        // Never cut inside a character.
        assert_eq!(comm(Some("ééééééééé"), None), Some("ééééééé"));
        assert_eq!(comm(None, None), None);
    }
}
