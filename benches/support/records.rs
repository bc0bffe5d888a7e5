//! Sensor records as a busy Linux host produces them, for server benches: a
//! realistic mix of process starts (distinct GUIDs, pids, argv, command
//! lines, working directories; executables from a common set and unique
//! build outputs and scripts), process exits, file events (varied paths,
//! hashes on executables and persistence files), network connections (varied
//! addresses and ports) and a few detections, with the fields the eBPF sensor
//! fills (`vigil-sensor`'s `enrich`). No two records are alike: every one
//! carries values drawn afresh (GUIDs, pids, numbers, temp names, hashes).

use super::events::Rng;
use vigil_proto::v1::{
    Detection, Direction, FileEvent, FileOperation, Hashes, NetworkConnection, Path, ProcessExit,
    ProcessRef, ProcessStart, Record, TransportProtocol, record::Payload,
};

/// Per 10,000 records: process starts, exits, file events, network
/// connections; the rest (20, 0.2%) are detections.
pub const MIX: [(&str, u32); 5] = [
    ("process_start", 4_000),
    ("process_exit", 3_000),
    ("file", 2_000),
    ("network", 980),
    ("detection", 20),
];

/// Long-running parents, as a host has them: services, sessions, CI runners.
const PARENTS: &[(&str, &str)] = &[
    ("/usr/bin/bash", "-bash --login"),
    (
        "/usr/sbin/sshd",
        "sshd: alice@pts/{n} -o ServerAliveInterval=30",
    ),
    (
        "/usr/bin/python3.11",
        "/usr/bin/python3 /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf --logfile /var/log/supervisor/{word}.log",
    ),
    (
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        "java -Xms512m -Xmx{n}m -XX:+UseG1GC -Dlog4j2.formatMsgNoLookups=true -cp /opt/{word}/lib/*:/opt/{word}/conf com.example.{word}.Main --server.port={port}",
    ),
    (
        "/home/ci/runner/bin/Runner.Worker",
        "/home/ci/runner/bin/Runner.Worker spawnclient {n} {n}",
    ),
    (
        "/usr/bin/bash",
        "bash /home/ci/builds/{word}-{n}/ci/run-tests.sh --shard {n}/8 --junit /home/ci/builds/{word}-{n}/reports/junit-{id}.xml",
    ),
    (
        "/usr/bin/node",
        "node /srv/{word}/node_modules/.bin/next start --port {port} --hostname 0.0.0.0",
    ),
    (
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        "java -server -Xmx{n}m -Djava.io.tmpdir=/var/tmp/{word}-{id} -classpath \
         /opt/{word}/lib/{word}-core-3.{n}.jar:/opt/{word}/lib/jackson-databind-2.15.{n}.jar:\
         /opt/{word}/lib/netty-all-4.1.{n}.Final.jar:/opt/{word}/lib/slf4j-api-2.0.{n}.jar:\
         /opt/{word}/lib/guava-32.1.{n}-jre.jar:/opt/{word}/lib/postgresql-42.6.{n}.jar:/opt/{word}/conf \
         org.example.{word}.Server --spring.profiles.active=prod --server.port={port}",
    ),
    (
        "/usr/bin/make",
        "make -j2 -C /home/alice/src/{word}-{n} all CFLAGS=-O2\\ -g",
    ),
];

const USERS: &[(&str, u32)] = &[
    ("root", 0),
    ("alice", 1000),
    ("bob", 1001),
    ("www-data", 33),
    ("postgres", 112),
    ("app", 998),
    ("ci", 1002),
];

