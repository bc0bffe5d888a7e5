//! Enrichment: turns raw collector events into schema records — process GUIDs,
//! the parent link, user names and executable hashes — and keeps the process
//! table that makes the tree.

pub mod persistence;

use crate::collect::{ExecInfo, FileInfo, NetInfo, RawEvent};
use std::collections::{HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use vigil_proto::v1::{
    FileEvent, FileOperation, NetworkConnection, Path as PbPath, ProcessExit, ProcessRef,
    ProcessStart, Redaction, record::Payload,
};

/// Bound on tracked processes (a fork bomb cannot grow the table without end).
pub const MAX_PROCESSES: usize = 65_536;
/// Exits seen before their exec (two kernel sources race) wait this long.
const PENDING_EXIT_NS: i64 = 2_000_000_000;
const MAX_PENDING_EXITS: usize = 4096;
/// An exited process stays in the table this long, so children whose exec
/// reaches us after the parent's exit (two kernel sources, no common order)
/// still find their parent.
const EXITED_GRACE_NS: i64 = 10_000_000_000;

/// A path from raw bytes: lossless when UTF-8, raw bytes kept otherwise.
pub fn path_from_bytes(b: &[u8]) -> PbPath {
    match std::str::from_utf8(b) {
        Ok(s) => PbPath {
            text: s.to_owned(),
            raw: Vec::new(),
            lossy: false,
        },
        Err(_) => PbPath {
            text: String::from_utf8_lossy(b).into_owned(),
            raw: b.to_vec(),
            lossy: true,
        },
    }
}

/// argv joined with spaces, as rules and analysts read a command line.
pub fn command_line(argv: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&String::from_utf8_lossy(a));
    }
    s
}

#[derive(Debug, Clone)]
struct Entry {
    guid: String,
    pid: u32,
    exe: PbPath,
    command_line: String,
    ppid: u32,
    exited: bool,
    /// The sensor itself or one of its descendants: tracked, never reported.
    excluded: bool,
}

impl Entry {
    fn as_ref(&self) -> ProcessRef {
        ProcessRef {
            guid: self.guid.clone(),
            pid: self.pid,
            executable: Some(self.exe.clone()),
            command_line: self.command_line.clone(),
        }
    }
}

pub struct Enricher {
    machine_id: String,
    boot_id: String,
    table: HashMap<u32, Entry>,
    users: HashMap<u32, String>,
    hasher: vigil_hash::FileHasher,
    pending_exits: VecDeque<(u32, i32, i32, i64)>,
    /// Exited processes still in the table: (pid, guid, exit time).
    exited: VecDeque<(u32, String, i64)>,
    /// Events that could not be enriched fully (e.g. table full), for health.
    pub evicted: u64,
    /// The sensor's own process: it and its descendants are not reported.
    self_pid: Option<u32>,
    /// Written files hashed when closed: persistence files, executables, and these prefixes.
    hash_paths: Vec<Vec<u8>>,
    exclude_exes: Vec<Vec<u8>>,
    /// Secrets in arguments replaced before anything else sees them.
    redactor: vigil_redact::Redactor,
    /// Secrets replaced since start, by rule, for health.
    pub redacted: std::collections::BTreeMap<String, u64>,
    /// What was redacted in each reported process's arguments, by GUID, until
    /// the pipeline writes it on the record ([`Enricher::take_redactions`]).
    redactions: HashMap<String, Vec<Redaction>>,
}

/// Notes of redactions waiting for their records, at most.
const MAX_REDACTION_NOTES: usize = 4096;

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("processes", &self.table.len())
            .finish_non_exhaustive()
    }
}

