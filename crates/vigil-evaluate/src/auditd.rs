//! `service: auditd`: the audit records the kernel's audit subsystem would
//! have written for the same activity, one event per record, as SigmaHQ's
//! auditd rules read them (`ausearch -i`/enriched form: text values,
//! `SYSCALL` the syscall's name).
//!
//! Only fields Vigil knows are present. A SYSCALL record's `a0`…`a3`
//! (raw syscall arguments), `exit`, `items` and the audit rule `key` are
//! never produced, so rules reading them do not fire (see
//! [`crate::coverage`]).

use crate::{comm, int, known, path, text, values_of};
use std::borrow::Cow;
use vigil_proto::v1::{FileEvent, FileOperation, ProcessStart};
use vigil_rules::{Event, FieldValue};

/// Fields of the three record shapes together (EXECVE also has `a0`…`aN`).
pub(crate) const FIELDS: &[&str] = &[
    "type", "SYSCALL", "success", "exe", "comm", "pid", "ppid", "uid", "euid", "gid", "egid",
    "auid", "ses", "tty", "UID", "argc", "name", "nametype", "mode",
];

const SYSCALL_FIELDS: &[&str] = &[
    "type", "SYSCALL", "success", "exe", "comm", "pid", "ppid", "uid", "euid", "gid", "egid",
    "auid", "ses", "tty", "UID",
];

const PATH_FIELDS: &[&str] = &["type", "name", "nametype", "mode"];

/// `a<N>`: the index of an EXECVE argument field.
pub(crate) fn arg_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix('a')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A SYSCALL record: which syscall, by which process.
pub struct AuditSyscall<'a> {
    pub syscall: &'static str,
    pub exe: Option<&'a str>,
    pub comm: Option<&'a str>,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub euid: Option<u32>,
    pub gid: Option<u32>,
    pub egid: Option<u32>,
    pub auid: Option<u32>,
    pub ses: Option<u32>,
    pub tty: Option<&'a str>,
    /// `UID`: the user name of `uid`, as the enriched form adds it.
    pub user: Option<&'a str>,
}

impl<'a> AuditSyscall<'a> {
    /// The execve that started `p`.
    pub fn exec(p: &'a ProcessStart) -> Self {
        let exe = path(&p.executable);
        let argv0 = p
            .argv
            .first()
            .and_then(|a| std::str::from_utf8(a).ok())
            .filter(|_| !p.argv_missing);
        AuditSyscall {
            syscall: "execve",
            exe,
            comm: comm(argv0, exe),
            pid: p.pid,
            ppid: Some(p.parent_pid),
            uid: Some(p.uid),
            euid: Some(p.euid),
            gid: Some(p.gid),
            egid: Some(p.egid),
            auid: Some(p.login_uid),
            ses: Some(p.session_id),
            tty: Some(p.tty.as_str()).filter(|t| !t.is_empty()),
            user: Some(p.user_name.as_str()).filter(|u| !u.is_empty()),
        }
    }

    /// The syscall behind a file operation, `None` for an unknown operation.
    /// The record says what happened, not which syscall did it; the name is
    /// the one glibc and coreutils use for it on current kernels.
    pub fn file(f: &'a FileEvent) -> Option<Self> {
        let syscall = match f.operation() {
            FileOperation::Create | FileOperation::Modify | FileOperation::Open => "openat",
            // The close ends a change whose open was already recorded.
            FileOperation::CloseWrite => return None,
            FileOperation::Delete => "unlinkat",
            FileOperation::Rename => "renameat2",
            FileOperation::Chmod => "fchmodat",
            FileOperation::Chown => "fchownat",
            FileOperation::Unspecified => return None,
        };
        let proc = f.process.as_ref();
        let exe = proc.and_then(|p| path(&p.executable));
        // The first word of the command line stands in for argv[0].
        let argv0 = proc.and_then(|p| p.command_line.split(' ').next());
        Some(AuditSyscall {
            syscall,
            exe,
            comm: comm(argv0, exe),
            pid: proc.map_or(0, |p| p.pid),
            ppid: None,
            uid: proc.map(|_| f.process_uid),
            euid: None,
            gid: None,
            egid: None,
            auid: None,
            ses: None,
            tty: None,
            user: Some(f.user_name.as_str()).filter(|u| !u.is_empty()),
        })
    }
}

fn opt_int(v: Option<u32>) -> Option<FieldValue<'static>> {
    int(v?)
}

