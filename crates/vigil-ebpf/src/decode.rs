//! Records of the ring buffer, decoded. The layout is `bpf/vigil.h`: a fixed
//! header, the fixed part of the record's kind, then strings (u16 length and
//! bytes). Kernel bytes are untrusted: every read is bounds-checked, and a
//! record that does not parse is an error, never a panic.

/// Size of `struct vg_hdr`.
pub const HDR_LEN: usize = 88;
const FORK_LEN: usize = 16;
const EXIT_LEN: usize = 8;
const FILE_LEN: usize = 32;
const NET_LEN: usize = 40;
const SYS_EXIT_LEN: usize = 8;

const FL_ARGV_TRUNCATED: u32 = 0x1;
const FL_ARGV_MISSING: u32 = 0x2;
const FL_PENDING: u32 = 0x4;
const FL_DIR: u32 = 0x8;
const FL_PATH_TRUNC: u32 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record shorter than its {0}")]
    Short(&'static str),
    #[error("unknown record kind {0}")]
    Kind(u16),
    #[error("unknown {what} {value}")]
    Value { what: &'static str, value: u16 },
}

/// Who did it: the task's identity when the record was made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub boot_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// Audit login uid, `u32::MAX` when unset.
    pub auid: u32,
    pub ses: u32,
    pub cgroup_id: u64,
    /// Process start in ns since boot, as /proc/PID/stat's starttime counts it.
    pub start_boottime: u64,
    pub comm: Vec<u8>,
}

impl Task {
    /// /proc/PID/stat's starttime (clock ticks of 1/100 s since boot).
    pub fn start_ticks(&self) -> u64 {
        self.start_boottime / 10_000_000
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub task: Task,
    pub exe: Vec<u8>,
    pub cwd: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
    pub argv_truncated: bool,
    /// The kernel had no argv to give (the argument pages were not readable).
    pub argv_missing: bool,
    pub tty: Vec<u8>,
    /// The name of the process's cgroup (v2): where container runtimes put the container id.
    pub cgroup_name: Vec<u8>,
    pub path_truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    Create,
    Modify,
    CloseWrite,
    Delete,
    Rename,
    Chmod,
    Chown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub task: Task,
    pub op: FileOp,
    /// Made at syscall entry: valid only once the matching [`SysExit`] says it succeeded.
    pub pending: bool,
    pub is_dir: bool,
    pub mode: u32,
    /// chown's new owner (`u32::MAX`: unchanged).
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub dev: u32,
    /// The path as the kernel resolved it, or as the process gave it.
    pub path: Vec<u8>,
    /// When `path` is relative: the directory it is relative to, absolute.
    pub dir: Vec<u8>,
    /// Rename: the new path (and its directory when relative).
    pub path2: Vec<u8>,
    pub dir2: Vec<u8>,
    pub path_truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetDir {
    Outbound,
    Inbound,
    Listen,
    ListenClosed,
    OutboundFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub task: Task,
    pub dir: NetDir,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
}

/// What one ring-buffer record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    Exec(Exec),
    Fork {
        task: Task,
        child: u32,
        child_start_boottime: u64,
    },
    Exit {
        task: Task,
        code: i32,
        signal: i32,
    },
    File(File),
    Net(Net),
    /// The result of the syscall a pending [`File`] of the same thread began.
    SysExit {
        tgid: u32,
        tid: u32,
        ret: i64,
    },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Short(what))?;
        let s = self.b.get(self.at..end).ok_or(DecodeError::Short(what))?;
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let lo = u64::from(self.u32(what)?);
        let hi = u64::from(self.u32(what)?);
        Ok(lo | hi << 32)
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.u16(what)?;
        Ok(self.take(usize::from(n), what)?.to_vec())
    }
}

fn comm(raw: &[u8]) -> Vec<u8> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end].to_vec()
}

fn split_argv(blob: &[u8]) -> Vec<Vec<u8>> {
    // The argument area is NUL-terminated strings back to back; a truncated
    // one lacks its last NUL.
    let blob = blob.strip_suffix(&[0]).unwrap_or(blob);
    if blob.is_empty() {
        return Vec::new();
    }
    blob.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

fn addr(family: u8, raw: &[u8], port: u16) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        10 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw.get(..16)?);
            let v6 = Ipv6Addr::from(b);
            // A v4 peer of a dual-stack socket reads as ::ffff:a.b.c.d: report the v4 address.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Decodes one ring-buffer record.
