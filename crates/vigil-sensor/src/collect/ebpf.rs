//! The eBPF source: runs the `vigil-ebpf` programs and turns their records
//! into [`RawEvent`]s — clocks converted, relative paths joined to the
//! directory the kernel resolved, entry-time file records kept until their
//! syscall is known to have succeeded, excluded paths dropped.

use super::{ExecInfo, FileInfo, NetInfo, Origin, RawEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};
use vigil_ebpf::{FileOp, KernelEvent, NetDir, Probe};
use vigil_proto::v1::{Direction, FileOperation, TransportProtocol};

/// Entry-time file records waiting for their syscall's result, at most.
const MAX_PENDING: usize = 8192;
/// The longest the reader sleeps in the kernel when nothing comes (a stop is
/// noticed within it).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Events handed to the pipeline in one send, at most.
const MAX_BATCH: usize = 512;
/// After a round of records, the reader waits this long before the next one:
/// under load one wake-up of reader and pipeline per 5 ms instead of one per
/// exec halves the sensor's CPU, for at most 5 ms more before a detection.
const COALESCE: Duration = Duration::from_millis(5);
/// At a stop, records already in the ring are read for at most this long.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the kernel-side counters are read and reported.
const TOTALS_EVERY: Duration = Duration::from_secs(1);

/// Paths never reported (prefixes at a component boundary).
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    prefixes: Vec<Vec<u8>>,
}