impl Event for AuditSyscall<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        match name {
            "type" => text("SYSCALL"),
            "SYSCALL" => text(self.syscall),
            // Vigil sees operations that happened, never failed attempts.
            "success" => text("yes"),
            "exe" => text(self.exe?),
            "comm" => text(self.comm?),
            "pid" => int(self.pid),
            "ppid" => opt_int(self.ppid),
            "uid" => opt_int(self.uid),
            "euid" => opt_int(self.euid),
            "gid" => opt_int(self.gid),
            "egid" => opt_int(self.egid),
            "auid" => opt_int(self.auid),
            "ses" => opt_int(self.ses),
            "tty" => text(self.tty?),
            "UID" => text(self.user?),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, SYSCALL_FIELDS.iter().map(|n| Cow::Borrowed(*n)))
    }
}

/// An EXECVE record: the arguments, `a0` being argv[0] as given (`uname`,
/// not `/usr/bin/uname`). Never built for a start whose argv is missing.
pub struct AuditExecve<'a> {
    pub argv: &'a [Vec<u8>],
}

impl AuditExecve<'_> {
    pub(crate) fn names(&self) -> impl Iterator<Item = Cow<'static, str>> + use<> {
        let n = self.argv.len();
        ["type", "argc"]
            .into_iter()
            .map(Cow::Borrowed)
            .chain((0..n).map(|i| Cow::Owned(format!("a{i}"))))
    }
}

impl Event for AuditExecve<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        match name {
            "type" => text("EXECVE"),
            "argc" => Some(FieldValue::Int(i64::try_from(self.argv.len()).ok()?)),
            _ => {
                let arg = self.argv.get(arg_index(name)?)?;
                Some(FieldValue::Str(String::from_utf8_lossy(arg)))
            }
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, self.names())
    }
}

/// A PATH record: one file a syscall named.
pub struct AuditPath<'a> {
    pub name: &'a str,
    /// NORMAL, CREATE or DELETE (audit's `nametype`).
    pub nametype: &'static str,
    /// The file's mode as audit writes it (octal, type bits included), when known.
    pub mode: Option<u32>,
}

impl<'a> AuditPath<'a> {
    /// The executable an execve ran (auditd writes it as the first PATH).
    pub fn exec(p: &'a ProcessStart) -> Option<Self> {
        Some(AuditPath {
            name: path(&p.executable)?,
            nametype: "NORMAL",
            mode: None,
        })
    }

    /// The paths a file operation named: a rename deletes its old name and
    /// creates its new one, as audit's rename records say.
    pub fn file(f: &'a FileEvent) -> [Option<Self>; 2] {
        let mode = Some(f.mode).filter(|m| *m != 0);
        let at = |name: Option<&'a str>, nametype| {
            name.map(|name| AuditPath {
                name,
                nametype,
                mode,
            })
        };
        let target = path(&f.path);
        match f.operation() {
            FileOperation::Unspecified | FileOperation::CloseWrite => [None, None],
            FileOperation::Create => [at(target, "CREATE"), None],
            FileOperation::Delete => [at(target, "DELETE"), None],
            FileOperation::Rename => [at(path(&f.previous_path), "DELETE"), at(target, "CREATE")],
            FileOperation::Modify
            | FileOperation::Open
            | FileOperation::Chmod
            | FileOperation::Chown => [at(target, "NORMAL"), None],
        }
    }
}

impl Event for AuditPath<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        match name {
            "type" => text("PATH"),
            "name" => known(self.name),
            "nametype" => text(self.nametype),
            "mode" => Some(FieldValue::Str(Cow::Owned(format!("{:07o}", self.mode?)))),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, PATH_FIELDS.iter().map(|n| Cow::Borrowed(*n)))
    }
}

/// Whether a field named `name` exists in some auditd record Vigil produces.
pub(crate) fn provides(name: &str) -> bool {
    FIELDS.contains(&name) || arg_index(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_fields_are_a_and_digits() {
        assert_eq!(arg_index("a0"), Some(0));
        assert_eq!(arg_index("a12"), Some(12));
        assert_eq!(arg_index("a"), None);
        assert_eq!(arg_index("argc"), None);
        assert_eq!(arg_index("a-1"), None);
        assert_eq!(arg_index("a99999999999999999999999"), None);
        assert!(!provides("key") && provides("a7") && provides("SYSCALL"));
    }
}
