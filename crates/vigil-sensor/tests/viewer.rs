//! `vigil-sensor inspect` and `vigil-sensor status`, the real binary: on a
//! stopped sensor's data directory (the spool read, never changed), and
//! against a running standalone sensor over its control socket (and, as
//! root, a peer of another user turned away). Runs without root; the
//! refusal of another user's peer needs root to become that user, and says
//! so when it skips.

#![allow(clippy::unwrap_used)]

use prost::Message;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use vigil_proto::v1::{DataLevel, HostInfo, ProcessStart, Record, Redaction, record::Payload};

fn sensor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-sensor"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// A data directory as a stopped, enrolled sensor leaves it: its identity
/// and three records still spooled (the first acknowledged and gone).
fn stopped_sensor(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    std::fs::write(dir.join("identity"), "dev-7 acme\n").unwrap();
    let spool = vigil_spool::Spool::open(&dir.join("spool.redb"), 1 << 20).unwrap();
    let payloads = [
        Payload::Host(HostInfo {
            hostname: "h".into(),
            ..Default::default()
        }),
        Payload::Host(HostInfo {
            hostname: "h2".into(),
            ..Default::default()
        }),
        Payload::ProcessStart(ProcessStart {
            pid: 42,
            command_line: "mysql -p[REDACTED]".into(),
            ..Default::default()
        }),
        Payload::Host(HostInfo::default()),
    ];
    spool
        .append(payloads, |seq, p| {
            let b = Record {
                sequence: seq,
                time_unix_ns: 1_700_000_000_000_000_000,
                level: DataLevel::Required as i32,
                redactions: if matches!(p, Payload::ProcessStart(_)) {
                    vec![Redaction {
                        field: "argv[1]".into(),
                        rule: "mysql_password".into(),
                        count: 1,
                    }]
                } else {
                    Vec::new()
                },
                pseudonymized: Vec::new(),
                payload: Some(p),
            }
            .encode_to_vec();
            (b, vigil_spool::Priority::Bulk)
        })
        .unwrap();
    spool.ack_through(1).unwrap();
    spool.read_after(0, 100, 1 << 20).unwrap()
}

#[test]
fn inspect_and_status_read_a_stopped_sensors_data_directory_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let held = stopped_sensor(dir.path());
    let d = dir.path().to_str().unwrap();
    let spool_file = dir.path().join("spool.redb");
    let before = std::fs::read(&spool_file).unwrap();

    let out = sensor(&["inspect", "--json", "--data-dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let note = text(&out.stderr);
    assert!(
        note.contains("The sensor is not running") && note.contains("read only"),
        "{note}"
    );
    assert!(note.contains("3 records held in the spool"), "{note}");
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, (seq, bytes)) in lines.iter().zip(&held) {
        assert_eq!(line["sequence"], *seq);
        assert_eq!(
            line["bytes_b64"],
            data_encoding::BASE64.encode(bytes),
            "the exact bytes"
        );
    }
    assert_eq!(lines[1]["kind"], "process_start");
    assert_eq!(
        lines[1]["redactions"],
        serde_json::json!([{"field": "argv[1]", "rule": "mysql_password", "count": 1}])
    );
    assert_eq!(
        lines[1]["record"]["process_start"]["command_line"],
        "mysql -p[REDACTED]"
    );

    let out = sensor(&["inspect", "--data-dir", d]);
    assert!(out.status.success());
    let human = text(&out.stdout);
    assert!(
        human.contains("#3  2023-11-14T22:13:20Z  process_start  required"),
        "{human}"
    );
    assert!(
        human.contains("    redacted argv[1] by mysql_password ×1"),
        "{human}"
    );

    let out = sensor(&["status", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(3), "not running");
    let status = text(&out.stdout);
    assert!(status.starts_with("The sensor is not running"), "{status}");
    assert!(status.contains("dev-7 (tenant acme)"), "{status}");
    assert!(status.contains("Spool       3 records"), "{status}");
    let out = sensor(&["status", "--json", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false);
    assert_eq!(v["spool"]["records"], 3);

    assert_eq!(
        std::fs::read(&spool_file).unwrap(),
        before,
        "not a byte changed"
    );

    // No spool at all: said plainly.
    let empty = tempfile::tempdir().unwrap();
    let out = sensor(&["inspect", "--data-dir", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no spool at"),
        "{}",
        text(&out.stderr)
    );
}

/// A standalone sensor with no kernel source, as a child process.
struct Standalone {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Standalone {
    fn start() -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("sensor.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = {:?}\n[collect]\nebpf = false\naudit = false\nproc_connector = false\ninventory = false\n",
                dir.path()
            ),
        )
        .unwrap();
        let out = dir.path().join("out.jsonl");
        let child = Command::new(env!("CARGO_BIN_EXE_vigil-sensor"))
            .args(["--config", cfg.to_str().unwrap(), "run", "--output"])
            .arg(format!("jsonl={}", out.display()))
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let sock = dir.path().join("control.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "the sensor never served its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Standalone { child, dir }
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(self.child.wait().unwrap().success());
        assert!(
            !self.dir.path().join("control.sock").exists(),
            "the socket is removed at stop"
        );
    }
}

#[test]
fn status_and_inspect_ask_a_running_sensor_over_its_socket() {
    let s = Standalone::start();
    let d = s.dir.path().to_str().unwrap().to_owned();
    let out = sensor(&["status", "--json", "--data-dir", &d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["mode"], "standalone");
    assert!(v["pid"].as_u64().unwrap() > 0);
    assert!(
        v["fallbacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("collect.ebpf = false")),
        "{v}"
    );
    let out = sensor(&["status", "--data-dir", &d]);
    assert!(out.status.success());
    let human = text(&out.stdout);
    assert!(human.contains("running (standalone)"), "{human}");
    assert!(human.contains("Spool       none (standalone"), "{human}");

    // A standalone sensor keeps no spool: inspect says so.
    let out = sensor(&["inspect", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("runs standalone: it keeps no spool"),
        "{}",
        text(&out.stderr)
    );

    // Another user's peer is turned away, even where the socket's mode lets it connect.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            s.dir.path().join("control.sock"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vigil-sensor"))
            .args(["status", "--data-dir", &d])
            .env("RUST_BACKTRACE", "0")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("uid 65534 is neither root nor the sensor's user"),
            "{}",
            text(&out.stderr)
        );
    } else {
        eprintln!("SKIPPED the other user's peer: needs root to become another user");
    }
    s.stop();
    let out = sensor(&["status", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(3));
}