impl PathFilter {
    pub fn new<I: IntoIterator<Item = Vec<u8>>>(prefixes: I) -> PathFilter {
        PathFilter {
            prefixes: prefixes
                .into_iter()
                .map(|mut p| {
                    while p.len() > 1 && p.ends_with(b"/") {
                        p.pop();
                    }
                    p
                })
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    pub fn excludes(&self, path: &[u8]) -> bool {
        self.prefixes.iter().any(|p| {
            path.starts_with(p)
                && (path.len() == p.len() || path[p.len()] == b'/' || p.as_slice() == b"/")
        })
    }
}

/// `dir` joined with a relative `path`, `.` and `..` resolved lexically (the
/// kernel already resolved `dir`; symlinks inside `path` stay as written).
pub fn join(dir: &[u8], path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let whole: Vec<u8>;
    let src = if path.starts_with(b"/") || dir.is_empty() {
        path
    } else {
        whole = [dir, b"/", path].concat();
        &whole
    };
    if !src.starts_with(b"/") {
        return src.to_vec();
    }
    for c in src.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(src.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

pub struct EbpfSource {
    probe: Probe,
}

impl std::fmt::Debug for EbpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.probe.fmt(f)
    }
}

struct Convert {
    offset: i64,
    exclude: PathFilter,
    pending: HashMap<u32, vigil_ebpf::File>,
    order: VecDeque<u32>,
    unmatched: u64,
}

impl Convert {
    fn time(&self, boot_ns: u64) -> i64 {
        self.offset
            .saturating_add(i64::try_from(boot_ns).unwrap_or(i64::MAX))
    }

    fn event(&mut self, ev: KernelEvent) -> Option<RawEvent> {
        match ev {
            KernelEvent::Exec(e) => Some(RawEvent::Exec(ExecInfo {
                pid: e.task.tgid,
                ppid: e.task.ppid,
                unix_ns: self.time(e.task.boot_ns),
                uid: e.task.uid,
                euid: e.task.euid,
                gid: e.task.gid,
                egid: e.task.egid,
                login_uid: e.task.auid,
                session_id: e.task.ses,
                tty: String::from_utf8_lossy(&e.tty).into_owned(),
                exe: e.exe,
                cwd: e.cwd,
                argv: e.argv,
                argv_truncated: e.argv_truncated,
                argv_missing: e.argv_missing,
                start_ticks: Some(e.task.start_ticks()),
                cgroup_id: e.task.cgroup_id,
                container_id: super::procfs::container_of_cgroup(&e.cgroup_name),
                origin: Origin::Ebpf,
            })),
            KernelEvent::Fork {
                task,
                child,
                child_start_boottime,
            } => Some(RawEvent::Fork {
                parent: task.tgid,
                child,
                child_start_ticks: Some(child_start_boottime / 10_000_000),
            }),
            KernelEvent::Exit { task, code, signal } => Some(RawEvent::Exit {
                pid: task.tgid,
                exit_code: code,
                exit_signal: signal,
                unix_ns: self.time(task.boot_ns),
            }),
            KernelEvent::File(f) if f.pending => {
                if self.pending.len() >= MAX_PENDING
                    && let Some(old) = self.order.pop_front()
                    && self.pending.remove(&old).is_some()
                {
                    self.unmatched += 1;
                }
                let tid = f.task.tid;
                if self.pending.insert(tid, f).is_none() {
                    self.order.push_back(tid);
                }
                None
            }
            KernelEvent::SysExit { tid, ret, .. } => {
                let f = self.pending.remove(&tid)?;
                if let Some(i) = self.order.iter().position(|&t| t == tid) {
                    self.order.remove(i);
                }
                (ret >= 0).then(|| self.file(f)).flatten()
            }
            KernelEvent::File(f) => self.file(f),
            KernelEvent::Net(n) => Some(RawEvent::Net(NetInfo {
                pid: n.task.tgid,
                unix_ns: self.time(n.task.boot_ns),
                protocol: if n.protocol == 17 {
                    TransportProtocol::Udp
                } else {
                    TransportProtocol::Tcp
                },
                direction: match n.dir {
                    NetDir::Outbound | NetDir::OutboundFailed => Direction::Outbound,
                    NetDir::Inbound => Direction::Inbound,
                    NetDir::Listen | NetDir::ListenClosed => Direction::Listen,
                },
                local: n.local,
                remote: n.remote,
                state: match n.dir {
                    NetDir::Outbound | NetDir::Inbound => "established",
                    NetDir::OutboundFailed => "failed",
                    NetDir::Listen => "listening",
                    NetDir::ListenClosed => "closed",
                },
                process_uid: n.task.uid,
                origin: "live",
            })),
        }
    }

    fn file(&mut self, f: vigil_ebpf::File) -> Option<RawEvent> {
        let path = join(&f.dir, &f.path);
        let path2 = if f.op == FileOp::Rename {
            join(&f.dir2, &f.path2)
        } else {
            Vec::new()
        };
        if self.exclude.excludes(&path) && (path2.is_empty() || self.exclude.excludes(&path2)) {
            return None;
        }
        let operation = match f.op {
            FileOp::Create => FileOperation::Create,
            FileOp::Modify => FileOperation::Modify,
            FileOp::CloseWrite => FileOperation::CloseWrite,
            FileOp::Delete => FileOperation::Delete,
            FileOp::Rename => FileOperation::Rename,
            FileOp::Chmod => FileOperation::Chmod,
            FileOp::Chown => FileOperation::Chown,
        };
        // A rename reports where the file went; where it came from is the previous path.
        let (path, previous_path) = if f.op == FileOp::Rename {
            (path2, path)
        } else {
            (path, Vec::new())
        };
        Some(RawEvent::File(FileInfo {
            pid: f.task.tgid,
            unix_ns: self.time(f.task.boot_ns),
            operation,
            path,
            previous_path,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            is_dir: f.is_dir,
            process_uid: f.task.uid,
        }))
    }
}

impl EbpfSource {
    pub fn start(opts: &vigil_ebpf::Options) -> Result<EbpfSource, vigil_ebpf::ProbeError> {
        Ok(EbpfSource {
            probe: Probe::load(opts)?,
        })
    }

    /// The tracepoints attached, for the operator.
    pub fn attached(&self) -> &[String] {
        &self.probe.attached
    }

    /// Reads until `stop`; blocks on a full queue (the kernel ring then fills
    /// and counts what it cannot keep: loss is counted, never silent).
    pub fn run(mut self, stop: Arc<AtomicBool>, tx: SyncSender<RawEvent>, exclude: PathFilter) {
        let mut conv = Convert {
            offset: super::procfs::clock_to_unix_offset_ns(nix::time::ClockId::CLOCK_BOOTTIME),
            exclude,
            pending: HashMap::new(),
            order: VecDeque::new(),
            unmatched: 0,
        };
        let mut last_totals = Instant::now();
        let mut undecodable = 0u64;
        let mut reported_unmatched = 0u64;
        let mut gone = false;
        let mut batch: Vec<RawEvent> = Vec::new();
        // One round: what the ring holds (waiting up to `timeout` for some),
        // decoded, converted and handed to the pipeline in batches.
        let mut round = |probe: &mut Probe,
                         conv: &mut Convert,
                         undecodable: &mut u64,
                         timeout: Duration,
                         gone: &mut bool| {
            let send = |batch: &mut Vec<RawEvent>, gone: &mut bool| {
                if !batch.is_empty() && tx.send(RawEvent::Batch(std::mem::take(batch))).is_err() {
                    *gone = true;
                }
            };
            let r = probe.poll(timeout, |b| {
                if *gone {
                    return;
                }
                match vigil_ebpf::decode(b) {
                    Ok(ev) => {
                        if let Some(ev) = conv.event(ev) {
                            batch.push(ev);
                            if batch.len() >= MAX_BATCH {
                                send(&mut batch, gone);
                            }
                        }
                    }
                    Err(e) => {
                        *undecodable += 1;
                        if undecodable.is_power_of_two() {
                            tracing::warn!(error = %e, count = *undecodable, "Undecodable eBPF record");
                        }
                    }
                }
            });
            send(&mut batch, gone);
            r
        };
        while !stop.load(Ordering::Relaxed) && !gone {
            let r = round(
                &mut self.probe,
                &mut conv,
                &mut undecodable,
                IDLE_POLL,
                &mut gone,
            );
            let delivered = match r {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::error!(error = %e, "eBPF source stopped");
                    break;
                }
            };
            if delivered {
                // Let the next records gather: one wake-up per few milliseconds
                // under load instead of one per record (the ring holds them).
                std::thread::sleep(COALESCE);
            }
            if stop.load(Ordering::Relaxed) {
                // What the kernel already made is delivered before we hang up.
                let deadline = Instant::now() + DRAIN_GRACE;
                while Instant::now() < deadline && !gone {
                    let r = round(
                        &mut self.probe,
                        &mut conv,
                        &mut undecodable,
                        Duration::ZERO,
                        &mut gone,
                    );
                    if !matches!(r, Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            if last_totals.elapsed() >= TOTALS_EVERY {
                last_totals = Instant::now();
                match self.probe.counters() {
                    Ok(c) => {
                        for (source, (produced, dropped)) in [
                            ("ebpf_process", c.process),
                            ("ebpf_file", c.file),
                            ("ebpf_network", c.network),
                        ] {
                            let _ = tx.try_send(RawEvent::Totals {
                                source,
                                produced,
                                dropped,
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Cannot read eBPF counters"),
                }
                if conv.unmatched > reported_unmatched {
                    let _ = tx.try_send(RawEvent::Lost {
                        source: "ebpf_file_unmatched",
                        count: conv.unmatched - reported_unmatched,
                    });
                    reported_unmatched = conv.unmatched;
                }
                if undecodable > 0 {
                    let _ = tx.try_send(RawEvent::Lost {
                        source: "ebpf_undecodable",
                        count: std::mem::take(&mut undecodable),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_their_directory() {
        assert_eq!(join(b"/home/a", b"x/../y/./z"), b"/home/a/y/z");
        assert_eq!(join(b"/home/a", b"/etc/passwd"), b"/etc/passwd");
        assert_eq!(join(b"", b"rel"), b"rel");
        assert_eq!(join(b"/", b"../../etc"), b"/etc");
        assert_eq!(join(b"/tmp", b"bad\xffname"), b"/tmp/bad\xffname");
    }

    #[test]
    fn exclusions_stop_at_component_boundaries() {
        let f = PathFilter::new([b"/proc".to_vec(), b"/var/lib/vigil/".to_vec()]);
        assert!(f.excludes(b"/proc"));
        assert!(f.excludes(b"/proc/1/status"));
        assert!(!f.excludes(b"/processes"));
        assert!(f.excludes(b"/var/lib/vigil/spool.redb"));
        assert!(!f.excludes(b"/var/lib/vigilant"));
    }

    fn task(tid: u32) -> vigil_ebpf::Task {
        vigil_ebpf::Task {
            tgid: tid,
            tid,
            ..Default::default()
        }
    }

    #[test]
    fn entry_records_wait_for_their_result() {
        let mut c = Convert {
            offset: 0,
            exclude: PathFilter::default(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            unmatched: 0,
        };
        let rename = |tid| {
            KernelEvent::File(vigil_ebpf::File {
                task: task(tid),
                op: FileOp::Rename,
                pending: true,
                is_dir: false,
                mode: 0,
                uid: u32::MAX,
                gid: u32::MAX,
                ino: 0,
                dev: 0,
                path: b"a".to_vec(),
                dir: b"/tmp".to_vec(),
                path2: b"/etc/cron.d/b".to_vec(),
                dir2: Vec::new(),
                path_truncated: false,
            })
        };
        assert!(c.event(rename(7)).is_none());
        assert!(c.event(rename(8)).is_none());
        // A failed rename is not reported; a successful one is, old → new.
        let exit = |tid, ret| KernelEvent::SysExit {
            tgid: tid,
            tid,
            ret,
        };
        assert!(c.event(exit(8, -2)).is_none());
        let Some(RawEvent::File(f)) = c.event(exit(7, 0)) else {
            panic!("rename not reported")
        };
        assert_eq!(f.path, b"/etc/cron.d/b");
        assert_eq!(f.previous_path, b"/tmp/a");
        assert!(c.pending.is_empty() && c.order.is_empty());
        // A result with nothing pending is ignored.
        assert!(c.event(exit(9, 0)).is_none());
    }
}
