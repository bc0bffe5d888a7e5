#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use vigil_proto::v1::{
    FileEvent, FileOperation, Hashes, Path as PbPath, ProcessRef, record::Payload,
};

const MIN: i64 = 60_000_000_000;
const T0: i64 = 1_700_000_000_000_000_000;

const SET: &str = r#"
title: Executable dropped in tmp
id: dropped
name: dropped
logsource: {product: linux, category: file_event}
detection: {s: {TargetFilename|startswith: /tmp/}, condition: s}
---
title: Same file on five devices
id: spread
author: Vigil tests
references: [https://example.org/spread]
level: high
vigil: {scope: tenant}
correlation:
    type: value_count
    rules: [dropped]
    group-by: [Hashes]
    timespan: 10m
    condition: {field: DeviceId, gte: 5}
"#;

fn rules(text: &str) -> TenantRules {
    let mut set = RuleSet::new();
    let mut report = vigil_rules::LoadReport::default();
    set.load_str(std::path::Path::new("t.yml"), text, &mut report);
    set.check_references(&mut report);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    TenantRules::new(&set, 1).expect("a tenant-scope correlation")
}

fn file(seq: u64, time: i64, sha: u8) -> Record {
    Record {
        sequence: seq,
        time_unix_ns: time,
        payload: Some(Payload::File(FileEvent {
            operation: FileOperation::Create as i32,
            path: Some(PbPath {
                text: "/tmp/payload".into(),
                ..Default::default()
            }),
            hashes: Some(Hashes {
                sha256: vec![sha; 32],
                ..Default::default()
            }),
            process: Some(ProcessRef {
                guid: format!("g{seq}"),
                pid: 9,
                executable: None,
                command_line: "curl".into(),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn device(i: usize) -> String {
    format!("dev{i}")
}

#[test]
fn five_devices_make_one_alert_naming_them_all() {
    let mut r = rules(SET);
    let mut alerts = Vec::new();
    for i in 0..5 {
        let d = device(i);
        // Two records per device: the second never counts twice.
        let recs = [
            file(1, T0 + i as i64 * MIN, 7),
            file(2, T0 + i as i64 * MIN + 1, 7),
        ];
        alerts.extend(r.observe(&d, &format!("host{i}"), &recs, T0 + MIN * 60));
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.rule_id, "spread");
    assert_eq!(a.severity, vigil_proto::v1::Severity::High as i32);
    // The device whose event completed it, then the others in the order they came.
    assert_eq!(a.device_id, "dev4");
    assert_eq!(a.hostname, "host4");
    let d = a.detection.as_ref().unwrap();
    assert_eq!(d.devices, ["dev4", "dev0", "dev1", "dev2", "dev3"]);
    assert_eq!(d.author, "Vigil tests");
    assert_eq!(d.references, ["https://example.org/spread"]);
    assert_eq!(d.rule_title, "Same file on five devices");
    // Every contributing event, oldest first: both records of dev0..dev3, the completing one of dev4.
    assert_eq!(d.matched.len(), 9);
    assert!(
        d.matched
            .windows(2)
            .all(|w| w[0].time_unix_ns <= w[1].time_unix_ns)
    );
    assert_eq!(d.matched.last().unwrap().time_unix_ns, T0 + 4 * MIN);
    assert_eq!(a.time_unix_ns, T0 + 4 * MIN);
    assert_eq!(a.process.as_ref().map(|p| p.guid.as_str()), Some("g1"));
}

#[test]
fn four_devices_make_none_nor_five_spread_beyond_the_window() {
    let mut r = rules(SET);
    for i in 0..4 {
        assert!(
            r.observe(&device(i), "h", &[file(1, T0 + i as i64, 7)], T0 + MIN)
                .is_empty()
        );
    }
    // Another hash on a fifth device is another group.
    assert!(
        r.observe(&device(4), "h", &[file(1, T0 + 5, 8)], T0 + MIN)
            .is_empty()
    );
    // The same hash, but the first four are more than ten minutes old.
    assert!(
        r.observe(&device(5), "h", &[file(1, T0 + 11 * MIN, 7)], T0 + 12 * MIN)
            .is_empty()
    );
}

#[test]
fn a_device_sending_again_is_still_one_device() {
    let mut r = rules(SET);
    // What a re-send would look like if it reached the engine: the same
    // device again. The ingest hook passes only records above the high-water
    // mark, so re-sends never get here; the count is of distinct devices anyway.
    for _ in 0..3 {
        for i in 0..4 {
            assert!(
                r.observe(&device(i), "h", &[file(1, T0 + i as i64, 7)], T0 + MIN)
                    .is_empty()
            );
        }
    }
    let a = r.observe(&device(9), "h", &[file(1, T0 + 10, 7)], T0 + MIN);
    assert_eq!(a.len(), 1);
    let d = a[0].detection.as_ref().unwrap();
    assert_eq!(d.devices.len(), 5);
    // The same (device, sequence) is evidence once.
    assert_eq!(d.matched.len(), 5);
}

#[test]
fn state_is_bounded() {
    let set = SET.replace("gte: 5", "gte: 100");
    let mut r = rules(&set);
    // Many groups: evidence is kept for the most recent only.
    for h in 0..(MAX_EVIDENCE_GROUPS + 10) {
        let rec = [Record {
            sequence: h as u64 + 1,
            ..file(0, T0 + h as i64, 0)
        }];
        let mut rec = rec;
        if let Some(Payload::File(f)) = &mut rec[0].payload {
            f.hashes = Some(Hashes {
                sha256: (h as u64).to_be_bytes().to_vec(),
                ..Default::default()
            });
        }
        r.observe("d", "h", &rec, T0 + MIN);
    }
    assert_eq!(r.evidence_groups(), MAX_EVIDENCE_GROUPS);
    assert_eq!(r.evicted, 10);
    // One group: its evidence is the newest MAX_EVIDENCE events.
    let mut r = rules(&set);
    for i in 0..(MAX_EVIDENCE as u64 * 3) {
        r.observe(
            &format!("d{i}"),
            "h",
            &[file(i + 1, T0 + i as i64, 7)],
            T0 + MIN,
        );
    }
    let g = r.evidence[0].values().next().unwrap();
    assert_eq!(g.events.len(), MAX_EVIDENCE);
    assert_eq!(
        g.events.back().unwrap().device_id,
        format!("d{}", MAX_EVIDENCE * 3 - 1)
    );
}

#[test]
fn a_set_without_tenant_scope_runs_nothing_here_and_a_reload_keeps_state() {
    let mut set = RuleSet::new();
    let mut report = vigil_rules::LoadReport::default();
    let device_only = SET.replace("vigil: {scope: tenant}\n", "");
    set.load_str(std::path::Path::new("t.yml"), &device_only, &mut report);
    assert!(TenantRules::new(&set, 1).is_none());

    let mut r = rules(SET);
    for i in 0..4 {
        r.observe(&device(i), "h", &[file(1, T0 + i as i64, 7)], T0 + MIN);
    }
    // A new version that changes only a title keeps the four devices.
    let mut next = RuleSet::new();
    let mut report = vigil_rules::LoadReport::default();
    let retitled = SET.replace("title: Executable dropped in tmp", "title: Dropped");
    next.load_str(std::path::Path::new("t.yml"), &retitled, &mut report);
    let mut r = r.replace(&next, 2).unwrap();
    assert_eq!(r.version(), 2);
    let a = r.observe(&device(4), "h", &[file(1, T0 + 10, 7)], T0 + MIN);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].detection.as_ref().unwrap().devices.len(), 5);
}

#[test]
fn device_fields_are_the_servers() {
    let text = SET
        .replace("group-by: [Hashes]", "group-by: [Computer]")
        .replace("field: DeviceId, gte: 5", "field: Hashes, gte: 2");
    let mut r = rules(&text);
    assert!(
        r.observe("a", "web1", &[file(1, T0, 1)], T0 + MIN)
            .is_empty()
    );
    // Another host's file does not count for web1.
    assert!(
        r.observe("b", "web2", &[file(1, T0 + 1, 2)], T0 + MIN)
            .is_empty()
    );
    let a = r.observe("a", "web1", &[file(2, T0 + 2, 2)], T0 + MIN);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].detection.as_ref().unwrap().devices, ["a"]);
}