/// Common executables and what their argv looks like (`{}` is filled with a fresh value).
const COMMON: &[(&str, &[&str])] = &[
    ("/usr/bin/bash", &["bash", "-c", "{cmd}"]),
    ("/usr/bin/sh", &["/bin/sh", "-c", "{cmd}"]),
    (
        "/usr/bin/git",
        &[
            "git",
            "-c",
            "core.quotepath=off",
            "{git}",
            "--no-pager",
            "{arg}",
        ],
    ),
    ("/usr/bin/ls", &["ls", "-la", "{path}"]),
    ("/usr/bin/cat", &["cat", "{path}"]),
    ("/usr/bin/grep", &["grep", "-rn", "{word}", "{path}"]),
    (
        "/usr/bin/sed",
        &["sed", "-i", "s/{word}/{word}/g", "{path}"],
    ),
    (
        "/usr/bin/find",
        &["find", "{path}", "-name", "*.{ext}", "-mtime", "-{n}"],
    ),
    (
        "/usr/bin/python3.11",
        &["python3", "{script}", "--job", "{id}", "--retries", "{n}"],
    ),
    ("/usr/bin/node", &["node", "{script}", "--port", "{port}"]),
    ("/usr/bin/curl", &["curl", "-fsS", "-o", "{path}", "{url}"]),
    (
        "/usr/bin/ssh",
        &["ssh", "-o", "BatchMode=yes", "{host}", "{cmd}"],
    ),
    ("/usr/bin/tar", &["tar", "-czf", "{path}.tar.gz", "{path}"]),
    ("/usr/bin/gzip", &["gzip", "-9", "{path}"]),
    ("/usr/bin/cp", &["cp", "-a", "{path}", "{path}"]),
    ("/usr/bin/mv", &["mv", "{path}", "{path}"]),
    ("/usr/bin/rm", &["rm", "-rf", "{path}"]),
    ("/usr/bin/mkdir", &["mkdir", "-p", "{path}"]),
    ("/usr/bin/chmod", &["chmod", "0{mode}", "{path}"]),
    ("/usr/bin/ps", &["ps", "-o", "pid,ppid,cmd", "-p", "{n}"]),
    ("/usr/bin/awk", &["awk", "-F:", "{print ${n}}", "{path}"]),
    ("/usr/bin/sort", &["sort", "-u", "-k{n}", "{path}"]),
    ("/usr/bin/docker", &["docker", "exec", "{id}", "{cmd}"]),
    ("/usr/bin/make", &["make", "-j2", "-C", "{path}", "{word}"]),
    (
        "/usr/bin/cc",
        &["cc", "-O2", "-c", "{path}.c", "-o", "{path}.o"],
    ),
    (
        "/usr/bin/systemctl",
        &["systemctl", "status", "{word}.service"],
    ),
    ("/usr/sbin/cron", &["/usr/sbin/CRON", "-f", "-P"]),
    (
        "/usr/bin/psql",
        &["psql", "-h", "{host}", "-U", "{user}", "-c", "{sql}"],
    ),
    (
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        &["java", "-Xmx{n}m", "-jar", "{path}.jar", "--id={id}"],
    ),
    (
        "/usr/bin/rsync",
        &["rsync", "-az", "{path}", "{host}:{path}"],
    ),
];

const WORDS: &[&str] = &[
    "config", "deploy", "worker", "release", "metrics", "cache", "index", "session", "backup",
    "invoice", "report", "payload", "auth", "upload", "render", "schema", "queue", "billing",
    "sync", "export",
];
const DIRS: &[&str] = &[
    "/home/alice/src",
    "/home/bob/work",
    "/srv/app",
    "/var/lib/app",
    "/opt/service",
    "/tmp",
    "/var/log",
    "/etc",
    "/usr/local/share",
    "/home/ci/builds",
];
const EXTS: &[&str] = &[
    "log", "json", "py", "rs", "ts", "conf", "yaml", "txt", "csv", "sql", "so",
];
const GIT: &[&str] = &[
    "status",
    "fetch",
    "pull",
    "diff",
    "log",
    "rev-parse",
    "checkout",
    "commit",
];

/// A generator of distinct records; `device` seeds it, so each simulated
/// sensor draws its own values.
pub struct Records {
    r: Rng,
    seq: u64,
    pid: u32,
    time: i64,
    exe_hashes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Recent processes (guid, pid, exe, command line): parents and actors.
    recent: Vec<ProcessRef>,
}

impl Records {
    pub fn new(device: u64) -> Records {
        let mut r = Rng::new(0x9e37_79b9_7f4a_7c15 ^ device.wrapping_mul(0x100_0000_01b3));
        // One binary, one hash: common executables keep theirs.
        let exe_hashes = COMMON
            .iter()
            .map(|_| (bytes(&mut r, 32), bytes(&mut r, 32)))
            .collect();
        Records {
            r,
            seq: 0,
            pid: 4000,
            time: 1_765_000_000_000_000_000,
            exe_hashes,
            recent: Vec::new(),
        }
    }

    fn tick(&mut self) {
        self.seq += 1;
        self.time += 2_000 + (self.r.next() % 50_000) as i64;
    }

    /// The next record, a detection (sequence and time as [`Records::next_record`]).
    pub fn next_detection(&mut self) -> Record {
        self.tick();
        Record {
            sequence: self.seq,
            time_unix_ns: self.time,
            payload: Some(Payload::Detection(self.detection())),
            ..Default::default()
        }
    }

