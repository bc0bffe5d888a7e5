//! Stored records as people read them: a row of `hunt search`, a one-line
//! summary (also under each process of a tree), and one JSON object per
//! record. Pure: records in, strings and values out.
//!
//! The JSON reuses `vigil_evaluate::to_json_lines` (the form `vigil rules
//! match` reads), so a record reads the same everywhere Vigil prints one.

use crate::display::{host_or_id, rfc3339};
use serde_json::{Map, Value, json};
use vigil_proto::v1::{
    Detection, HostInfo, ProcessRef, Record, SensorHealth, StoredRecord, record::Payload,
};

/// The record kinds `hunt search --kind` takes (`vigil_evaluate::record_kind`'s names).
pub use vigil_evaluate::RECORD_KINDS as KINDS;

/// The columns of `hunt search` and `hunt watch`.
pub const HEADER: [&str; 5] = ["time", "device", "kind", "process guid", "summary"];

/// Their widths: a time with nanoseconds, a short hostname, the longest
/// kind, a process GUID. Rows stream, so they cannot wait for the widest cell.
pub const WIDTHS: [usize; 4] = [30, 16, 13, 36];

/// What the record says, in one line (shared with `vigil-sensor inspect`).
pub use vigil_evaluate::summary;

pub fn kind(r: &Record) -> &'static str {
    r.payload
        .as_ref()
        .map_or("unknown", vigil_evaluate::record_kind)
}

/// The GUID of the process a record is about (empty for host and health reports).
pub fn guid(r: &Record) -> &str {
    fn process(p: &Option<ProcessRef>) -> &str {
        p.as_ref().map_or("", |p| p.guid.as_str())
    }
    match &r.payload {
        Some(Payload::ProcessStart(p)) => &p.guid,
        Some(Payload::ProcessExit(p)) => &p.guid,
        Some(Payload::File(f)) => process(&f.process),
        Some(Payload::Registry(g)) => process(&g.process),
        Some(Payload::Network(n)) => process(&n.process),
        Some(Payload::Detection(d)) => process(&d.process),
        Some(Payload::Host(_) | Payload::Health(_) | Payload::Diagnostics(_)) | None => "",
    }
}

/// A row of `hunt search` and `hunt watch` (columns: [`HEADER`]).
pub fn row(s: &StoredRecord) -> Vec<String> {
    let r = s.record.clone().unwrap_or_default();
    let guid = guid(&r);
    vec![
        rfc3339(r.time_unix_ns),
        host_or_id(&s.hostname, &s.device_id).to_owned(),
        kind(&r).to_owned(),
        if guid.is_empty() { "-" } else { guid }.to_owned(),
        summary(&r),
    ]
}

/// One record as a JSON object: where it comes from (device, sequence,
/// time, kind), then the record as `vigil rules match` reads it: `event`
/// (its Sigma fields under `logsource`) and `vigil` (Vigil's own data), or
/// `detection`, `health` or `host`.
pub fn to_json(device_id: &str, hostname: &str, r: &Record) -> Value {
    let mut m = Map::new();
    m.insert("device_id".into(), device_id.into());
    m.insert("hostname".into(), hostname.into());
    m.extend(fields(r));
    Value::Object(m)
}

/// [`to_json`] without the device (the records of one process tree share it).
pub fn fields(r: &Record) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("sequence".into(), r.sequence.into());
    m.insert("time".into(), rfc3339(r.time_unix_ns).into());
    m.insert("time_unix_ns".into(), r.time_unix_ns.into());
    m.insert("kind".into(), kind(r).into());
    // A process start is one line per log source it feeds (process_creation,
    // then auditd's views of the same exec): the first holds its Sigma
    // fields, and every line the same `vigil` part.
    if let Some(Value::Object(first)) = vigil_evaluate::to_json_lines(r, &[]).into_iter().next() {
        for (k, v) in first {
            if k != "time" {
                m.insert(k, v);
            }
        }
    }
    if let (Some(Payload::Detection(d)), Some(Value::Object(v))) =
        (&r.payload, m.get_mut("detection"))
    {
        detection_extra(d, v);
    }
    m
}

/// The detection fields `to_json_lines` does not write (yet): the rule's
/// author and references, and the devices of a cross-device detection.
fn detection_extra(d: &Detection, v: &mut Map<String, Value>) {
    v.entry("author").or_insert_with(|| d.author.clone().into());
    v.entry("references").or_insert_with(|| json!(d.references));
    v.entry("devices").or_insert_with(|| json!(d.devices));
}

