//! Collectors: where events come from. Each source runs on its own thread (the
//! kernel interfaces are blocking sockets) and hands [`RawEvent`]s to the
//! pipeline through a bounded channel.
//!
//! Linux today: audit netlink (exec, with argv), the proc connector (exit,
//! fork; exec fallback), and a /proc inventory at start. A Windows backend
//! would add `*_windows.rs` files producing the same [`RawEvent`]s.

pub(crate) mod audit;
pub(crate) mod audit_parse;
pub(crate) mod inventory;
pub(crate) mod netlink;
pub(crate) mod proc_connector;
pub(crate) mod procfs;

pub use audit::AuditMode;

/// What a collector saw, before enrichment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    Exec(ExecInfo),
    Exit {
        pid: u32,
        exit_code: i32,
        exit_signal: i32,
        unix_ns: i64,
    },
    Fork {
        parent: u32,
        child: u32,
    },
    /// A source lost events (kernel queue or socket overflow).
    Lost {
        source: &'static str,
        count: u64,
    },
}

/// Where an exec came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Audit: everything captured by the kernel at exec time.
    Kernel,
    /// Proc connector + /proc reads (fallback; may miss short-lived processes).
    ProcFallback,
    /// The inventory taken when the sensor started.
    Snapshot,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Kernel => "kernel",
            Origin::ProcFallback => "proc_fallback",
            Origin::Snapshot => "snapshot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    pub pid: u32,
    pub ppid: u32,
    /// When the exec happened (or the process started, for snapshots).
    pub unix_ns: i64,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub login_uid: u32,
    pub session_id: u32,
    pub tty: String,
    pub exe: Vec<u8>,
    pub cwd: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
    pub argv_truncated: bool,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{what} refused by the kernel: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { what: &'static str, errno: i32 },
    #[error("malformed kernel message: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Unavailable(String),
}

impl CollectError {
    pub(crate) fn os(what: &'static str, source: std::io::Error) -> Self {
        CollectError::Os { what, source }
    }

    /// Whether the error means "this process lacks a privilege".
    pub fn is_permission(&self) -> bool {
        match self {
            CollectError::Os { source, .. } => {
                source.kind() == std::io::ErrorKind::PermissionDenied
            }
            CollectError::Kernel { errno, .. } => *errno == libc::EPERM || *errno == libc::EACCES,
            _ => false,
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Kernel bytes are untrusted: every decoder takes arbitrary input without panicking.
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn netlink_framing_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            for m in super::netlink::messages(&buf) {
                let _ = super::netlink::error_code(m.payload);
                let _ = super::proc_connector::decode(m.payload);
            }
            let _ = super::netlink::audit_record(&buf);
        }

        #[test]
        fn audit_text_never_panics(kind in 1300u16..1330, body in "\\PC{0,200}", serial in 0u64..4) {
            let mut asm = super::audit_parse::Assembler::default();
            let line = format!("audit(1.5:{serial}): {body}");
            let _ = asm.push(kind, line.as_bytes());
            let _ = asm.push(super::audit_parse::AUDIT_EOE, format!("audit(1.5:{serial}): ").as_bytes());
        }

        #[test]
        fn audit_fields_round_trip_quoted_values(key in "[a-z]{1,8}", value in "[ -!#-~]{0,40}") {
            let body = format!(" {key}=\"{value}\" other=1");
            let f = super::audit_parse::fields(body.as_bytes());
            prop_assert_eq!(f[0].0, key.as_bytes());
            prop_assert_eq!(f[0].1.untrusted(), Some(value.as_bytes().to_vec()));
        }
    }
}