/// A process GUID: stable for one exec image of one process, unique across
/// PID reuse (start time, exec time) and reboots and hosts (boot id, machine id).
pub fn process_guid(
    machine_id: &str,
    boot_id: &str,
    pid: u32,
    start_ticks: u64,
    exec_ns: i64,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(machine_id.as_bytes());
    h.update(b"\0");
    h.update(boot_id.as_bytes());
    h.update(&pid.to_le_bytes());
    h.update(&start_ticks.to_le_bytes());
    h.update(&exec_ns.to_le_bytes());
    let b = h.finalize();
    let x = hex::encode(&b.as_bytes()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl Enricher {
    pub fn new(machine_id: String, boot_id: String, hasher: vigil_hash::FileHasher) -> Enricher {
        Enricher {
            machine_id,
            boot_id,
            table: HashMap::new(),
            users: HashMap::new(),
            hasher,
            pending_exits: VecDeque::new(),
            exited: VecDeque::new(),
            evicted: 0,
            self_pid: None,
            hash_paths: Vec::new(),
            exclude_exes: Vec::new(),
            redactor: vigil_redact::Redactor::default(),
            redacted: std::collections::BTreeMap::new(),
            redactions: HashMap::new(),
        }
    }

    /// Replaces the redaction rules (the tenant's policy or the configuration changed).
    pub fn set_redactor(&mut self, redactor: vigil_redact::Redactor) {
        self.redactor = redactor;
    }

    /// What was redacted in the arguments of process `guid` (once).
    pub fn take_redactions(&mut self, guid: &str) -> Vec<Redaction> {
        self.redactions.remove(guid).unwrap_or_default()
    }

    /// Replaces secrets in `argv` (before it is hashed into a command line,
    /// evaluated, spooled or sent) and counts them.
    fn redact(&mut self, argv: &mut [Vec<u8>]) -> vigil_redact::Redactions {
        let done = self.redactor.argv(argv);
        for (rule, n) in done.counts() {
            *self.redacted.entry(rule.clone()).or_default() += u64::from(*n);
        }
        done
    }

    /// Excludes `pid` (the sensor) and every process it starts from the records.
    pub fn exclude_self(&mut self, pid: u32) {
        self.self_pid = Some(pid);
    }

    /// Processes running one of these executables (and what they start) are not reported.
    pub fn exclude_executables(&mut self, exes: Vec<Vec<u8>>) {
        self.exclude_exes = exes;
    }

    /// Written files under these prefixes are hashed when closed (besides
    /// persistence files and executables, which always are).
    pub fn hash_written_under(&mut self, prefixes: Vec<Vec<u8>>) {
        self.hash_paths = prefixes;
    }

    fn excluded(&self, pid: u32, ppid: u32) -> bool {
        self.self_pid == Some(pid)
            || self.self_pid == Some(ppid)
            || self.table.get(&ppid).is_some_and(|p| p.excluded)
    }

    /// The acting process of a file or network event.
    fn actor(&mut self, pid: u32) -> Option<Entry> {
        self.parent_entry(pid)
    }

    fn user_name(&mut self, uid: u32) -> String {
        if let Some(n) = self.users.get(&uid) {
            return n.clone();
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        if self.users.len() < 4096 {
            self.users.insert(uid, name.clone());
        }
        name
    }

    /// The table entry for a parent we never saw exec (it predates us and was
    /// missed by the snapshot, or forked without exec): built from /proc.
    fn parent_entry(&mut self, ppid: u32) -> Option<Entry> {
        if ppid == 0 {
            return None;
        }
        if let Some(e) = self.table.get(&ppid) {
            return Some(e.clone());
        }
        let mut info =
            crate::collect::procfs::exec_info(ppid, 0, crate::collect::Origin::Snapshot)?;
        self.redact(&mut info.argv);
        let ticks = crate::collect::procfs::start_ticks(ppid).unwrap_or(0);
        let entry = Entry {
            guid: process_guid(&self.machine_id, &self.boot_id, ppid, ticks, 0),
            pid: ppid,
            exe: path_from_bytes(&info.exe),
            command_line: command_line(&info.argv),
            ppid: info.ppid,
            exited: false,
            excluded: self.self_pid == Some(ppid),
        };
        self.insert(entry.clone());
        Some(entry)
    }

    fn insert(&mut self, e: Entry) {
        if self.table.len() >= MAX_PROCESSES && !self.table.contains_key(&e.pid) {
            // Drop an arbitrary entry; a process we lose track of only loses its parent link.
            if let Some(&k) = self.table.keys().next() {
                self.table.remove(&k);
                self.evicted += 1;
            }
        }
        self.table.insert(e.pid, e);
    }

    /// Turns one raw event into zero or more record payloads (with their time).
    pub fn enrich(&mut self, ev: RawEvent, out: &mut Vec<(i64, Payload)>) {
        match ev {
            RawEvent::Exec(info) => self.exec(info, out),
            RawEvent::Exit {
                pid,
                exit_code,
                exit_signal,
                unix_ns,
            } => {
                if self.table.get(&pid).is_some_and(|e| !e.exited) {
                    self.exit(pid, exit_code, exit_signal, unix_ns, out);
                } else {
                    if self.pending_exits.len() >= MAX_PENDING_EXITS {
                        self.pending_exits.pop_front();
                    }
                    self.pending_exits
                        .push_back((pid, exit_code, exit_signal, unix_ns));
                }
            }
            RawEvent::File(f) => self.file(f, out),
            RawEvent::Net(n) => self.net(n, out),
            RawEvent::Totals { .. } => {}
            RawEvent::Batch(events) => {
                for e in events {
                    self.enrich(e, out);
                }
            }
            RawEvent::Fork {
                parent,
                child,
                child_start_ticks,
            } => {
                // The child runs the parent's image until it execs. Forks come
                // from the proc connector and execs from audit, in no common
                // order: a fork reported after the child's exec must not
                // overwrite what the exec recorded.
                let known = self.table.get(&child).is_some_and(|e| !e.exited);
                if !known && let Some(p) = self.table.get(&parent).cloned() {
                    let ticks = child_start_ticks
                        .or_else(|| crate::collect::procfs::start_ticks(child))
                        .unwrap_or(0);
                    let guid = process_guid(&self.machine_id, &self.boot_id, child, ticks, 0);
                    self.insert(Entry {
                        guid,
                        pid: child,
                        ppid: parent,
                        exited: false,
                        excluded: p.excluded || self.self_pid == Some(parent),
                        ..p
                    });
                }
            }
            RawEvent::Lost { .. } => {}
        }
    }

    /// Forgets exits that waited for an exec that never came, and exited
    /// processes past their grace period.
    pub fn expire(&mut self, now_ns: i64) {
        while let Some((pid, guid, t)) = self.exited.front() {
            if now_ns - *t < EXITED_GRACE_NS {
                break;
            }
            if self
                .table
                .get(pid)
                .is_some_and(|e| e.exited && &e.guid == guid)
            {
                self.table.remove(pid);
            }
            self.exited.pop_front();
        }
        while let Some(&(_, _, _, t)) = self.pending_exits.front() {
            if now_ns - t < PENDING_EXIT_NS {
                break;
            }
            // A process that exited without our seeing its exec (a fork that
            // never exec'd, or one that predates the sensor): nothing to link.
            self.pending_exits.pop_front();
        }
    }

    fn exit(
        &mut self,
        pid: u32,
        exit_code: i32,
        exit_signal: i32,
        unix_ns: i64,
        out: &mut Vec<(i64, Payload)>,
    ) {
        let Some(e) = self.table.get_mut(&pid) else {
            return;
        };
        if e.exited {
            return;
        }
        e.exited = true;
        let guid = e.guid.clone();
        if self.exited.len() >= MAX_PROCESSES
            && let Some((p, g, _)) = self.exited.pop_front()
            && self.table.get(&p).is_some_and(|e| e.exited && e.guid == g)
        {
            self.table.remove(&p);
        }
        self.exited.push_back((pid, guid.clone(), unix_ns));
        out.push((
            unix_ns,
            Payload::ProcessExit(ProcessExit {
                guid,
                pid,
                exit_code,
                exit_signal,
                exit_time_unix_ns: unix_ns,
            }),
        ));
    }

    fn exec(&mut self, mut info: ExecInfo, out: &mut Vec<(i64, Payload)>) {
        let redacted = self.redact(&mut info.argv);
        let ticks = info
            .start_ticks
            .or_else(|| crate::collect::procfs::start_ticks(info.pid))
            .unwrap_or(0);
        let snapshot = info.origin == crate::collect::Origin::Snapshot;
        let guid = process_guid(
            &self.machine_id,
            &self.boot_id,
            info.pid,
            ticks,
            if snapshot { 0 } else { info.unix_ns },
        );
        let parent = self.parent_entry(info.ppid);
        let exe = path_from_bytes(&info.exe);
        let cmd = command_line(&info.argv);
        let excluded = self.excluded(info.pid, info.ppid) || self.exclude_exes.contains(&info.exe);
        let entry = Entry {
            guid: guid.clone(),
            pid: info.pid,
            exe: exe.clone(),
            command_line: cmd.clone(),
            ppid: info.ppid,
            exited: false,
            excluded,
        };
        self.insert(entry);
        if excluded {
            return;
        }
        if !redacted.is_empty() {
            if self.redactions.len() >= MAX_REDACTION_NOTES {
                self.redactions.clear();
            }
            let notes = redacted
                .counts()
                .iter()
                .map(|(rule, count)| Redaction {
                    field: "argv".into(),
                    rule: rule.clone(),
                    count: *count,
                })
                .collect();
            self.redactions.insert(guid.clone(), notes);
        }
        // Hashed only for a process that is reported.
        let hashes = if info.exe.is_empty() {
            None
        } else {
            Some(vigil_hash::to_proto(&self.hasher.try_hash(
                std::path::Path::new(std::ffi::OsStr::from_bytes(&info.exe)),
            )))
        };
        let start = ProcessStart {
            guid,
            pid: info.pid,
            parent_pid: info.ppid,
            parent_guid: parent.as_ref().map(|p| p.guid.clone()).unwrap_or_default(),
            executable: Some(exe),
            argv: info.argv,
            command_line: cmd,
            cwd: Some(path_from_bytes(&info.cwd)),
            uid: info.uid,
            euid: info.euid,
            gid: info.gid,
            egid: info.egid,
            user_name: self.user_name(info.uid),
            login_uid: info.login_uid,
            start_time_unix_ns: info.unix_ns,
            executable_hashes: hashes,
            parent: parent.as_ref().map(Entry::as_ref),
            origin: info.origin.as_str().to_owned(),
            tty: info.tty,
            session_id: info.session_id,
            argv_truncated: info.argv_truncated,
            argv_missing: info.argv_missing,
            cgroup_id: info.cgroup_id,
            container_id: info.container_id,
            source: info.origin.source().to_owned(),
        };
        out.push((info.unix_ns, Payload::ProcessStart(start)));
        // An exit that raced ahead of this exec (same pid, later time) follows it now.
        if let Some(i) = self
            .pending_exits
            .iter()
            .position(|&(p, _, _, t)| p == info.pid && t >= info.unix_ns)
            && let Some((pid, code, sig, t)) = self.pending_exits.remove(i)
        {
            self.exit(pid, code, sig, t, out);
        }
    }

    fn file(&mut self, f: FileInfo, out: &mut Vec<(i64, Payload)>) {
        let actor = self.actor(f.pid);
        if actor.as_ref().is_some_and(|a| a.excluded) {
            return;
        }
        let persistence = persistence::classify(&f.path)
            .or_else(|| persistence::classify(&f.previous_path))
            .unwrap_or_default();
        // Content is final only at close; an executable or persistence file is worth its hash.
        let hashes = (matches!(
            f.operation,
            FileOperation::CloseWrite | FileOperation::Rename
        ) && !f.is_dir
            && (!persistence.is_empty()
                || f.mode & 0o111 != 0
                || self.hash_paths.iter().any(|p| f.path.starts_with(p))))
        .then(|| {
            vigil_hash::to_proto(
                &self
                    .hasher
                    .try_hash(std::path::Path::new(std::ffi::OsStr::from_bytes(&f.path))),
            )
        });
        let event = FileEvent {
            operation: f.operation as i32,
            path: Some(path_from_bytes(&f.path)),
            previous_path: (!f.previous_path.is_empty()).then(|| path_from_bytes(&f.previous_path)),
            size: 0,
            mode: f.mode,
            hashes,
            process: Some(actor.map_or_else(
                || ProcessRef {
                    pid: f.pid,
                    ..ProcessRef::default()
                },
                |a| a.as_ref(),
            )),
            persistence: persistence.to_owned(),
            uid: f.uid,
            gid: f.gid,
            user_name: self.user_name(f.process_uid),
            process_uid: f.process_uid,
        };
        out.push((f.unix_ns, Payload::File(event)));
    }

    fn net(&mut self, n: NetInfo, out: &mut Vec<(i64, Payload)>) {
        let actor = self.actor(n.pid);
        if actor.as_ref().is_some_and(|a| a.excluded) {
            return;
        }
        let event = NetworkConnection {
            protocol: n.protocol as i32,
            direction: n.direction as i32,
            local_address: n.local.ip().to_string(),
            local_port: u32::from(n.local.port()),
            remote_address: n.remote.ip().to_string(),
            remote_port: u32::from(n.remote.port()),
            state: n.state.to_owned(),
            process: Some(actor.map_or_else(
                || ProcessRef {
                    pid: n.pid,
                    ..ProcessRef::default()
                },
                |a| a.as_ref(),
            )),
            origin: n.origin.to_owned(),
            user_name: self.user_name(n.process_uid),
            uid: n.process_uid,
        };
        out.push((n.unix_ns, Payload::Network(event)));
    }

    /// The parent and grandparent of `pid`, for rules that look up the tree.
    pub fn ancestry(&self, pid: u32) -> Vec<ProcessRef> {
        let mut out = Vec::new();
        let mut cur = self.table.get(&pid).map(|e| e.ppid);
        while let Some(p) = cur {
            if out.len() >= 8 || p == 0 {
                break;
            }
            match self.table.get(&p) {
                Some(e) => {
                    out.push(e.as_ref());
                    cur = Some(e.ppid);
                }
                None => break,
            }
        }
        out
    }
}

/// An exec of a root process running `/nonexistent/x` in `/`, for tests.
#[cfg(test)]
pub(crate) fn test_exec(pid: u32, ppid: u32, t: i64, argv: &[&str]) -> ExecInfo {
    ExecInfo {
        pid,
        ppid,
        unix_ns: t,
        uid: 0,
        euid: 0,
        gid: 0,
        egid: 0,
        login_uid: u32::MAX,
        session_id: 0,
        tty: String::new(),
        exe: b"/nonexistent/x".to_vec(),
        cwd: b"/".to_vec(),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        argv_truncated: false,
        argv_missing: false,
        start_ticks: None,
        cgroup_id: 0,
        container_id: String::new(),
        origin: crate::collect::Origin::Kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_hasher() -> vigil_hash::FileHasher {
        vigil_hash::FileHasher::new(
            vigil_hash::HashConfig {
                max_file_bytes: 1 << 20,
                ..Default::default()
            },
            Some(vigil_hash::HashCache::in_memory(1024)),
        )
    }

    fn exec(pid: u32, ppid: u32, t: i64, argv: &[&str]) -> RawEvent {
        RawEvent::Exec(super::test_exec(pid, ppid, t, argv))
    }

    #[test]
    fn tree_links_and_guids_differ_on_pid_reuse() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        let mut out = Vec::new();
        // pid 4000000 and up do not exist on this host, so /proc lookups miss.
        e.enrich(exec(4_000_001, 1, 10, &["sh", "-c", "x"]), &mut out);
        e.enrich(
            exec(4_000_002, 4_000_001, 20, &["cat", "/etc/shadow"]),
            &mut out,
        );
        let starts: Vec<_> = out
            .iter()
            .filter_map(|(_, p)| match p {
                Payload::ProcessStart(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(starts[1].parent_guid, starts[0].guid);
        assert_eq!(starts[1].parent.as_ref().unwrap().command_line, "sh -c x");
        assert_eq!(starts[1].command_line, "cat /etc/shadow");
        assert_eq!(
            starts[1].executable_hashes.as_ref().unwrap().error,
            "vanished"
        );
        assert_eq!(e.ancestry(4_000_002)[0].guid, starts[0].guid);
        out.clear();
        e.enrich(
            RawEvent::Exit {
                pid: 4_000_002,
                exit_code: 0,
                exit_signal: 0,
                unix_ns: 30,
            },
            &mut out,
        );
        e.enrich(exec(4_000_002, 4_000_001, 40, &["cat"]), &mut out);
        match (&out[0].1, &out[1].1) {
            (Payload::ProcessExit(x), Payload::ProcessStart(s)) => {
                assert_eq!(x.guid, starts[1].guid);
                assert_ne!(s.guid, starts[1].guid, "a reused pid gets a new GUID");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn secrets_in_arguments_are_replaced_before_anything_sees_them() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        let mut out = Vec::new();
        let secret = "Hunter2-MARKER-7731";
        e.enrich(
            exec(
                4_000_101,
                1,
                10,
                &["sh", "-c", &format!("DB_PASSWORD={secret} ./run")],
            ),
            &mut out,
        );
        e.enrich(
            exec(
                4_000_102,
                4_000_101,
                20,
                &["mysql", "-uroot", &format!("-p{secret}"), "db"],
            ),
            &mut out,
        );
        let text = format!("{out:?}");
        assert!(!text.contains("MARKER"), "{text}");
        let starts: Vec<_> = out
            .iter()
            .filter_map(|(_, p)| match p {
                Payload::ProcessStart(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(starts[0].command_line, "sh -c DB_PASSWORD=[REDACTED] ./run");
        assert_eq!(starts[1].command_line, "mysql -uroot -p[REDACTED] db");
        assert_eq!(starts[1].argv[2], b"-p[REDACTED]");
        // The parent as the child's record names it is redacted too.
        assert!(
            starts[1]
                .parent
                .as_ref()
                .unwrap()
                .command_line
                .contains("[REDACTED]")
        );
        assert_eq!(e.redacted.get("secret_assignment"), Some(&1));
        assert_eq!(e.redacted.get("p_attached"), Some(&1));
    }

    #[test]
    fn child_exec_after_parent_exit_still_links() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        let mut out = Vec::new();
        e.enrich(exec(4_000_020, 1, 10, &["sh"]), &mut out);
        e.enrich(
            RawEvent::Exit {
                pid: 4_000_020,
                exit_code: 0,
                exit_signal: 0,
                unix_ns: 20,
            },
            &mut out,
        );
        e.enrich(exec(4_000_021, 4_000_020, 15, &["cat"]), &mut out);
        let Payload::ProcessStart(child) = &out.last().unwrap().1 else {
            panic!("not a start")
        };
        let Payload::ProcessStart(parent) = &out[0].1 else {
            panic!("not a start")
        };
        assert_eq!(child.parent_guid, parent.guid);
        // A second exit for the same process is not reported twice.
        let n = out.len();
        e.enrich(
            RawEvent::Exit {
                pid: 4_000_020,
                exit_code: 0,
                exit_signal: 0,
                unix_ns: 21,
            },
            &mut out,
        );
        assert_eq!(out.len(), n);
        // After the grace period the exited parent is forgotten.
        e.expire(20 + EXITED_GRACE_NS);
        assert!(!e.table.contains_key(&4_000_020));
    }

    #[test]
    fn a_late_fork_does_not_hide_the_exec() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        let mut out = Vec::new();
        e.enrich(exec(4_000_030, 1, 10, &["test-runner"]), &mut out);
        // sh is exec'd in the forked child; the fork report arrives afterwards.
        e.enrich(
            exec(4_000_031, 4_000_030, 20, &["sh", "-c", "cat /etc/shadow"]),
            &mut out,
        );
        e.enrich(
            RawEvent::Fork {
                parent: 4_000_030,
                child: 4_000_031,
                child_start_ticks: None,
            },
            &mut out,
        );
        e.enrich(
            exec(4_000_032, 4_000_031, 30, &["cat", "/etc/shadow"]),
            &mut out,
        );
        let Payload::ProcessStart(cat) = &out.last().unwrap().1 else {
            panic!("not a start")
        };
        assert_eq!(
            cat.parent.as_ref().unwrap().command_line,
            "sh -c cat /etc/shadow"
        );
    }

    #[test]
    fn exit_before_exec_is_reordered() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        let mut out = Vec::new();
        e.enrich(
            RawEvent::Exit {
                pid: 4_000_010,
                exit_code: 1,
                exit_signal: 0,
                unix_ns: 50,
            },
            &mut out,
        );
        assert!(out.is_empty());
        e.enrich(exec(4_000_010, 1, 40, &["true"]), &mut out);
        assert!(matches!(out[0].1, Payload::ProcessStart(_)));
        assert!(matches!(&out[1].1, Payload::ProcessExit(x) if x.exit_code == 1));
    }

    #[test]
    fn non_utf8_paths_keep_their_bytes() {
        let p = path_from_bytes(b"/tmp/\xff");
        assert!(p.lossy);
        assert_eq!(p.raw, b"/tmp/\xff");
        assert_eq!(path_from_bytes(b"/ok").raw, b"");
    }

    fn file(pid: u32, t: i64, operation: FileOperation, path: &str) -> RawEvent {
        RawEvent::File(FileInfo {
            pid,
            unix_ns: t,
            operation,
            path: path.as_bytes().to_vec(),
            previous_path: Vec::new(),
            mode: 0o100644,
            uid: u32::MAX,
            gid: u32::MAX,
            is_dir: false,
            process_uid: 0,
        })
    }

    #[test]
    fn the_sensor_and_what_it_starts_are_left_out() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        e.exclude_self(4_000_050);
        let mut out = Vec::new();
        e.enrich(exec(4_000_051, 4_000_050, 10, &["sh", "-c", "x"]), &mut out);
        e.enrich(exec(4_000_052, 4_000_051, 20, &["id"]), &mut out);
        e.enrich(exec(4_000_053, 1, 30, &["other"]), &mut out);
        e.enrich(
            file(4_000_052, 40, FileOperation::Create, "/tmp/x"),
            &mut out,
        );
        let reported: Vec<u32> = out
            .iter()
            .map(|(_, p)| match p {
                Payload::ProcessStart(s) => s.pid,
                Payload::File(f) => f.process.as_ref().map_or(0, |p| p.pid),
                _ => 0,
            })
            .collect();
        assert_eq!(reported, vec![4_000_053]);
    }

    #[test]
    fn writes_to_persistence_locations_are_tagged_with_the_acting_process() {
        let mut e = Enricher::new("m".into(), "b".into(), test_hasher());
        let mut out = Vec::new();
        e.enrich(exec(4_000_061, 1, 10, &["vi", "/etc/cron.d/job"]), &mut out);
        e.enrich(
            file(4_000_061, 20, FileOperation::CloseWrite, "/etc/cron.d/job"),
            &mut out,
        );
        let Some((_, Payload::File(f))) = out.last() else {
            panic!("no file record")
        };
        assert_eq!(f.persistence, "cron");
        assert_eq!(
            f.process.as_ref().unwrap().command_line,
            "vi /etc/cron.d/job"
        );
        // The file is gone here: its hash says why, it is still attempted.
        assert_eq!(f.hashes.as_ref().unwrap().error, "vanished");
    }
}
