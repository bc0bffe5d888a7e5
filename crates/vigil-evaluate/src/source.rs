//! Which log sources a record feeds, and the events it is there.

use crate::auditd::{self, AuditExecve, AuditPath, AuditSyscall};
use crate::file::{self, FileCreation};
use crate::network::{self, NetworkEvent};
use crate::process::{self, ProcessCreation};
use std::borrow::Cow;
use vigil_proto::v1::{ProcessRef, record::Payload};
use vigil_rules::{Event, FieldValue, LogSource};

/// A log source this sensor produces events for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `product: linux, category: process_creation`
    ProcessCreation,
    /// `product: linux, category: file_event`
    FileEvent,
    /// `product: linux, category: network_connection`
    NetworkConnection,
    /// `product: linux, service: auditd`
    Auditd,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::ProcessCreation,
        Source::FileEvent,
        Source::NetworkConnection,
        Source::Auditd,
    ];

    pub fn logsource(self) -> LogSource {
        match self {
            Source::ProcessCreation => LogSource::new("linux", "process_creation"),
            Source::FileEvent => LogSource::new("linux", "file_event"),
            Source::NetworkConnection => LogSource::new("linux", "network_connection"),
            Source::Auditd => LogSource {
                product: Some("linux".into()),
                category: None,
                service: Some("auditd".into()),
            },
        }
    }

    /// `linux/process_creation`, `linux/service=auditd`.
    pub fn name(self) -> &'static str {
        match self {
            Source::ProcessCreation => "linux/process_creation",
            Source::FileEvent => "linux/file_event",
            Source::NetworkConnection => "linux/network_connection",
            Source::Auditd => "linux/service=auditd",
        }
    }

    /// The fields events of this source can have (auditd's EXECVE also has
    /// `a0`…`aN`, which [`Source::provides`] accepts).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Source::ProcessCreation => process::FIELDS,
            Source::FileEvent => file::FIELDS,
            Source::NetworkConnection => network::FIELDS,
            Source::Auditd => auditd::FIELDS,
        }
    }

    /// Whether some event of this source can have the field `name`.
    pub fn provides(self, name: &str) -> bool {
        match self {
            Source::Auditd => auditd::provides(name),
            _ => self.fields().contains(&name),
        }
    }

    /// The position of this source in [`Source::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One record seen as one event of one log source.
pub enum SigmaEvent<'a> {
    ProcessCreation(ProcessCreation<'a>),
    FileEvent(FileCreation<'a>),
    NetworkConnection(NetworkEvent<'a>),
    AuditSyscall(AuditSyscall<'a>),
    AuditExecve(AuditExecve<'a>),
    AuditPath(AuditPath<'a>),
}

impl SigmaEvent<'_> {
    pub fn source(&self) -> Source {
        match self {
            SigmaEvent::ProcessCreation(_) => Source::ProcessCreation,
            SigmaEvent::FileEvent(_) => Source::FileEvent,
            SigmaEvent::NetworkConnection(_) => Source::NetworkConnection,
            SigmaEvent::AuditSyscall(_) | SigmaEvent::AuditExecve(_) | SigmaEvent::AuditPath(_) => {
                Source::Auditd
            }
        }
    }

    fn inner(&self) -> &dyn Event {
        match self {
            SigmaEvent::ProcessCreation(e) => e,
            SigmaEvent::FileEvent(e) => e,
            SigmaEvent::NetworkConnection(e) => e,
            SigmaEvent::AuditSyscall(e) => e,
            SigmaEvent::AuditExecve(e) => e,
            SigmaEvent::AuditPath(e) => e,
        }
    }

    /// Every field the event has, in a fixed order, with its value: what the
    /// JSON form writes. Allocates; the evaluator never calls it.
    pub fn fields(&self) -> Vec<(Cow<'static, str>, FieldValue<'_>)> {
        let names: Vec<Cow<'static, str>> = match self {
            SigmaEvent::AuditExecve(e) => e.names().collect(),
            _ => self
                .source()
                .fields()
                .iter()
                .map(|n| Cow::Borrowed(*n))
                .collect(),
        };
        let ev = self.inner();
        names
            .into_iter()
            .filter_map(|n| {
                let v = ev.field(&n)?;
                Some((n, v))
            })
            .collect()
    }
}

impl Event for SigmaEvent<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.inner().field(name)
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        self.inner().values()
    }
}

/// Calls `f` with every event `payload` is under the log sources this
/// sensor produces, in the order auditd would log them (SYSCALL, then
/// EXECVE, then PATH). Builds views only; nothing is copied.
///
/// - ProcessStart: `process_creation`; auditd SYSCALL (execve), EXECVE
///   (unless argv is missing: a record without argv must never look like an
///   exec with empty arguments) and PATH (the executable, NORMAL).
/// - FileEvent: `file_event` for create, modify, close-write and rename;
///   auditd SYSCALL and PATH for every known operation.
/// - NetworkConnection: `network_connection` for outbound and inbound
///   connections (not for listening sockets).
/// - Other kinds: none.
pub fn for_each_event<'a>(
    payload: &'a Payload,
    ancestry: &'a [ProcessRef],
    mut f: impl FnMut(&SigmaEvent<'a>),
) {
    match payload {
        Payload::ProcessStart(p) => {
            f(&SigmaEvent::ProcessCreation(ProcessCreation::new(
                p, ancestry,
            )));
            f(&SigmaEvent::AuditSyscall(AuditSyscall::exec(p)));
            if !p.argv_missing {
                f(&SigmaEvent::AuditExecve(AuditExecve { argv: &p.argv }));
            }
            if let Some(path) = AuditPath::exec(p) {
                f(&SigmaEvent::AuditPath(path));
            }
        }
        Payload::File(fe) => {
            if file::is_file_event(fe.operation()) {
                f(&SigmaEvent::FileEvent(FileCreation { file: fe }));
            }
            if let Some(sc) = AuditSyscall::file(fe) {
                f(&SigmaEvent::AuditSyscall(sc));
            }
            for path in AuditPath::file(fe).into_iter().flatten() {
                f(&SigmaEvent::AuditPath(path));
            }
        }
        Payload::Network(c) if network::is_connection(c) => {
            f(&SigmaEvent::NetworkConnection(NetworkEvent {
                connection: c,
            }));
        }
        _ => {}
    }
}
