//! `file_event`: a file created or written, as Sysmon's event 11 (FileCreate)
//! shows it.

use crate::{int, known, path, text, values_of};
use std::borrow::Cow;
use vigil_proto::v1::{FileEvent, FileOperation};
use vigil_rules::{Event, FieldValue};

pub(crate) const FIELDS: &[&str] = &[
    "TargetFilename",
    "SourceFilename",
    "Image",
    "ProcessId",
    "ProcessGuid",
    "CommandLine",
    "User",
];

/// Whether `file_event` rules see this operation. Sysmon's FileCreate covers
/// a file created or overwritten; a write to an existing file and a rename
/// onto a path put content there just the same (`mv x /etc/cron.d/` is how
/// cron files are dropped). A close after writing ends a change its create or
/// first write already reported: feeding it too would alert twice on one
/// change. Reads, deletions and attribute changes are not file creation: they
/// reach rules only as auditd records.
pub(crate) fn is_file_event(op: FileOperation) -> bool {
    matches!(
        op,
        FileOperation::Create | FileOperation::Modify | FileOperation::Rename
    )
}

/// A file event as Sigma's `file_event` category sees it.
pub struct FileCreation<'a> {
    pub file: &'a FileEvent,
}

impl Event for FileCreation<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let f = self.file;
        let proc = f.process.as_ref();
        match name {
            "TargetFilename" => text(path(&f.path)?),
            // Where a renamed file came from (the name Windows' file_rename uses).
            "SourceFilename" if f.operation() == FileOperation::Rename => {
                text(path(&f.previous_path)?)
            }
            "Image" => text(path(&proc?.executable)?),
            "ProcessId" => int(proc?.pid),
            "ProcessGuid" => known(&proc?.guid),
            "CommandLine" => known(&proc?.command_line),
            "User" => known(&f.user_name),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, FIELDS.iter().map(|n| Cow::Borrowed(*n)))
    }
}