    /// The next record (sequence numbers 1, 2, 3…).
    pub fn next_record(&mut self) -> Record {
        self.tick();
        let mut roll = (self.r.next() % 10_000) as u32;
        let mut kind = MIX.len() - 1;
        for (i, (_, w)) in MIX.iter().enumerate() {
            if roll < *w {
                kind = i;
                break;
            }
            roll -= w;
        }
        let payload = match kind {
            0 => Payload::ProcessStart(self.process_start()),
            1 => Payload::ProcessExit(self.process_exit()),
            2 => Payload::File(self.file()),
            3 => Payload::Network(self.network()),
            _ => Payload::Detection(self.detection()),
        };
        Record {
            sequence: self.seq,
            time_unix_ns: self.time,
            payload: Some(payload),
            ..Default::default()
        }
    }

    fn fill(&mut self, template: &str) -> String {
        let r = &mut self.r;
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let key = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            match key {
                "cmd" => {
                    let w = r.pick(WORDS);
                    out.push_str(&format!(
                        "cd {}/{w}-{} && ./run-{w}.sh --since {} > /tmp/{w}.{}.log 2>&1",
                        r.pick(DIRS),
                        r.next() % 10_000,
                        r.next() % 100_000,
                        hex(r, 8)
                    ));
                }
                "path" => out.push_str(&path(r)),
                "script" => out.push_str(&format!(
                    "{}/{}/{}_{}.{}",
                    r.pick(DIRS),
                    r.pick(WORDS),
                    r.pick(WORDS),
                    r.next() % 1000,
                    if r.next().is_multiple_of(2) {
                        "py"
                    } else {
                        "js"
                    }
                )),
                "word" => out.push_str(r.pick(WORDS)),
                "ext" => out.push_str(r.pick(EXTS)),
                "git" => out.push_str(r.pick(GIT)),
                "arg" => out.push_str(&format!("origin/{}-{}", r.pick(WORDS), r.next() % 10_000)),
                "id" => out.push_str(&hex(r, 12)),
                "n" => out.push_str(&(1 + r.next() % 4096).to_string()),
                "port" => out.push_str(&(1024 + r.next() % 60_000).to_string()),
                "mode" => out.push_str(&format!("{:o}", r.next() % 0o777)),
                "url" => out.push_str(&format!(
                    "https://{}.example.com/api/v{}/{}/{}",
                    r.pick(WORDS),
                    1 + r.next() % 3,
                    r.pick(WORDS),
                    hex(r, 16)
                )),
                "host" => out.push_str(&format!(
                    "10.{}.{}.{}",
                    r.next() % 256,
                    r.next() % 256,
                    1 + r.next() % 254
                )),
                "user" => out.push_str(r.pick(&["app", "report", "etl", "admin"])),
                "sql" => out.push_str(&format!(
                    "SELECT * FROM {} WHERE id = {} LIMIT {}",
                    r.pick(WORDS),
                    r.next() % 1_000_000,
                    1 + r.next() % 100
                )),
                _ => out.push_str(&format!("${key}")),
            }
        }
        out.push_str(rest);
        out
    }

    fn guid(&mut self) -> String {
        let x = hex(&mut self.r, 32);
        format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    }

    fn actor(&mut self) -> ProcessRef {
        if self.r.next().is_multiple_of(2) {
            // A service, session or runner writing files and talking on the network.
            let (exe, cmd) = PARENTS[(self.r.next() % PARENTS.len() as u64) as usize];
            return ProcessRef {
                guid: self.guid(),
                pid: 1 + (self.r.next() % 4_000_000) as u32,
                executable: Some(text_path(exe)),
                command_line: self.fill(cmd),
            };
        }
        if self.recent.is_empty() || self.r.next().is_multiple_of(8) {
            let p = self.process_start();
            return ProcessRef {
                guid: p.guid,
                pid: p.pid,
                executable: p.executable,
                command_line: p.command_line,
            };
        }
        let i = (self.r.next() % self.recent.len() as u64) as usize;
        self.recent[i].clone()
    }

    fn process_start(&mut self) -> ProcessStart {
        self.pid = 300 + (self.pid + 1 + (self.r.next() % 7) as u32) % 4_000_000;
        let guid = self.guid();
        let unique = self.r.next().is_multiple_of(5);
        let (exe, argv, hashes) = if unique {
            // A build output or a script of its own: a path and a hash never seen before.
            let w = self.r.pick(WORDS);
            let exe = match self.r.next() % 3 {
                0 => format!(
                    "/home/ci/builds/{w}-{}/target/debug/deps/{w}_{}-{}",
                    self.r.next() % 100_000,
                    self.r.pick(WORDS),
                    hex(&mut self.r, 16)
                ),
                1 => format!("/tmp/tmp.{}/{w}.sh", hex(&mut self.r, 10)),
                _ => format!("/opt/{w}/releases/{}/bin/{w}", self.r.next() % 1_000_000),
            };
            let mut argv = vec![exe.clone()];
            for _ in 0..(2 + self.r.next() % 8) {
                let a = match self.r.next() % 3 {
                    0 => format!("--{}={}", self.r.pick(WORDS), self.r.next() % 100_000),
                    1 => path(&mut self.r),
                    _ => self.fill("{id}"),
                };
                argv.push(a);
            }
            let h = Hashes {
                blake3: bytes(&mut self.r, 32),
                sha256: bytes(&mut self.r, 32),
                error: String::new(),
            };
            (exe, argv, h)
        } else {
            let i = (self.r.next() % COMMON.len() as u64) as usize;
            let (exe, tmpl) = COMMON[i];
            let argv: Vec<String> = tmpl.iter().map(|t| self.fill(t)).collect();
            let (b3, sha) = self.exe_hashes[i].clone();
            let h = Hashes {
                blake3: b3,
                sha256: sha,
                error: String::new(),
            };
            (exe.to_owned(), argv, h)
        };
        let command_line = argv.join(" ");
        let (user, uid) = USERS[(self.r.next() % USERS.len() as u64) as usize];
        let parent = if self.recent.is_empty() || self.r.next().is_multiple_of(3) {
            let (exe, cmd) = PARENTS[(self.r.next() % PARENTS.len() as u64) as usize];
            ProcessRef {
                guid: self.guid(),
                pid: 1 + (self.r.next() % 4_000_000) as u32,
                executable: Some(text_path(exe)),
                command_line: self.fill(cmd),
            }
        } else {
            let i = (self.r.next() % self.recent.len() as u64) as usize;
            self.recent[i].clone()
        };
        let container = self.r.next().is_multiple_of(5);
        let cwd = format!(
            "{}/{}-{}",
            self.r.pick(DIRS),
            self.r.pick(WORDS),
            self.r.next() % 10_000
        );
        let start = ProcessStart {
            guid: guid.clone(),
            pid: self.pid,
            parent_pid: parent.pid,
            parent_guid: parent.guid.clone(),
            executable: Some(text_path(&exe)),
            argv: argv.into_iter().map(String::into_bytes).collect(),
            command_line: command_line.clone(),
            cwd: Some(text_path(&cwd)),
            uid,
            euid: uid,
            gid: uid,
            egid: uid,
            user_name: user.to_owned(),
            login_uid: if uid == 0 { u32::MAX } else { uid },
            start_time_unix_ns: self.time,
            executable_hashes: Some(hashes),
            parent: Some(parent),
            origin: "kernel".into(),
            tty: if self.r.next().is_multiple_of(4) {
                format!("pts/{}", self.r.next() % 8)
            } else {
                String::new()
            },
            session_id: (self.r.next() % 5000) as u32,
            argv_truncated: false,
            argv_missing: false,
            cgroup_id: 4000 + self.r.next() % 100_000,
            container_id: if container {
                hex(&mut self.r, 64)
            } else {
                String::new()
            },
            source: "ebpf".into(),
        };
        let me = ProcessRef {
            guid,
            pid: self.pid,
            executable: start.executable.clone(),
            command_line,
        };
        if self.recent.len() < 64 {
            self.recent.push(me);
        } else {
            let i = (self.r.next() % 64) as usize;
            self.recent[i] = me;
        }
        start
    }

    fn process_exit(&mut self) -> ProcessExit {
        let p = self.actor();
        ProcessExit {
            guid: p.guid,
            pid: p.pid,
            exit_code: if self.r.next().is_multiple_of(10) {
                1
            } else {
                0
            },
            exit_signal: 0,
            exit_time_unix_ns: self.time,
        }
    }

    fn file(&mut self) -> FileEvent {
        let process = self.actor();
        let op = match self.r.next() % 10 {
            0..=2 => FileOperation::CloseWrite,
            3..=4 => FileOperation::Create,
            5 => FileOperation::Delete,
            6 => FileOperation::Rename,
            7 => FileOperation::Chmod,
            _ => FileOperation::Modify,
        };
        let p = path(&mut self.r);
        let persistence = if self.r.next().is_multiple_of(50) {
            self.r
                .pick(&["cron", "systemd", "shell_profile", "ssh_authorized_keys"])
        } else {
            ""
        };
        let hashed = matches!(op, FileOperation::CloseWrite | FileOperation::Rename)
            && self.r.next().is_multiple_of(3);
        let (user, uid) = USERS[(self.r.next() % USERS.len() as u64) as usize];
        FileEvent {
            operation: op as i32,
            path: Some(text_path(&p)),
            previous_path: (op == FileOperation::Rename)
                .then(|| text_path(&format!("{p}.tmp{}", hex(&mut self.r, 6)))),
            size: 0,
            mode: [0o100644, 0o100755, 0o100600, 0o040755][(self.r.next() % 4) as usize],
            hashes: hashed.then(|| Hashes {
                blake3: bytes(&mut self.r, 32),
                sha256: bytes(&mut self.r, 32),
                error: String::new(),
            }),
            process: Some(process),
            persistence: persistence.to_owned(),
            uid,
            gid: uid,
            user_name: user.to_owned(),
            process_uid: uid,
        }
    }

    fn network(&mut self) -> NetworkConnection {
        let process = self.actor();
        let r = &mut self.r;
        let (direction, state) = match r.next() % 10 {
            0..=6 => (Direction::Outbound, "established"),
            7..=8 => (Direction::Inbound, "established"),
            _ => (Direction::Listen, "listen"),
        };
        let v6 = r.next().is_multiple_of(5);
        let addr = |r: &mut Rng, public: bool| {
            if v6 {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    r.next() % 65_536,
                    r.next() % 65_536,
                    r.next() % 65_536
                )
            } else if public {
                format!(
                    "{}.{}.{}.{}",
                    1 + r.next() % 223,
                    r.next() % 256,
                    r.next() % 256,
                    1 + r.next() % 254
                )
            } else {
                format!(
                    "10.{}.{}.{}",
                    r.next() % 256,
                    r.next() % 256,
                    1 + r.next() % 254
                )
            }
        };
        let (user, uid) = USERS[(r.next() % USERS.len() as u64) as usize];
        NetworkConnection {
            protocol: if r.next().is_multiple_of(8) {
                TransportProtocol::Udp
            } else {
                TransportProtocol::Tcp
            } as i32,
            direction: direction as i32,
            local_address: addr(r, false),
            local_port: (1024 + r.next() % 64_000) as u32,
            remote_address: addr(r, true),
            remote_port: [443, 80, 22, 5432, 53, 8080, 6379][(r.next() % 7) as usize],
            state: state.into(),
            process: Some(process),
            origin: "live".into(),
            user_name: user.to_owned(),
            uid,
        }
    }

    fn detection(&mut self) -> Detection {
        let start = self.process_start();
        let process = ProcessRef {
            guid: start.guid.clone(),
            pid: start.pid,
            executable: start.executable.clone(),
            command_line: start.command_line.clone(),
        };
        let rule = (self.r.next() % 40) as u8;
        Detection {
            rule_id: format!("{}-{:02}", "7c1f0a4e-2b7d-4c3e-9f1a", rule),
            rule_title: format!("Suspicious {} Execution Pattern {rule}", self.r.pick(WORDS)),
            level: ["low", "medium", "high", "critical"][(self.r.next() % 4) as usize].into(),
            tags: vec![
                "attack.execution".into(),
                format!("attack.t{}", 1000 + rule as u32 * 7),
            ],
            description: "Detects a process started from a writable directory with arguments \
                          commonly used by post-exploitation tooling."
                .into(),
            matched: vec![Record {
                sequence: 0,
                time_unix_ns: self.time,
                payload: Some(Payload::ProcessStart(start)),
                ..Default::default()
            }],
            process: Some(process),
            author: "Vigil bench".into(),
            references: vec!["https://attack.mitre.org/techniques/T1059/".into()],
            ..Detection::default()
        }
    }
}

fn text_path(s: &str) -> Path {
    Path {
        text: s.to_owned(),
        raw: Vec::new(),
        lossy: false,
    }
}

fn path(r: &mut Rng) -> String {
    format!(
        "{}/{}/{}-{}/{}/{}_{}.{}",
        r.pick(DIRS),
        r.pick(WORDS),
        r.pick(WORDS),
        r.next() % 1000,
        r.pick(&[
            "src",
            "data",
            "cache",
            "tmp",
            "build/out",
            "node_modules/.cache"
        ]),
        r.pick(WORDS),
        hex(r, 8),
        r.pick(EXTS)
    )
}

fn hex(r: &mut Rng, n: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(n);
    let mut bits = 0u64;
    for i in 0..n {
        if i % 16 == 0 {
            bits = r.next();
        }
        s.push(char::from(HEX[(bits & 15) as usize]));
        bits >>= 4;
    }
    s
}

fn bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(n);
    out
}
