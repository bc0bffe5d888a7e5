//! The fuzz targets' corpora and crash reproducers, replayed on stable in
//! `cargo test --workspace` (no cargo-fuzz, no libFuzzer): every file under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the
//! same entry function the target calls (`fuzzing` modules of the crates),
//! with the same assertions. See fuzz/README.md.
//!
//! `write_seeds` (ignored) made the seed corpora, through each crate's own API:
//! `cargo test --test fuzz_regressions -- --ignored write_seeds`.

#![allow(clippy::unwrap_used)]

use prost::Message;
use std::path::{Path, PathBuf};
use vigil_proto::v1::{
    self as pb, Detection, FileEvent, NetworkConnection, ProcessExit, ProcessRef, ProcessStart,
    Record, record::Payload,
};

/// A target's entry function.
type Entry = fn(&[u8]);

/// Each target and the function it fuzzes.
const TARGETS: &[(&str, Entry)] = &[
    ("sigma_rules", vigil_rules::fuzzing::rule_text),
    ("rule_bundle", vigil_rules::fuzzing::rule_bundle),
    ("server_record", vigil_server::fuzzing::record),
    ("spool_file", vigil_spool::fuzzing::spool_file),
    ("audit_text", vigil_sensor::fuzzing::audit),
    ("netlink", vigil_sensor::fuzzing::netlink),
    ("ebpf_record", ebpf_record),
    ("control_frame", vigil_sensor::fuzzing::control_frame),
    ("offline_bundle", vigil_bundle::fuzzing::bundle),
];

fn ebpf_record(data: &[u8]) {
    let _ = vigil_ebpf::decode(data);
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_file_replays() {
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target} has no seeds");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{target}: {} panics", path.display());
            }
            replayed += 1;
        }
    }
    // Every target directory in fuzz/ is one this test knows.
    for dir in ["corpus", "regressions"] {
        for entry in std::fs::read_dir(fuzz_dir().join(dir))
            .into_iter()
            .flatten()
        {
            let name = entry.unwrap().file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{dir}/{name} is not a target this test replays"
            );
        }
    }
    assert!(replayed > 0);
}

