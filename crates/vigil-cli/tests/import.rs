//! `vigil import` as an admin runs it, against `vigil up`: a device enrolled
//! into the local tenant the way a sensor does, records waiting in its spool,
//! exported into a bundle as `vigil-sensor export` writes one; imported once,
//! every record is accepted; imported again, every one is a duplicate; with
//! one byte changed, the bundle is refused with the reason and an error status.

#![allow(clippy::unwrap_used)]

mod support;

use prost::Message;
use std::path::Path;
use support::{text, vigil};
use vigil_proto::v1::{ProcessStart, Record, record::Payload};

/// The value of `key = "value"` in a profile.
fn field(profile: &Path, key: &str) -> String {
    std::fs::read_to_string(profile)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn a_bundle_imports_once_and_a_changed_one_is_refused() {
    let up = support::start();
    let admin = &up.analyst;
    let out = vigil(admin, &["enroll-token", "create", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();

    // Enrolled as a sensor enrolls (its key, certificate, the server's transfer key).
    let device = tempfile::tempdir().unwrap();
    let cfg = format!(
        "data_dir = {:?}\n[server]\nendpoint = {:?}\nca_file = {:?}\nserver_name = {:?}\n\
         [enrollment]\ntoken = {:?}\n",
        device.path(),
        field(admin, "endpoint"),
        field(admin, "ca_file"),
        field(admin, "server_name"),
        token
    );
    let cfg = vigil_sensor::SensorConfig::parse(Path::new("device.toml"), &cfg).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(vigil_sensor::uplink::ensure_enrolled(
            &cfg,
            &Default::default(),
        ))
        .unwrap();
    // Records waiting in its spool, as the pipeline writes them.
    let marker = format!("vigil-import-{}", std::process::id());
    {
        let spool = vigil_spool::Spool::open(&device.path().join("spool.redb"), 64 << 20).unwrap();
        spool
            .append(0..50u32, |seq, i| {
                let b = Record {
                    sequence: seq,
                    time_unix_ns: 1_700_000_000_000_000_000 + i64::from(i),
                    payload: Some(Payload::ProcessStart(ProcessStart {
                        guid: format!("{marker}-{i}"),
                        pid: 1000 + i,
                        command_line: format!("/usr/bin/true {marker} {i}"),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
                .encode_to_vec();
                (b, vigil_spool::Priority::Bulk)
            })
            .unwrap();
    }
    let bundle = device.path().join("offline.vgb");
    let e = vigil_sensor::export::export(device.path(), &bundle, &Default::default()).unwrap();
    assert_eq!(e.records, 50);

    let import = |file: &Path| vigil(admin, &["import", file.to_str().unwrap(), "--json"]);
    let first = import(&bundle);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(50), Some(0))
    );
    let again = import(&bundle);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(50))
    );
    // The analyst finds them, each once.
    let out = vigil(
        admin,
        &[
            "hunt",
            "search",
            &format!("CommandLine*={marker}"),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The imported ones: `vigil up`'s own sensor also records this test's
    // `vigil hunt search …marker…` commands.
    let imported = format!("/usr/bin/true {marker} ");
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains(&imported))
            .count(),
        50
    );

    // One byte changed in the middle (the ciphertext): refused, saying why.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let changed = device.path().join("changed.vgb");
    std::fs::write(&changed, &bytes).unwrap();
    let out = import(&changed);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("refused"), "{err}");
}
