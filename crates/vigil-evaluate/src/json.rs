//! Records as JSON lines, for the standalone sensor's output and for
//! `vigil rules match`, which reads the event lines as they are:
//!
//! ```text
//! {"logsource": {"product": "linux", "category": "file_event"}, "time": 1700000000123456789,
//!  "event": {"TargetFilename": "/etc/cron.d/x", "Image": "/usr/bin/vi", …},
//!  "vigil": {"sequence": 42, "record": "file", "operation": "create", "persistence": "cron", …}}
//! ```
//!
//! `event` holds only Sigma fields, so a rule matches the line exactly when
//! it matches the record in the sensor; Vigil's own data (sequence, GUIDs,
//! hashes as hex, persistence tag, …) is under `vigil`, which the matcher
//! ignores. A record that feeds no log source (a process exit, a listening
//! socket) is one line with `vigil` and no `event`; detections, health and
//! host records are `{"time": …, "detection" | "health" | "host": {…}}`.
//! `time` is nanoseconds since the Unix epoch.

use crate::source::{SigmaEvent, Source, for_each_event};
use serde_json::{Map, Value, json};
use vigil_proto::v1::{
    Detection, FileEvent, Hashes, HostInfo, NetworkConnection, Path as PbPath, ProcessExit,
    ProcessRef, ProcessStart, Record, RegistryEvent, SensorHealth, record::Payload,
};
use vigil_rules::FieldValue;

/// Every record kind, in the order of the payload's field numbers (10..=17):
/// the names `record_kind` gives.
pub const RECORD_KINDS: [&str; 9] = [
    "process_start",
    "process_exit",
    "file",
    "registry",
    "network",
    "host",
    "health",
    "detection",
    "diagnostics",
];

/// The kind of a record's payload as the JSON form names it.
pub fn record_kind(payload: &Payload) -> &'static str {
    match payload {
        Payload::ProcessStart(_) => "process_start",
        Payload::ProcessExit(_) => "process_exit",
        Payload::File(_) => "file",
        Payload::Registry(_) => "registry",
        Payload::Network(_) => "network",
        Payload::Host(_) => "host",
        Payload::Health(_) => "health",
        Payload::Detection(_) => "detection",
        Payload::Diagnostics(_) => "diagnostics",
    }
}

/// One JSON line per event the record is under each log source (see
/// [`for_each_event`]), or one line of its own form for records that are
/// not events. A record without payload gives none.
pub fn to_json_lines(record: &Record, ancestry: &[ProcessRef]) -> Vec<Value> {
    let Some(payload) = &record.payload else {
        return Vec::new();
    };
    let time = record.time_unix_ns;
    match payload {
        Payload::Detection(d) => {
            return vec![json!({"time": time, "detection": detection(record.sequence, d)})];
        }
        Payload::Health(h) => {
            return vec![json!({"time": time, "health": health(record.sequence, h)})];
        }
        Payload::Host(h) => return vec![json!({"time": time, "host": host(record.sequence, h)})],
        _ => {}
    }
    let vigil = vigil_data(record.sequence, payload);
    let mut lines = Vec::new();
    for_each_event(payload, ancestry, |e| {
        lines.push(json!({
            "logsource": logsource(e.source()),
            "time": time,
            "event": event(e),
            "vigil": vigil,
        }));
    });
    if lines.is_empty() {
        lines.push(json!({"time": time, "vigil": vigil}));
    }
    lines
}