/// Writes the seed corpora (`fuzz/corpus/<target>/seed-*`) through each
/// crate's own API. Ignored: run once by hand; the seeds are committed.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    let root = fuzz_dir().join("corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Sigma rules: the rule pack's files, and a bundle of each of a few.
    let mut rules: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![repo.join("rules")];
    while let Some(d) = dirs.pop() {
        for p in files(&d) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yml") && !name.ends_with(".tests.yml") {
                rules.push(p);
            }
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    rules.sort();
    for (i, path) in rules.iter().enumerate() {
        let name = path.file_stem().unwrap().to_string_lossy();
        put(
            "sigma_rules",
            &format!("{name}.yml"),
            &std::fs::read(path).unwrap(),
        );
        if i % 6 == 0 {
            let (set, report) = vigil_rules::RuleSet::load_paths_for_bundle(&[path]);
            assert!(report.rejected.is_empty(), "{report}");
            put(
                "rule_bundle",
                &format!("{name}.vrb"),
                set.to_bundle().unwrap().as_bytes(),
            );
        }
    }

    // Records, each payload kind, encoded by prost as the sensor encodes them.
    let process = Some(ProcessRef {
        guid: "0b9e-guid".into(),
        pid: 4242,
        executable: Some(pb::Path {
            text: "/usr/bin/cat".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let start = Record {
        sequence: 1,
        time_unix_ns: 1_732_233_600_000_000_000,
        payload: Some(Payload::ProcessStart(ProcessStart {
            guid: "0b9e-guid".into(),
            pid: 4242,
            parent_pid: 1,
            executable: Some(pb::Path {
                text: "/usr/bin/cat".into(),
                ..Default::default()
            }),
            argv: vec![b"cat".to_vec(), b"/etc/shadow".to_vec()],
            ..Default::default()
        })),
        ..Default::default()
    };
    let records = [
        start.clone(),
        Record {
            sequence: 2,
            time_unix_ns: -5,
            payload: Some(Payload::ProcessExit(ProcessExit {
                guid: "g".into(),
                pid: 7,
                ..Default::default()
            })),
            ..Default::default()
        },
        Record {
            sequence: 3,
            payload: Some(Payload::File(FileEvent {
                process: process.clone(),
                ..Default::default()
            })),
            ..Default::default()
        },
        Record {
            sequence: 4,
            payload: Some(Payload::Network(NetworkConnection {
                local_address: "10.0.0.1".into(),
                local_port: 40000,
                remote_address: "192.0.2.7".into(),
                process,
                ..Default::default()
            })),
            ..Default::default()
        },
        Record {
            sequence: 5,
            level: pb::DataLevel::Optional as i32,
            payload: Some(Payload::Diagnostics(Default::default())),
            ..Default::default()
        },
        Record {
            sequence: u64::MAX,
            payload: Some(Payload::Detection(Detection {
                rule_id: "r-1".into(),
                rule_title: "cat of shadow".into(),
                level: "high".into(),
                tags: vec!["attack.t1003".into()],
                matched: vec![start],
                ..Default::default()
            })),
            ..Default::default()
        },
    ];
    for r in &records {
        put(
            "server_record",
            &format!("{}", r.sequence),
            &r.encode_to_vec(),
        );
    }
    if let Some(Payload::Detection(d)) = &records[5].payload {
        put("server_record", "detection", &d.encode_to_vec());
    }

    // A spool file written by the spool.
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.redb");
    {
        let spool = vigil_spool::Spool::open(&spool_path, 1 << 20).unwrap();
        spool
            .append(records.iter().take(3), |seq, r| {
                let mut r = r.clone();
                r.sequence = seq;
                (r.encode_to_vec(), vigil_spool::Priority::Bulk)
            })
            .unwrap();
        spool.ack_through(1).unwrap();
    }
    put(
        "spool_file",
        "three-records",
        &std::fs::read(&spool_path).unwrap(),
    );
    {
        vigil_spool::Spool::open(&dir.path().join("empty.redb"), 1 << 20).unwrap();
    }
    put(
        "spool_file",
        "empty",
        &std::fs::read(dir.path().join("empty.redb")).unwrap(),
    );

    // Audit text: one line a message, its first byte the type less 1300.
    let exec = [
        (0u8, &br#"audit(1732233600.123:77): arch=c000003e syscall=59 success=yes exit=0 a0=55d0 a1=55d1 a2=55d2 a3=0 items=2 ppid=100 pid=4242 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" key="vigil""#[..]),
        (9, br#"audit(1732233600.123:77): argc=3 a0="cat" a1=2F746D702F6120622063 a2="/etc/shadow""#),
        (7, br#"audit(1732233600.123:77): cwd="/root""#),
        (9, br#"audit(1732233600.123:78): argc=2 a0="sh" a1_len=8 a1[0]=2F746D70 a1[1]="/abc""#),
        (20, b"audit(1732233600.123:77): "),
    ];
    let mut text = Vec::new();
    for (kind, line) in exec {
        text.push(kind);
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    put("audit_text", "exec", &text);

    // Netlink: the same audit records as datagrams (header, native endian).
    let mut datagrams = Vec::new();
    for (kind, line) in exec {
        let mut m = Vec::new();
        m.extend((16 + line.len() as u32).to_ne_bytes());
        m.extend((1300 + u16::from(kind)).to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(7u32.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend_from_slice(line);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        datagrams.extend_from_slice(&m);
        if kind == 0 {
            put("netlink", "audit-syscall", &m);
        }
    }
    put("netlink", "audit-event", &datagrams);

    // eBPF records, as the BPF side writes them (decode.rs's tests).
    let hdr = |kind: u16, op: u16, flags: u32| {
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
        b
    };
    let s = |b: &mut Vec<u8>, v: &[u8]| {
        b.extend((v.len() as u16).to_le_bytes());
        b.extend(v);
    };
    let mut b = hdr(1, 0, 0);
    for v in [
        &b"/usr/bin/cat"[..],
        b"/tmp",
        b"cat\0/etc/shadow\0\0x\0",
        b"pts0",
        b"docker-0123.scope",
    ] {
        s(&mut b, v);
    }
    put("ebpf_record", "exec", &b);
    let mut b = hdr(2, 0, 0);
    b.extend(77u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(2_000_000_000u64.to_le_bytes());
    put("ebpf_record", "fork", &b);
    let mut b = hdr(3, 0, 0);
    b.extend(3i32.to_le_bytes());
    b.extend(9i32.to_le_bytes());
    put("ebpf_record", "exit", &b);
    let mut b = hdr(4, 5, 0b11);
    for v in [0o644u32, u32::MAX, u32::MAX, 3] {
        b.extend(v.to_le_bytes());
    }
    b.extend(99u64.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    for v in [&b"old"[..], b"/home/a", b"/etc/x", b""] {
        s(&mut b, v);
    }
    put("ebpf_record", "file-rename", &b);
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
    put("ebpf_record", "net", &b);
    let mut b = hdr(6, 0, 0);
    b.extend((-2i64).to_le_bytes());
    put("ebpf_record", "sys-exit", &b);

    // Control-socket frames (bodies: what follows the length).
    use vigil_sensor::control::{Frame, Notice};
    for (name, frame) in [
        (
            "record",
            Frame::Record {
                sequence: 9,
                bytes: records[0].encode_to_vec(),
            },
        ),
        (
            "listed",
            Frame::Notice(Notice::Listed {
                records: 3,
                following: true,
            }),
        ),
        (
            "skipped",
            Frame::Notice(Notice::Skipped {
                sequence: 4,
                bytes: 1 << 30,
                why: "too large".into(),
            }),
        ),
        (
            "end",
            Frame::Notice(Notice::End {
                reason: "stopping".into(),
            }),
        ),
    ] {
        put("control_frame", name, &frame.encode().unwrap()[4..]);
    }

    // An offline bundle, sealed with the fuzzing keys so that it verifies and opens.
    let (device, transfer) = vigil_bundle::fuzzing::keys();
    let mut builder = vigil_bundle::Builder::new();
    for r in &records[..4] {
        assert!(builder.push(r.sequence, &r.encode_to_vec()).unwrap());
    }
    let sealed = builder
        .seal(
            &vigil_bundle::Origin {
                device_id: "dev-1",
                tenant_id: "acme",
                created_unix_ns: 1_732_233_600_000_000_000,
            },
            device,
            &transfer.public(),
        )
        .unwrap();
    vigil_bundle::parse(&sealed)
        .unwrap()
        .verify(&device.public_key())
        .unwrap()
        .open(transfer)
        .unwrap();
    put("offline_bundle", "four-records", &sealed);
}