/// The JSON of one kind of report, as `to_json_lines` writes it, without its sequence.
fn report(payload: Payload, key: &str) -> Value {
    let r = Record {
        payload: Some(payload),
        ..Default::default()
    };
    match vigil_evaluate::to_json_lines(&r, &[]).into_iter().next() {
        Some(Value::Object(mut line)) => match line.remove(key) {
            Some(Value::Object(mut v)) => {
                v.remove("sequence");
                Value::Object(v)
            }
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// A host report (`Device.host`) as JSON.
pub fn host_json(h: &HostInfo) -> Value {
    report(Payload::Host(h.clone()), "host")
}

/// A health report (`Device.health`) as JSON.
pub fn health_json(h: &SensorHealth) -> Value {
    report(Payload::Health(h.clone()), "health")
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::{
        Direction, FileEvent, FileOperation, Hashes, NetworkConnection, Path as PbPath,
        ProcessExit, ProcessStart, RegistryEvent, RegistryOperation, TransportProtocol,
    };

    pub const T: i64 = 1_700_000_000_000_000_000;
    pub const GUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    pub fn at(sequence: u64, payload: Payload) -> Record {
        Record {
            sequence,
            time_unix_ns: T,
            payload: Some(payload),
            ..Default::default()
        }
    }

    fn pref() -> Option<ProcessRef> {
        Some(ProcessRef {
            guid: GUID.into(),
            pid: 42,
            executable: Some(PbPath {
                text: "/usr/bin/curl".into(),
                ..Default::default()
            }),
            command_line: "curl http://x".into(),
        })
    }

    pub fn start(guid: &str, command_line: &str) -> Payload {
        Payload::ProcessStart(ProcessStart {
            guid: guid.into(),
            pid: 42,
            executable: Some(PbPath {
                text: "/usr/bin/cat".into(),
                ..Default::default()
            }),
            command_line: command_line.into(),
            argv: command_line
                .split(' ')
                .filter(|a| !a.is_empty())
                .map(|a| a.as_bytes().to_vec())
                .collect(),
            argv_missing: command_line.is_empty(),
            executable_hashes: Some(Hashes {
                sha256: vec![0xab; 32],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub fn file(op: FileOperation, p: &str) -> Payload {
        Payload::File(FileEvent {
            operation: op as i32,
            path: Some(PbPath {
                text: p.into(),
                ..Default::default()
            }),
            process: pref(),
            ..Default::default()
        })
    }

    fn connection(direction: Direction, local: &str, remote: &str) -> Payload {
        Payload::Network(NetworkConnection {
            protocol: TransportProtocol::Tcp as i32,
            direction: direction as i32,
            local_address: local.into(),
            local_port: 43210,
            remote_address: remote.into(),
            remote_port: 443,
            process: pref(),
            ..Default::default()
        })
    }

    pub fn detection(title: &str) -> Payload {
        Payload::Detection(Detection {
            rule_id: "r-1".into(),
            rule_title: title.into(),
            level: "high".into(),
            author: "Jane".into(),
            references: vec!["https://attack.mitre.org/techniques/T1003/008/".into()],
            devices: vec!["dev1".into(), "dev2".into()],
            process: pref(),
            ..Default::default()
        })
    }

    fn stored(payload: Payload) -> StoredRecord {
        StoredRecord {
            device_id: "dev1".into(),
            hostname: "vm".into(),
            record: Some(at(7, payload)),
        }
    }

    /// Every kind: its row (kind, guid, summary), and its JSON's kind.
    #[test]
    fn every_kind_has_a_row_and_a_json_object() {
        let cases: Vec<(Payload, &str, &str, &str)> = vec![
            (
                start(GUID, "cat /etc/shadow"),
                "process_start",
                GUID,
                "cat /etc/shadow",
            ),
            (start(GUID, ""), "process_start", GUID, "/usr/bin/cat"),
            (
                Payload::ProcessExit(ProcessExit {
                    guid: GUID.into(),
                    pid: 42,
                    exit_code: 1,
                    ..Default::default()
                }),
                "process_exit",
                GUID,
                "pid 42 exited 1",
            ),
            (
                Payload::ProcessExit(ProcessExit {
                    guid: GUID.into(),
                    pid: 42,
                    exit_signal: 9,
                    ..Default::default()
                }),
                "process_exit",
                GUID,
                "pid 42 killed by signal 9",
            ),
            (
                file(FileOperation::Open, "/etc/shadow"),
                "file",
                GUID,
                "open /etc/shadow",
            ),
            (
                Payload::File(FileEvent {
                    operation: FileOperation::Rename as i32,
                    path: Some(PbPath {
                        text: "/etc/cron.d/x".into(),
                        ..Default::default()
                    }),
                    previous_path: Some(PbPath {
                        text: "/tmp/x".into(),
                        ..Default::default()
                    }),
                    persistence: "cron".into(),
                    process: pref(),
                    ..Default::default()
                }),
                "file",
                GUID,
                "rename /tmp/x → /etc/cron.d/x (persistence: cron)",
            ),
            (
                Payload::Registry(RegistryEvent {
                    operation: RegistryOperation::SetValue as i32,
                    key_path: "/etc/systemd/system/x.service".into(),
                    value_name: "ExecStart".into(),
                    process: pref(),
                    ..Default::default()
                }),
                "registry",
                GUID,
                "set_value /etc/systemd/system/x.service ExecStart",
            ),
            (
                connection(Direction::Outbound, "10.0.0.5", "93.184.216.34"),
                "network",
                GUID,
                "outbound tcp 10.0.0.5:43210→93.184.216.34:443",
            ),
            (
                connection(Direction::Inbound, "::1", "fe80::2"),
                "network",
                GUID,
                "inbound tcp [::1]:43210→[fe80::2]:443",
            ),
            (
                connection(Direction::Listen, "0.0.0.0", ""),
                "network",
                GUID,
                "listen tcp 0.0.0.0:43210",
            ),
            (
                Payload::Host(HostInfo {
                    hostname: "vm".into(),
                    os_name: "Debian GNU/Linux".into(),
                    os_version: "13".into(),
                    kernel_version: "6.18.0".into(),
                    sensor_version: "0.1.0".into(),
                    ..Default::default()
                }),
                "host",
                "-",
                "vm Debian GNU/Linux 13, kernel 6.18.0, sensor 0.1.0",
            ),
            (
                Payload::Health(SensorHealth {
                    degraded: vec!["ebpf_file: not supported".into()],
                    dropped: [("kernel_lost".to_owned(), 3)].into(),
                    spool_records: 12,
                    ..Default::default()
                }),
                "health",
                "-",
                "degraded: ebpf_file: not supported; lost 3; spool 12 records",
            ),
            (
                Payload::Health(SensorHealth::default()),
                "health",
                "-",
                "ok; lost 0; spool 0 records",
            ),
            (
                detection("Shadow File Read"),
                "detection",
                GUID,
                "Shadow File Read",
            ),
        ];
        for (payload, kind, guid, summary) in cases {
            let s = stored(payload);
            assert_eq!(
                row(&s),
                ["2023-11-14T22:13:20Z", "vm", kind, guid, summary],
                "{kind}"
            );
            let v = to_json(&s.device_id, &s.hostname, s.record.as_ref().unwrap());
            assert_eq!(v["kind"], kind);
            assert_eq!(v["device_id"], "dev1");
            assert_eq!(v["hostname"], "vm");
            assert_eq!(v["sequence"], 7);
            assert_eq!(v["time"], "2023-11-14T22:13:20Z");
            assert_eq!(v["time_unix_ns"], T);
            assert!(KINDS.contains(&kind));
        }
    }

    #[test]
    fn the_row_falls_back_to_the_device_id() {
        let mut s = stored(start(GUID, "id"));
        s.hostname.clear();
        assert_eq!(row(&s)[1], "dev1");
    }

    #[test]
    fn json_holds_the_records_fields() {
        let v = to_json("dev1", "vm", &at(7, start(GUID, "cat /etc/shadow")));
        assert_eq!(v["event"]["CommandLine"], "cat /etc/shadow");
        assert_eq!(v["event"]["Image"], "/usr/bin/cat");
        assert_eq!(v["logsource"]["category"], "process_creation");
        assert_eq!(v["vigil"]["guid"], GUID);
        assert_eq!(v["vigil"]["hashes"]["sha256"], "ab".repeat(32));

        let v = to_json(
            "dev1",
            "vm",
            &at(8, file(FileOperation::Open, "/etc/shadow")),
        );
        assert_eq!(v["vigil"]["operation"], "open");
        assert_eq!(v["vigil"]["path"], "/etc/shadow");
        assert_eq!(v["vigil"]["process"]["guid"], GUID);

        let v = to_json("dev1", "vm", &at(9, detection("Shadow File Read")));
        assert_eq!(v["detection"]["rule_title"], "Shadow File Read");
        assert_eq!(v["detection"]["author"], "Jane");
        assert_eq!(v["detection"]["devices"], json!(["dev1", "dev2"]));
        assert_eq!(
            v["detection"]["references"][0],
            "https://attack.mitre.org/techniques/T1003/008/"
        );
    }

    #[test]
    fn a_record_of_a_kind_this_build_does_not_know_is_still_shown() {
        let r = Record {
            sequence: 3,
            time_unix_ns: T,
            payload: None,
            ..Default::default()
        };
        assert_eq!(kind(&r), "unknown");
        assert_eq!(summary(&r), "");
        assert_eq!(to_json("d", "h", &r)["sequence"], 3);
    }

    #[test]
    fn reports_lose_their_sequence() {
        let h = host_json(&HostInfo {
            hostname: "vm".into(),
            ..Default::default()
        });
        assert_eq!(h["hostname"], "vm");
        assert!(h.get("sequence").is_none());
        let h = health_json(&SensorHealth {
            spool_records: 4,
            ..Default::default()
        });
        assert_eq!(h["spool_records"], 4);
        assert!(h.get("sequence").is_none());
    }
}