/// The lines [`to_json_lines`] makes, written straight into `out` (each ending
/// in a newline): an event's fields are serialized as they are read, and a
/// record's `vigil` part once for all its lines — no value trees per line,
/// which is what a sensor writing thousands of records a second needs.
/// Returns how many lines were written.
pub fn write_json_lines(record: &Record, ancestry: &[ProcessRef], out: &mut Vec<u8>) -> usize {
    let Some(payload) = &record.payload else {
        return 0;
    };
    if matches!(
        payload,
        Payload::Detection(_) | Payload::Health(_) | Payload::Host(_)
    ) {
        // Rare records: their tree form is cheap enough.
        let lines = to_json_lines(record, ancestry);
        for l in &lines {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, l);
            out.push(b'\n');
        }
        return lines.len();
    }
    let vigil = serde_json::to_vec(&vigil_data(record.sequence, payload)).unwrap_or_default();
    let time = record.time_unix_ns.to_string();
    let mut n = 0;
    for_each_event(payload, ancestry, |e| {
        out.extend_from_slice(b"{\"logsource\":");
        out.extend_from_slice(&logsources()[e.source().index()]);
        out.extend_from_slice(b",\"time\":");
        out.extend_from_slice(time.as_bytes());
        out.extend_from_slice(b",\"event\":");
        let _ = serde_json::to_writer(&mut *out, &EventFields(e));
        out.extend_from_slice(b",\"vigil\":");
        out.extend_from_slice(&vigil);
        out.extend_from_slice(b"}\n");
        n += 1;
    });
    if n == 0 {
        out.extend_from_slice(b"{\"time\":");
        out.extend_from_slice(time.as_bytes());
        out.extend_from_slice(b",\"vigil\":");
        out.extend_from_slice(&vigil);
        out.extend_from_slice(b"}\n");
        n = 1;
    }
    n
}

/// Each source's `logsource` object, serialized once.
fn logsources() -> &'static [Vec<u8>; 4] {
    static ONCE: std::sync::OnceLock<[Vec<u8>; 4]> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| Source::ALL.map(|s| serde_json::to_vec(&logsource(s)).unwrap_or_default()))
}

/// An event's Sigma fields as a JSON object, serialized as they are read.
struct EventFields<'e, 'a>(&'e SigmaEvent<'a>);

impl serde::Serialize for EventFields<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.0.fields();
        let mut m = s.serialize_map(Some(fields.len()))?;
        for (name, value) in &fields {
            match value {
                FieldValue::Str(v) => m.serialize_entry(name.as_ref(), v.as_ref())?,
                FieldValue::Int(i) => m.serialize_entry(name.as_ref(), i)?,
                FieldValue::Bool(b) => m.serialize_entry(name.as_ref(), b)?,
                FieldValue::Null => m.serialize_entry(name.as_ref(), &())?,
            }
        }
        m.end()
    }
}

fn logsource(s: Source) -> Value {
    let ls = s.logsource();
    let mut m = Map::new();
    for (k, v) in [
        ("product", ls.product),
        ("category", ls.category),
        ("service", ls.service),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v));
        }
    }
    Value::Object(m)
}

fn event(e: &SigmaEvent<'_>) -> Value {
    let mut m = Map::new();
    for (name, value) in e.fields() {
        let v = match value {
            FieldValue::Str(s) => Value::String(s.into_owned()),
            FieldValue::Int(i) => Value::from(i),
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Null => Value::Null,
        };
        m.insert(name.into_owned(), v);
    }
    Value::Object(m)
}

/// `FILE_OPERATION_CLOSE_WRITE` as `close_write`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn hashes(h: &Option<Hashes>) -> Value {
    let Some(h) = h else { return Value::Null };
    let mut m = Map::new();
    if !h.blake3.is_empty() {
        m.insert("blake3".into(), hex(&h.blake3).into());
    }
    if !h.sha256.is_empty() {
        m.insert("sha256".into(), hex(&h.sha256).into());
    }
    if !h.error.is_empty() {
        m.insert("error".into(), h.error.clone().into());
    }
    Value::Object(m)
}

/// A path's text, and its raw bytes as hex when the text is a lossy rendering.
fn path(p: &Option<PbPath>) -> Value {
    match p {
        None => Value::Null,
        Some(p) if p.lossy => json!({"text": p.text, "raw_hex": hex(&p.raw)}),
        Some(p) => Value::String(p.text.clone()),
    }
}

fn process_ref(p: &Option<ProcessRef>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "guid": p.guid,
            "pid": p.pid,
            "executable": path(&p.executable),
            "command_line": p.command_line,
        }),
    }
}

/// Vigil's data about a record that rules do not read.
fn vigil_data(sequence: u64, payload: &Payload) -> Value {
    let mut v = match payload {
        Payload::ProcessStart(p) => process_start(p),
        Payload::ProcessExit(p) => process_exit(p),
        Payload::File(f) => file(f),
        Payload::Network(n) => network(n),
        Payload::Registry(r) => registry(r),
        Payload::Host(_) | Payload::Health(_) | Payload::Detection(_) | Payload::Diagnostics(_) => {
            json!({})
        }
    };
    if let Value::Object(m) = &mut v {
        m.insert("sequence".into(), sequence.into());
        m.insert("record".into(), record_kind(payload).into());
    }
    v
}

