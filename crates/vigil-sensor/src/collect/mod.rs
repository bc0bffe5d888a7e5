//! Collectors: where events come from. Each source runs on its own thread (the
//! kernel interfaces are blocking sockets) and hands [`RawEvent`]s to the
//! pipeline through a bounded channel.
//!
//! Linux today: eBPF (exec, fork, exit, files, network; the default where the
//! kernel has BTF and the sensor the capabilities), audit netlink (exec, with
//! argv) with the proc connector (exit, fork; exec fallback) when eBPF cannot
//! load, and a /proc inventory at start. A Windows backend would add
//! `*_windows.rs` files producing the same [`RawEvent`]s.

pub(crate) mod audit;
pub(crate) mod audit_parse;
pub(crate) mod ebpf;
pub(crate) mod inventory;
pub(crate) mod netlink;
pub(crate) mod persist_watch;
pub(crate) mod proc_connector;
pub(crate) mod procfs;
pub(crate) mod sockets;

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
        /// The child's start in /proc clock ticks, when the source knows it.
        child_start_ticks: Option<u64>,
    },
    File(FileInfo),
    Net(NetInfo),
    /// A source lost events (kernel queue or socket overflow).
    Lost {
        source: &'static str,
        count: u64,
    },
    /// Several events in their order: a collector that reads the kernel in
    /// rounds hands a round over at once (one wake-up of the pipeline, not one per event).
    Batch(Vec<RawEvent>),
    /// A source's totals since start: records made in the kernel, and those
    /// the kernel had no room for. Sent periodically; the latest wins.
    Totals {
        source: &'static str,
        produced: u64,
        dropped: u64,
    },
}

/// A file operation that succeeded, with the acting process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub pid: u32,
    pub unix_ns: i64,
    pub operation: vigil_proto::v1::FileOperation,
    /// Absolute when the kernel resolved it or the directory was known.
    pub path: Vec<u8>,
    /// Renames: where the file came from (`path` is where it went).
    pub previous_path: Vec<u8>,
    pub mode: u32,
    /// chown's new owner and group (`u32::MAX`: unchanged).
    pub uid: u32,
    pub gid: u32,
    pub is_dir: bool,
    /// The acting task's real uid.
    pub process_uid: u32,
}

/// A connection, accept or listening socket, with the owning process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    pub pid: u32,
    pub unix_ns: i64,
    pub protocol: vigil_proto::v1::TransportProtocol,
    pub direction: vigil_proto::v1::Direction,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// "established", "failed", "listening", "closed".
    pub state: &'static str,
    pub process_uid: u32,
    /// "live" or "inventory".
    pub origin: &'static str,
}

/// Where an exec came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// eBPF: captured by the kernel at exec time, ids and cgroup included.
    Ebpf,
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
            Origin::Ebpf | Origin::Kernel => "kernel",
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
    /// No argv could be read (not the same as an empty one).
    pub argv_missing: bool,
    /// /proc/PID/stat's starttime, when the source knows it (eBPF does, so a
    /// process gone before we look still gets a GUID unique across PID reuse).
    pub start_ticks: Option<u64>,
    pub cgroup_id: u64,
    pub container_id: String,
    pub origin: Origin,
}

impl Origin {
    /// Which collector saw it, for the record's `source`.
    pub fn source(self) -> &'static str {
        match self {
            Origin::Ebpf => "ebpf",
            Origin::Kernel => "audit",
            Origin::ProcFallback => "proc_fallback",
            Origin::Snapshot => "snapshot",
        }
    }
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
