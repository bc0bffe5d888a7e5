//! The real sensor binary, standalone (`vigil-sensor run --output jsonl=FILE`),
//! against the real kernel through eBPF: what it reports is checked against
//! what these tests know they did. Needs root and a kernel with BTF; elsewhere
//! each test prints why it skips.

// Helpers here are test code too: a panic is a failed assertion.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One sensor at a time: they would compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (CAP_BPF, CAP_PERFMON)".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("the kernel publishes no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    None
}

macro_rules! require_ebpf {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

struct Running {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the binary; returns once it has written its first records (the
/// probes are attached before the pipeline starts).
fn start(rules: &[&Path]) -> Running {
    start_with(rules, None)
}

fn start_with(rules: &[&Path], config: Option<&Path>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("records.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil-sensor"));
    cmd.arg("run")
        .arg(format!("--output=jsonl={}", out.display()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for r in rules {
        cmd.arg("--rules").arg(r);
    }
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_to_string(&out).is_ok_and(|t| t.contains("\"host\"")) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("sensor exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "sensor wrote nothing within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = child.stderr.take().unwrap();
    // Keep the pipe drained so the sensor never blocks on its log.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink);
    });
    Running {
        child,
        out,
        _dir: dir,
    }
}

impl Running {
    /// Stops the sensor (SIGTERM: it flushes what it has) and reads its lines.
    fn stop(mut self) -> Vec<Value> {
        // Records of the last activity reach the output within a flush interval.
        std::thread::sleep(Duration::from_millis(1500));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "sensor exit: {status}");
        let text = std::fs::read_to_string(&self.out).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// What the sensor said it lost, from its last health record: a failed
/// assertion shows whether events were dropped (a loaded machine) or missed.
fn losses(lines: &[Value]) -> String {
    lines
        .iter()
        .rev()
        .find_map(|l| l.get("health"))
        .map_or_else(
            || "no health record".into(),
            |h| format!("dropped: {}", h["dropped"]),
        )
}

fn category(v: &Value) -> &str {
    v["logsource"]["category"]
        .as_str()
        .or(v["logsource"]["service"].as_str())
        .unwrap_or("")
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(-1)
}

#[test]
fn a_burst_of_short_processes_is_seen_whole_with_argv_and_parent() {
    require_ebpf!();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sensor = start(&[]);
    // Two spawners, as fast as the machine forks; each child exits at once.
    const PER_SPAWNER: usize = 2000;
    let started = Instant::now();
    let spawners: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                (0..PER_SPAWNER)
                    .map(|i| {
                        let marker = format!("vigil-burst-{t}-{i}");
                        let mut c = Command::new("/bin/true").arg(&marker).spawn().unwrap();
                        let pid = c.id() as i64;
                        c.wait().unwrap();
                        (pid, marker)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let truth: Vec<(i64, String)> = spawners
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let rate = truth.len() as f64 / started.elapsed().as_secs_f64();
    let lines = sensor.stop();
    let me = i64::from(std::process::id());
    let seen: HashMap<i64, (&str, i64)> = lines
        .iter()
        .filter(|l| category(l) == "process_creation")
        .map(|l| {
            let e = &l["event"];
            (
                int(&e["ProcessId"]),
                (
                    e["CommandLine"].as_str().unwrap_or(""),
                    int(&e["ParentProcessId"]),
                ),
            )
        })
        .collect();
    let whole = truth
        .iter()
        .filter(|(pid, marker)| {
            seen.get(pid)
                .is_some_and(|(cmd, ppid)| *cmd == format!("/bin/true {marker}") && *ppid == me)
        })
        .count();
    let share = whole as f64 / truth.len() as f64;
    let exits: HashMap<i64, (i64, i64)> = lines
        .iter()
        .filter(|l| l["vigil"]["record"] == "process_exit")
        .map(|l| {
            let v = &l["vigil"];
            (
                int(&v["pid"]),
                (int(&v["exit_code"]), int(&v["exit_signal"])),
            )
        })
        .collect();
    let exited = truth
        .iter()
        .filter(|(pid, _)| exits.get(pid) == Some(&(0, 0)))
        .count();
    eprintln!(
        "burst: {} processes at {rate:.0}/s; {whole} reported with argv and parent ({:.3}%), {exited} exits",
        truth.len(),
        share * 100.0
    );
    assert!(
        share >= 0.999,
        "only {whole} of {} seen whole; {}",
        truth.len(),
        losses(&lines)
    );
    for (pid, marker) in &truth {
        if exits.get(pid) != Some(&(0, 0)) {
            eprintln!("no exit for {pid} {marker}: {:?}", exits.get(pid));
            for l in lines.iter().filter(|l| {
                int(&l["vigil"]["pid"]) == *pid || int(&l["event"]["ProcessId"]) == *pid
            }) {
                eprintln!("  {l}");
            }
        }
    }
    assert!(
        exited * 1000 >= truth.len() * 999,
        "only {exited} of {} exits",
        truth.len()
    );
}

#[test]
fn exit_codes_and_signals_are_reported() {
    require_ebpf!();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sensor = start(&[]);
    let coded = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    let coded_pid = i64::from(coded.id());
    let mut killed = Command::new("sleep").arg("30").spawn().unwrap();
    let killed_pid = i64::from(killed.id());
    let _ = coded.wait_with_output().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    killed.kill().unwrap();
    let _ = killed.wait().unwrap();
    let lines = sensor.stop();
    let exit_of = |pid: i64| {
        lines
            .iter()
            .filter(|l| l["vigil"]["record"] == "process_exit")
            .find(|l| int(&l["vigil"]["pid"]) == pid)
            .map(|l| {
                (
                    int(&l["vigil"]["exit_code"]),
                    int(&l["vigil"]["exit_signal"]),
                )
            })
    };
    assert_eq!(exit_of(coded_pid), Some((3, 0)));
    assert_eq!(exit_of(killed_pid), Some((0, 9)));
}

#[test]
fn loopback_connections_are_reported_with_their_process() {
    require_ebpf!();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sensor = start(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = i64::from(listener.local_addr().unwrap().port());
    const CONNECTIONS: usize = 1000;
    let server = std::thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        }
    });
    // Four clients, each connection held about 10 ms.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..CONNECTIONS / 4)
                    .map(|_| {
                        let mut c = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
                        let local = i64::from(c.local_addr().unwrap().port());
                        std::thread::sleep(Duration::from_millis(10));
                        c.write_all(b"x").unwrap();
                        local
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ports: HashSet<i64> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    server.join().unwrap();
    let lines = sensor.stop();
    let me = i64::from(std::process::id());
    let net: Vec<&Value> = lines
        .iter()
        .filter(|l| category(l) == "network_connection")
        .map(|l| &l["event"])
        .filter(|e| int(&e["ProcessId"]) == me)
        .collect();
    let outbound: HashSet<i64> = net
        .iter()
        .filter(|e| e["Initiated"] == "true" && int(&e["DestinationPort"]) == port)
        .map(|e| int(&e["SourcePort"]))
        .filter(|p| ports.contains(p))
        .collect();
    // An accepted connection, as Sysmon writes it: the source is the peer that initiated.
    let inbound: HashSet<i64> = net
        .iter()
        .filter(|e| e["Initiated"] == "false" && int(&e["DestinationPort"]) == port)
        .map(|e| int(&e["SourcePort"]))
        .filter(|p| ports.contains(p))
        .collect();
    eprintln!(
        "connections: {} made; {} outbound and {} accepted reported with their process",
        ports.len(),
        outbound.len(),
        inbound.len()
    );
    assert!(
        outbound.len() * 100 >= ports.len() * 99,
        "outbound {}",
        outbound.len()
    );
    assert!(
        inbound.len() * 100 >= ports.len() * 99,
        "inbound {}",
        inbound.len()
    );
}

#[test]
fn file_changes_are_reported_with_the_acting_process_and_absolute_paths() {
    use std::os::unix::ffi::OsStrExt;
    require_ebpf!();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sensor = start(&[]);
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("created.txt");
    let b = work.path().join("renamed.txt");
    let odd = work
        .path()
        .join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff.bin"));
    std::fs::write(&a, b"first").unwrap();
    std::fs::rename(&a, &b).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&b)
        .unwrap()
        .write_all(b" more")
        .unwrap();
    std::fs::set_permissions(&b, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&odd, b"x").unwrap();
    std::fs::remove_file(&b).unwrap();
    std::fs::remove_file(&odd).unwrap();
    let lines = sensor.stop();
    let me = i64::from(std::process::id());
    let ops: Vec<(String, String, String)> = lines
        .iter()
        .filter(|l| l["vigil"]["record"] == "file")
        .filter(|l| int(&l["vigil"]["process"]["pid"]) == me || int(&l["event"]["ProcessId"]) == me)
        .map(|l| {
            (
                l["vigil"]["operation"].as_str().unwrap_or("").to_owned(),
                text(&l["vigil"]["path"]),
                text(&l["vigil"]["previous_path"]),
            )
        })
        .collect();
    let has = |op: &str, path: &Path| {
        let p = path.to_string_lossy();
        ops.iter().any(|(o, q, _)| o == op && *q == p)
    };
    assert!(has("create", &a), "{ops:#?}; {}", losses(&lines));
    assert!(
        ops.iter().any(|(o, q, prev)| o == "rename"
            && *q == b.to_string_lossy()
            && *prev == a.to_string_lossy()),
        "{ops:#?}"
    );
    assert!(has("modify", &b), "{ops:#?}");
    assert!(has("close_write", &b), "{ops:#?}");
    assert!(has("chmod", &b), "{ops:#?}");
    assert!(has("delete", &b), "{ops:#?}");
    assert!(has("create", &odd), "non-UTF-8 path: {ops:#?}");
}

/// A path as the JSON form gives it: a string, or {text, raw_hex} when not UTF-8.
fn text(v: &Value) -> String {
    v.as_str().or(v["text"].as_str()).unwrap_or("").to_owned()
}

fn corpus() -> PathBuf {
    std::env::var_os("VIGIL_SIGMA_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sigma"),
        PathBuf::from,
    )
}

#[test]
fn sigmahq_linux_rules_fire_on_real_activity() {
    require_ebpf!();
    let rules = corpus().join("rules/linux");
    if !rules.is_dir() {
        eprintln!("SKIPPED: no SigmaHQ corpus at {}", rules.display());
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sensor = start(&[&rules]);
    let work = tempfile::tempdir_in("/tmp").unwrap();
    let target = work.path().join("t");
    std::fs::write(&target, b"x").unwrap();
    let run = |cmd: &mut Command| {
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    };
    // process_creation
    run(Command::new("chmod").arg("600").arg(&target));
    run(Command::new("env").args(["/bin/sh", "-c", "true"]));
    // auditd (EXECVE form)
    run(Command::new("uname").arg("-a"));
    // file_event
    let lock = Path::new("/tmp/rootlog");
    let planted = !lock.exists();
    if planted {
        std::fs::write(lock, b"").unwrap();
    }
    // network_connection: bash opening a TCP socket to a non-loopback-127.0.0.1 address.
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    run(Command::new("bash").args([
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.2/{port}; exec 3>&-"),
    ]));
    let lines = sensor.stop();
    if planted {
        let _ = std::fs::remove_file(lock);
    }
    let titles: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l["detection"]["rule_title"].as_str())
        .collect();
    for want in [
        "Chmod Targeting Sensitive Directories",
        "Shell Invocation via Env Command - Linux",
        "System Information Discovery - Auditd",
        "Triple Cross eBPF Rootkit Default LockFile",
        "Linux Reverse Shell Indicator",
    ] {
        assert!(
            titles.contains(want),
            "{want} did not fire; fired: {titles:#?}"
        );
    }
}

#[test]
fn without_ebpf_the_sensor_falls_back_to_audit_and_says_so() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (audit netlink)");
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[collect]\nebpf = false\n",
            cfg_dir.path().join("data").display()
        ),
    )
    .unwrap();
    let sensor = start_with(&[], Some(&cfg));
    let marker = "vigil-fallback-marker";
    let child = Command::new("/bin/true").arg(marker).status().unwrap();
    assert!(child.success());
    let lines = sensor.stop();
    let health = lines
        .iter()
        .find_map(|l| l.get("health"))
        .expect("a health record at start");
    let said = |key: &str, what: &str| {
        health[key].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| s.contains(what)))
        })
    };
    assert!(said("degraded", "eBPF collector disabled"), "{health}");
    assert!(said("sources", "audit"), "{health}");
    assert!(
        lines.iter().any(|l| category(l) == "process_creation"
            && l["event"]["CommandLine"] == format!("/bin/true {marker}")),
        "the exec was not reported through audit"
    );
}
