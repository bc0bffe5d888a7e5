//! `process_creation`: a process start as Sysmon for Linux's event 1 shows it.

use crate::{int, known, path, text, values_of};
use std::borrow::Cow;
use std::cell::OnceCell;
use vigil_proto::v1::{ProcessRef, ProcessStart};
use vigil_rules::{Event, FieldValue};

/// Fields of `process_creation`, in the order the JSON form writes them.
pub(crate) const FIELDS: &[&str] = &[
    "Image",
    "CommandLine",
    "CurrentDirectory",
    "User",
    "LogonId",
    "ProcessId",
    "ProcessGuid",
    "ParentProcessId",
    "ParentProcessGuid",
    "ParentImage",
    "ParentCommandLine",
    "GrandParentImage",
    "GrandParentCommandLine",
    "Ancestors",
    "uid",
    "euid",
];

/// A process start as Sigma's `process_creation` category sees it, with its
/// ancestry (parent first) for rules that look up the tree.
pub struct ProcessCreation<'a> {
    pub start: &'a ProcessStart,
    pub ancestry: &'a [ProcessRef],
    /// Executables of all known ancestors, parent first, joined by `|`;
    /// built only if a rule asks for `Ancestors`.
    ancestors: OnceCell<String>,
}

impl<'a> ProcessCreation<'a> {
    pub fn new(start: &'a ProcessStart, ancestry: &'a [ProcessRef]) -> Self {
        ProcessCreation {
            start,
            ancestry,
            ancestors: OnceCell::new(),
        }
    }

    fn ancestors(&self) -> &str {
        self.ancestors.get_or_init(|| {
            self.ancestry
                .iter()
                .filter_map(|a| path(&a.executable))
                .collect::<Vec<_>>()
                .join("|")
        })
    }
}

impl Event for ProcessCreation<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let p = self.start;
        let parent = p.parent.as_ref().or(self.ancestry.first());
        let grandparent = self.ancestry.get(1);
        match name {
            "Image" => text(path(&p.executable)?),
            // No argv, no CommandLine: never an exec with an empty one.
            "CommandLine" if p.argv_missing => None,
            "CommandLine" => text(&p.command_line),
            "CurrentDirectory" => text(path(&p.cwd)?),
            "User" => known(&p.user_name),
            "LogonId" => int(p.login_uid),
            "ProcessId" => int(p.pid),
            "ProcessGuid" => known(&p.guid),
            "ParentProcessId" => int(p.parent_pid),
            "ParentProcessGuid" => known(&p.parent_guid),
            "ParentImage" => text(path(&parent?.executable)?),
            // A reference carries no argv_missing flag: empty means unknown.
            "ParentCommandLine" => known(&parent?.command_line),
            "GrandParentImage" => text(path(&grandparent?.executable)?),
            "GrandParentCommandLine" => known(&grandparent?.command_line),
            "Ancestors" if self.ancestry.is_empty() => None,
            "Ancestors" => text(self.ancestors()),
            "uid" => int(p.uid),
            "euid" => int(p.euid),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, FIELDS.iter().map(|n| Cow::Borrowed(*n)))
    }
}