pub fn decode(b: &[u8]) -> Result<KernelEvent, DecodeError> {
    let mut r = Reader { b, at: 0 };
    let kind = r.u16("header")?;
    let op = r.u16("header")?;
    let _size = r.u32("header")?;
    let boot_ns = r.u64("header")?;
    let tgid = r.u32("header")?;
    let tid = r.u32("header")?;
    let ppid = r.u32("header")?;
    let (uid, euid, gid, egid) = (
        r.u32("header")?,
        r.u32("header")?,
        r.u32("header")?,
        r.u32("header")?,
    );
    let auid = r.u32("header")?;
    let ses = r.u32("header")?;
    let flags = r.u32("header")?;
    let cgroup_id = r.u64("header")?;
    let start_boottime = r.u64("header")?;
    let comm = comm(r.take(16, "header")?);
    debug_assert_eq!(r.at, HDR_LEN);
    let task = Task {
        boot_ns,
        tgid,
        tid,
        ppid,
        uid,
        euid,
        gid,
        egid,
        auid,
        ses,
        cgroup_id,
        start_boottime,
        comm,
    };
    Ok(match kind {
        1 => {
            let exe = r.bytes("exe")?;
            let cwd = r.bytes("cwd")?;
            let argv = split_argv(&r.bytes("argv")?);
            let tty = r.bytes("tty")?;
            let cgroup_name = r.bytes("cgroup")?;
            KernelEvent::Exec(Exec {
                task,
                exe,
                cwd,
                argv_missing: flags & FL_ARGV_MISSING != 0,
                argv_truncated: flags & FL_ARGV_TRUNCATED != 0,
                argv,
                tty,
                cgroup_name,
                path_truncated: flags & FL_PATH_TRUNC != 0,
            })
        }
        2 => {
            let f = r.take(FORK_LEN, "fork")?;
            let mut f = Reader { b: f, at: 0 };
            let child = f.u32("fork")?;
            let _pad = f.u32("fork")?;
            KernelEvent::Fork {
                task,
                child,
                child_start_boottime: f.u64("fork")?,
            }
        }
        3 => {
            let mut e = Reader {
                b: r.take(EXIT_LEN, "exit")?,
                at: 0,
            };
            KernelEvent::Exit {
                task,
                code: e.u32("exit")? as i32,
                signal: e.u32("exit")? as i32,
            }
        }
        4 => {
            let op = match op {
                1 => FileOp::Create,
                2 => FileOp::Modify,
                3 => FileOp::CloseWrite,
                4 => FileOp::Delete,
                5 => FileOp::Rename,
                6 => FileOp::Chmod,
                7 => FileOp::Chown,
                value => {
                    return Err(DecodeError::Value {
                        what: "file operation",
                        value,
                    });
                }
            };
            let mut f = Reader {
                b: r.take(FILE_LEN, "file")?,
                at: 0,
            };
            let mode = f.u32("file")?;
            let fuid = f.u32("file")?;
            let fgid = f.u32("file")?;
            let _fd = f.u32("file")?;
            let ino = f.u64("file")?;
            let dev = f.u32("file")?;
            KernelEvent::File(File {
                task,
                op,
                pending: flags & FL_PENDING != 0,
                is_dir: flags & FL_DIR != 0,
                mode,
                uid: fuid,
                gid: fgid,
                ino,
                dev,
                path: r.bytes("path")?,
                dir: r.bytes("dir")?,
                path2: r.bytes("path2")?,
                dir2: r.bytes("dir2")?,
                path_truncated: flags & FL_PATH_TRUNC != 0,
            })
        }
        5 => {
            let dir = match op {
                1 => NetDir::Outbound,
                2 => NetDir::Inbound,
                3 => NetDir::Listen,
                4 => NetDir::ListenClosed,
                5 => NetDir::OutboundFailed,
                value => {
                    return Err(DecodeError::Value {
                        what: "direction",
                        value,
                    });
                }
            };
            let n = r.take(NET_LEN, "network")?;
            let family = n[0];
            let protocol = n[1];
            let sport = u16::from_le_bytes([n[2], n[3]]);
            let dport = u16::from_le_bytes([n[4], n[5]]);
            let local = addr(family, &n[8..24], sport).ok_or(DecodeError::Value {
                what: "address family",
                value: u16::from(family),
            })?;
            let remote = addr(family, &n[24..40], dport).ok_or(DecodeError::Short("network"))?;
            KernelEvent::Net(Net {
                task,
                dir,
                protocol,
                local,
                remote,
            })
        }
        6 => {
            let mut x = Reader {
                b: r.take(SYS_EXIT_LEN, "syscall result")?,
                at: 0,
            };
            KernelEvent::SysExit {
                tgid,
                tid,
                ret: x.u64("syscall result")? as i64,
            }
        }
        k => return Err(DecodeError::Kind(k)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header as the BPF side writes it.
    pub(crate) fn hdr(kind: u16, op: u16, flags: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(kind.to_le_bytes());
        b.extend(op.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(5_000_000_000u64.to_le_bytes());
        for v in [42u32, 43, 1, 1000, 0, 1000, 0, 1000, 3, flags] {
            b.extend(v.to_le_bytes());
        }
        b.extend(77u64.to_le_bytes());
        b.extend(1_230_000_000u64.to_le_bytes());
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        b.extend(comm);
        assert_eq!(b.len(), HDR_LEN);
        b
    }

    fn s(b: &mut Vec<u8>, v: &[u8]) {
        b.extend((v.len() as u16).to_le_bytes());
        b.extend(v);
    }

    #[test]
    fn an_exec_record_decodes_with_its_argv() {
        let mut b = hdr(1, 0, 0);
        s(&mut b, b"/usr/bin/cat");
        s(&mut b, b"/tmp");
        s(&mut b, b"cat\0/etc/shadow\0\0x\0");
        s(&mut b, b"pts0");
        s(&mut b, b"docker-0123.scope");
        let KernelEvent::Exec(e) = decode(&b).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.exe, b"/usr/bin/cat");
        // An empty argument keeps its place.
        assert_eq!(
            e.argv,
            vec![
                b"cat".to_vec(),
                b"/etc/shadow".to_vec(),
                vec![],
                b"x".to_vec()
            ]
        );
        assert_eq!(e.task.tgid, 42);
        assert_eq!(e.task.comm, b"bash");
        assert_eq!(e.task.start_ticks(), 123);
        assert!(!e.argv_missing);
        assert_eq!(e.cgroup_name, b"docker-0123.scope");
    }

    #[test]
    fn missing_argv_is_flagged_not_empty() {
        let mut b = hdr(1, 0, FL_ARGV_MISSING);
        for v in [&b"/bin/true"[..], b"/", b"", b"", b""] {
            s(&mut b, v);
        }
        let KernelEvent::Exec(e) = decode(&b).unwrap() else {
            panic!()
        };
        assert!(e.argv_missing);
        assert!(e.argv.is_empty());
    }

    #[test]
    fn network_records_map_v4_in_v6_to_v4() {
        let mut b = hdr(5, 1, 0);
        b.extend([10u8, 6]);
        b.extend(40000u16.to_le_bytes());
        b.extend(443u16.to_le_bytes());
        b.extend([0, 0]);
        let mut sa = [0u8; 16];
        sa[10] = 0xff;
        sa[11] = 0xff;
        sa[12..].copy_from_slice(&[127, 0, 0, 1]);
        b.extend(sa);
        let mut da = [0u8; 16];
        da[15] = 1;
        b.extend(da);
        let KernelEvent::Net(n) = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(n.local.to_string(), "127.0.0.1:40000");
        assert_eq!(n.remote.to_string(), "[::1]:443");
        assert_eq!(n.dir, NetDir::Outbound);
    }

    #[test]
    fn truncated_records_are_errors() {
        let mut b = hdr(4, 5, FL_PENDING);
        b.extend([0u8; FILE_LEN]);
        s(&mut b, b"old");
        assert_eq!(decode(&b), Err(DecodeError::Short("dir")));
        assert_eq!(decode(&b[..10]), Err(DecodeError::Short("header")));
        assert_eq!(decode(&hdr(9, 0, 0)), Err(DecodeError::Kind(9)));
    }

    #[test]
    fn file_fork_exit_and_results_decode() {
        let mut b = hdr(4, 5, FL_PENDING | FL_DIR);
        for v in [0o644u32, u32::MAX, u32::MAX, 3] {
            b.extend(v.to_le_bytes());
        }
        b.extend(99u64.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        for v in [&b"old"[..], b"/home/a", b"/etc/x", b""] {
            s(&mut b, v);
        }
        let KernelEvent::File(f) = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(
            (f.op, f.pending, f.is_dir, f.ino, f.dev),
            (FileOp::Rename, true, true, 99, 8)
        );
        assert_eq!(
            (f.path.as_slice(), f.dir.as_slice(), f.path2.as_slice()),
            (&b"old"[..], &b"/home/a"[..], &b"/etc/x"[..])
        );

        let mut b = hdr(2, 0, 0);
        b.extend(77u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(2_000_000_000u64.to_le_bytes());
        assert_eq!(
            decode(&b).unwrap(),
            KernelEvent::Fork {
                task: decode_task(),
                child: 77,
                child_start_boottime: 2_000_000_000
            }
        );

        let mut b = hdr(3, 0, 0);
        b.extend(3i32.to_le_bytes());
        b.extend(9i32.to_le_bytes());
        assert!(matches!(
            decode(&b).unwrap(),
            KernelEvent::Exit {
                code: 3,
                signal: 9,
                ..
            }
        ));

        let mut b = hdr(6, 0, 0);
        b.extend((-2i64).to_le_bytes());
        assert_eq!(
            decode(&b).unwrap(),
            KernelEvent::SysExit {
                tgid: 42,
                tid: 43,
                ret: -2
            }
        );
        assert_eq!(
            decode(&hdr(4, 9, 0)),
            Err(DecodeError::Value {
                what: "file operation",
                value: 9
            })
        );
    }

    fn decode_task() -> Task {
        let KernelEvent::Exit { task, .. } = decode(&[hdr(3, 0, 0), vec![0; 8]].concat()).unwrap()
        else {
            panic!()
        };
        task
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(kind in 0u16..8, op in 0u16..8,
            tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = hdr(kind, op, 0);
            b.extend(tail);
            let _ = decode(&b);
        }

        #[test]
        fn arbitrary_prefixes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }
    }
}