fn process_start(p: &ProcessStart) -> Value {
    json!({
        "guid": p.guid,
        "parent_guid": p.parent_guid,
        "start_time_unix_ns": p.start_time_unix_ns,
        "hashes": hashes(&p.executable_hashes),
        "origin": p.origin,
        "source": p.source,
        "argv_truncated": p.argv_truncated,
        "argv_missing": p.argv_missing,
        "cgroup_id": p.cgroup_id,
        "container_id": p.container_id,
    })
}

fn process_exit(p: &ProcessExit) -> Value {
    json!({
        "guid": p.guid,
        "pid": p.pid,
        "exit_code": p.exit_code,
        "exit_signal": p.exit_signal,
        "exit_time_unix_ns": p.exit_time_unix_ns,
    })
}

fn file(f: &FileEvent) -> Value {
    json!({
        "operation": short(f.operation().as_str_name(), "FILE_OPERATION_"),
        "path": path(&f.path),
        "previous_path": path(&f.previous_path),
        "persistence": f.persistence,
        "size": f.size,
        "mode": f.mode,
        "uid": f.uid,
        "gid": f.gid,
        "process_uid": f.process_uid,
        "hashes": hashes(&f.hashes),
        "process": process_ref(&f.process),
    })
}

fn network(n: &NetworkConnection) -> Value {
    json!({
        "protocol": short(n.protocol().as_str_name(), "TRANSPORT_PROTOCOL_"),
        "direction": short(n.direction().as_str_name(), "DIRECTION_"),
        "local_address": n.local_address,
        "local_port": n.local_port,
        "remote_address": n.remote_address,
        "remote_port": n.remote_port,
        "state": n.state,
        "origin": n.origin,
        "uid": n.uid,
        "process": process_ref(&n.process),
    })
}

fn registry(r: &RegistryEvent) -> Value {
    json!({
        "operation": short(r.operation().as_str_name(), "REGISTRY_OPERATION_"),
        "key_path": r.key_path,
        "value_name": r.value_name,
        "new_key_path": r.new_key_path,
        "process": process_ref(&r.process),
    })
}

fn detection(sequence: u64, d: &Detection) -> Value {
    let matched: Vec<Value> = d
        .matched
        .iter()
        .map(|r| {
            json!({
                "sequence": r.sequence,
                "time": r.time_unix_ns,
                "record": r.payload.as_ref().map(record_kind),
            })
        })
        .collect();
    json!({
        "sequence": sequence,
        "rule_id": d.rule_id,
        "rule_title": d.rule_title,
        "level": d.level,
        "tags": d.tags,
        "description": d.description,
        "process": process_ref(&d.process),
        "matched": matched,
    })
}

fn health(sequence: u64, h: &SensorHealth) -> Value {
    json!({
        "sequence": sequence,
        "dropped": h.dropped,
        "spool_records": h.spool_records,
        "spool_bytes": h.spool_bytes,
        "sources": h.sources,
        "degraded": h.degraded,
        "rules_loaded": h.rules_loaded,
        "rss_bytes": h.rss_bytes,
        "produced": h.produced,
        "delivered": h.delivered,
        "cpu_percent": h.cpu_percent,
        "interval_seconds": h.interval_seconds,
    })
}

fn host(sequence: u64, h: &HostInfo) -> Value {
    let interfaces: Vec<Value> = h
        .interfaces
        .iter()
        .map(|i| json!({"name": i.name, "mac": i.mac, "addresses": i.addresses}))
        .collect();
    json!({
        "sequence": sequence,
        "machine_id": h.machine_id,
        "hostname": h.hostname,
        "os_name": h.os_name,
        "os_version": h.os_version,
        "kernel_version": h.kernel_version,
        "boot_time_unix_ns": h.boot_time_unix_ns,
        "sensor_version": h.sensor_version,
        "architecture": h.architecture,
        "boot_id": h.boot_id,
        "interfaces": interfaces,
        "rules_version": h.rules_version,
        "rules_loaded": h.rules_loaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            short("FILE_OPERATION_CLOSE_WRITE", "FILE_OPERATION_"),
            "close_write"
        );
        assert_eq!(short("OTHER", "FILE_OPERATION_"), "other");
    }
}
