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
    "Hashes",
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
            "Hashes" => hashes(f),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, FIELDS.iter().map(|n| Cow::Borrowed(*n)))
    }
}

/// The file's SHA-256 as Sysmon writes hashes (`SHA256=<upper-case hex>`),
/// when the sensor computed one: what tenant-wide correlations group a file
/// by ("the same file on five hosts").
fn hashes(f: &FileEvent) -> Option<FieldValue<'static>> {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let sha = &f.hashes.as_ref()?.sha256;
    if sha.is_empty() {
        return None;
    }
    let mut s = String::with_capacity(7 + sha.len() * 2);
    s.push_str("SHA256=");
    for b in sha {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    Some(FieldValue::Str(Cow::Owned(s)))
}
