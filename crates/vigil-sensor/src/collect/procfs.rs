//! Reads of /proc/<pid>: the inventory and the fallback exec path. A process
//! may vanish between any two reads; every read is fallible.

use super::{ExecInfo, Origin};
use std::path::PathBuf;

/// Largest /proc/<pid>/cmdline read.
const MAX_CMDLINE: u64 = 128 * 1024;

fn proc_path(pid: u32, leaf: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{leaf}"))
}

fn link_bytes(pid: u32, leaf: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(proc_path(pid, leaf))
        .map(|p| p.into_os_string().into_vec())
        .unwrap_or_default()
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read(proc_path(pid, "stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: split after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    rest.split(' ').nth(19)?.parse().ok()
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read(proc_path(pid, "stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// (real, effective) uid and gid from /proc/<pid>/status.
pub(crate) fn ids(pid: u32) -> Option<((u32, u32), (u32, u32))> {
    let status = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    let pick = |key: &str| -> Option<(u32, u32)> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let mut it = line[key.len()..]
            .split_whitespace()
            .map(|v| v.parse::<u32>().ok());
        Some((it.next()??, it.next()??))
    };
    Some((pick("Uid:")?, pick("Gid:")?))
}

fn read_u32(pid: u32, leaf: &str) -> u32 {
    std::fs::read_to_string(proc_path(pid, leaf))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// Everything /proc says about `pid`, or `None` when it is gone or unreadable.
pub(crate) fn exec_info(pid: u32, unix_ns: i64, origin: Origin) -> Option<ExecInfo> {
    use std::io::Read;
    let mut cmdline = Vec::new();
    std::fs::File::open(proc_path(pid, "cmdline"))
        .ok()?
        .take(MAX_CMDLINE)
        .read_to_end(&mut cmdline)
        .ok()?;
    let argv_truncated = cmdline.len() as u64 >= MAX_CMDLINE;
    let argv: Vec<Vec<u8>> = cmdline
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let ((uid, euid), (gid, egid)) = ids(pid)?;
    Some(ExecInfo {
        pid,
        ppid: ppid_of(pid).unwrap_or(0),
        unix_ns,
        uid,
        euid,
        gid,
        egid,
        login_uid: read_u32(pid, "loginuid"),
        session_id: read_u32(pid, "sessionid"),
        tty: String::new(),
        exe: link_bytes(pid, "exe"),
        cwd: link_bytes(pid, "cwd"),
        argv,
        argv_truncated,
        argv_missing: false,
        start_ticks: start_ticks(pid),
        cgroup_id: 0,
        container_id: container_of_cgroup(
            &std::fs::read(proc_path(pid, "cgroup")).unwrap_or_default(),
        ),
        origin,
    })
}

/// Machine id and boot id: what makes process GUIDs unique across hosts and reboots.
pub(crate) fn machine_and_boot_id() -> (String, String) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let mut machine = read("/etc/machine-id");
    if machine.is_empty() {
        machine = read("/var/lib/dbus/machine-id");
    }
    (machine, read("/proc/sys/kernel/random/boot_id"))
}

/// Nanoseconds to add to a reading of `clock` to get Unix time: CLOCK_MONOTONIC
/// stamps proc connector events, CLOCK_BOOTTIME the eBPF records.
pub(crate) fn clock_to_unix_offset_ns(clock: nix::time::ClockId) -> i64 {
    use nix::time::{ClockId, clock_gettime};
    let ns = |c| {
        clock_gettime(c).map_or(0, |t| {
            t.tv_sec()
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec())
        })
    };
    ns(ClockId::CLOCK_REALTIME) - ns(clock)
}

/// Boot time in ns since the epoch, from /proc/stat's `btime`.
pub(crate) fn boot_time_unix_ns() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
        })
        .map_or(0, |s| s.saturating_mul(1_000_000_000))
}

/// The container id in a cgroup path or name, as docker, containerd, cri-o,
/// podman and lxc name their cgroups ("docker-<64 hex>.scope", ".../<64 hex>",
/// "crio-<id>.scope", "libpod-<id>.scope", "lxc.payload.<name>").
pub(crate) fn container_of_cgroup(cgroup: &[u8]) -> String {
    let text = String::from_utf8_lossy(cgroup);
    // /proc/PID/cgroup is "0::/path"; a bare name (from eBPF) has no colon.
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or(&text);
    for part in path.rsplit('/') {
        let part = part.trim();
        if let Some(name) = part.strip_prefix("lxc.payload.") {
            return name.to_owned();
        }
        let core = part.strip_suffix(".scope").unwrap_or(part);
        let id = core.rsplit(['-', ':']).next().unwrap_or(core);
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return id.to_owned();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let info = exec_info(me, 0, Origin::Snapshot).expect("own /proc entry");
        assert_eq!(info.pid, me);
        assert!(!info.argv.is_empty());
        assert!(!info.exe.is_empty());
        assert!(start_ticks(me).is_some());
        assert_eq!(exec_info(u32::MAX - 1, 0, Origin::Snapshot), None);
    }

    #[test]
    fn container_ids_come_from_runtime_cgroup_names() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for cg in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("0::/kubepods/besteffort/pod1/{id}"),
            format!("cri-containerd-{id}.scope"),
            format!("libpod-{id}.scope"),
        ] {
            assert_eq!(super::container_of_cgroup(cg.as_bytes()), id, "{cg}");
        }
        assert_eq!(
            super::container_of_cgroup(b"0::/user.slice/session-3.scope"),
            ""
        );
        assert_eq!(
            super::container_of_cgroup(b"0::/lxc.payload.web/init.scope"),
            "web"
        );
    }
}
