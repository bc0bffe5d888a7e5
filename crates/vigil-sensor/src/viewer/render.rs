//! A spooled record as `inspect` shows it: for people, a summary line, the
//! key fields and what the sensor changed before it left (redactions,
//! pseudonyms); as JSON, one object holding the record decoded the way the
//! proto names it and its exact bytes.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;
use vigil_proto::v1::{DataLevel, Path as PbPath, ProcessRef, Record, record::Payload};

/// The `Record` message as the compiled-in schema describes it.
fn record_descriptor() -> Option<&'static MessageDescriptor> {
    static DESC: OnceLock<Option<MessageDescriptor>> = OnceLock::new();
    DESC.get_or_init(|| {
        DescriptorPool::decode(vigil_proto::FILE_DESCRIPTOR_SET)
            .ok()?
            .get_message_by_name("vigil.v1.Record")
    })
    .as_ref()
}

/// A Unix time in nanoseconds as RFC 3339 UTC (`-` when zero or out of range).
pub fn rfc3339(ns: i64) -> String {
    if ns == 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

use vigil_evaluate::clean;

fn level(r: &Record) -> &'static str {
    match DataLevel::try_from(r.level) {
        Ok(DataLevel::Required) => "required",
        Ok(DataLevel::Optional) => "optional",
        // Records from before levels existed are read as required.
        Ok(DataLevel::Unspecified) => "required",
        Err(_) => "unknown-level",
    }
}

fn kind(r: &Record) -> &'static str {
    r.payload
        .as_ref()
        .map_or("unknown", vigil_evaluate::record_kind)
}

fn path(p: &Option<PbPath>) -> &str {
    p.as_ref().map_or("", |p| p.text.as_str())
}

/// `name=value` pairs, the empty ones left out.
fn pairs(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .filter(|(_, v)| !v.is_empty() && v != "0")
        .map(|(k, v)| format!("{k}={}", clean(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn process(p: &Option<ProcessRef>) -> [(&'static str, String); 3] {
    let p = p.clone().unwrap_or_default();
    [
        ("pid", p.pid.to_string()),
        ("exe", path(&p.executable).to_owned()),
        ("process_guid", p.guid),
    ]
}

fn counts(m: &std::collections::HashMap<String, u64>) -> String {
    let mut v: Vec<_> = m.iter().filter(|(_, n)| **n > 0).collect();
    v.sort();
    v.iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The fields of a record an owner looks at first.
fn key_fields(r: &Record) -> String {
    let v: Vec<(&str, String)> = match &r.payload {
        Some(Payload::ProcessStart(p)) => vec![
            ("pid", p.pid.to_string()),
            ("ppid", p.parent_pid.to_string()),
            ("user", p.user_name.clone()),
            ("uid", p.uid.to_string()),
            ("exe", path(&p.executable).to_owned()),
            ("cwd", path(&p.cwd).to_owned()),
            ("guid", p.guid.clone()),
            (
                "sha256",
                p.executable_hashes
                    .as_ref()
                    .map(|h| hex::encode(&h.sha256))
                    .unwrap_or_default(),
            ),
            ("source", p.source.clone()),
        ],
        Some(Payload::ProcessExit(e)) => vec![
            ("pid", e.pid.to_string()),
            ("guid", e.guid.clone()),
            ("code", e.exit_code.to_string()),
            ("signal", e.exit_signal.to_string()),
        ],
        Some(Payload::File(f)) => {
            let mut v = vec![("user", f.user_name.clone())];
            v.extend(process(&f.process));
            v.push(("persistence", f.persistence.clone()));
            v.push((
                "sha256",
                f.hashes
                    .as_ref()
                    .map(|h| hex::encode(&h.sha256))
                    .unwrap_or_default(),
            ));
            v
        }
        Some(Payload::Registry(g)) => process(&g.process).to_vec(),
        Some(Payload::Network(n)) => {
            let mut v = vec![("user", n.user_name.clone()), ("origin", n.origin.clone())];
            v.extend(process(&n.process));
            v
        }
        Some(Payload::Host(h)) => vec![
            ("machine_id", h.machine_id.clone()),
            ("boot_id", h.boot_id.clone()),
            ("arch", h.architecture.clone()),
            ("rules_version", h.rules_version.clone()),
            ("rules", h.rules_loaded.to_string()),
            ("interfaces", h.interfaces.len().to_string()),
        ],
        Some(Payload::Health(h)) => vec![
            ("sources", h.sources.len().to_string()),
            ("degraded", h.degraded.len().to_string()),
            ("dropped", counts(&h.dropped)),
            ("redacted", counts(&h.redacted)),
            ("spool_records", h.spool_records.to_string()),
            ("rss_bytes", h.rss_bytes.to_string()),
        ],
        Some(Payload::Detection(d)) => {
            let mut v = vec![("rule", d.rule_id.clone()), ("level", d.level.clone())];
            v.extend(process(&d.process));
            v.push(("matched", d.matched.len().to_string()));
            v
        }
        Some(Payload::Diagnostics(d)) => vec![
            ("interval_s", d.interval_seconds.to_string()),
            ("stages", d.stages.len().to_string()),
            ("features", d.features.len().to_string()),
        ],
        None => Vec::new(),
    };
    pairs(&v)
}

/// What the sensor changed in the record before it left: each redaction
/// (field, rule, count; never the secret) and each pseudonymized field.
fn changes(r: &Record) -> String {
    let mut parts = Vec::new();
    if !r.redactions.is_empty() {
        let list: Vec<String> = r
            .redactions
            .iter()
            .map(|x| format!("{} by {} ×{}", clean(&x.field), clean(&x.rule), x.count))
            .collect();
        parts.push(format!("redacted {}", list.join(", ")));
    }
    if !r.pseudonymized.is_empty() {
        let list: Vec<String> = r.pseudonymized.iter().map(|f| clean(f)).collect();
        parts.push(format!("pseudonymized {}", list.join(", ")));
    }
    parts.join("; ")
}

/// A record for people: a header with its summary, the key fields, and the
/// changes when there are any. Ends with a newline.
pub fn human(sequence: u64, bytes: &[u8]) -> String {
    let r = match Record::decode(bytes) {
        Ok(r) => r,
        Err(e) => {
            return format!(
                "#{sequence}  undecodable record ({} bytes): {e}\n",
                bytes.len()
            );
        }
    };
    let mut out = format!(
        "#{sequence}  {}  {}  {}  {} B  {}\n",
        rfc3339(r.time_unix_ns),
        kind(&r),
        level(&r),
        bytes.len(),
        clean(&vigil_evaluate::summary(&r))
    );
    let fields = key_fields(&r);
    if !fields.is_empty() {
        out.push_str(&format!("    {fields}\n"));
    }
    let changes = changes(&r);
    if !changes.is_empty() {
        out.push_str(&format!("    {changes}\n"));
    }
    out
}

/// A record as one JSON object: where it sits (sequence, time, kind,
/// level), what the sensor changed, the record decoded with the proto's
/// field names (`record`), and its exact bytes (`bytes_b64`, standard base64).
pub fn json(sequence: u64, bytes: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert("sequence".into(), sequence.into());
    m.insert("size".into(), bytes.len().into());
    m.insert(
        "bytes_b64".into(),
        data_encoding::BASE64.encode(bytes).into(),
    );
    let r = match Record::decode(bytes) {
        Ok(r) => r,
        Err(e) => {
            m.insert("error".into(), format!("undecodable: {e}").into());
            return Value::Object(m);
        }
    };
    m.insert("time".into(), rfc3339(r.time_unix_ns).into());
    m.insert("kind".into(), kind(&r).into());
    m.insert("level".into(), level(&r).into());
    m.insert(
        "redactions".into(),
        r.redactions
            .iter()
            .map(|x| json!({"field": x.field, "rule": x.rule, "count": x.count}))
            .collect::<Vec<_>>()
            .into(),
    );
    m.insert("pseudonymized".into(), r.pseudonymized.clone().into());
    let decoded = record_descriptor()
        .and_then(|d| DynamicMessage::decode(d.clone(), bytes).ok())
        .and_then(|msg| {
            let opts = SerializeOptions::new()
                .use_proto_field_name(true)
                .skip_default_fields(true);
            msg.serialize_with_options(serde_json::value::Serializer, &opts)
                .ok()
        });
    m.insert("record".into(), decoded.unwrap_or(Value::Null));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::{ProcessStart, Redaction, SensorHealth};

    fn start() -> Record {
        Record {
            sequence: 7,
            time_unix_ns: 1_700_000_000_123_000_000,
            level: DataLevel::Required as i32,
            redactions: vec![Redaction {
                field: "argv[2]".into(),
                rule: "option_value".into(),
                count: 1,
            }],
            pseudonymized: vec!["user_name".into()],
            payload: Some(Payload::ProcessStart(ProcessStart {
                pid: 4242,
                parent_pid: 1,
                user_name: "u-3f9a".into(),
                command_line: "true x --password=[REDACTED]\u{1b}[2J".into(),
                executable: Some(PbPath {
                    text: "/usr/bin/true".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn people_see_the_summary_key_fields_and_what_was_changed() {
        let bytes = start().encode_to_vec();
        let text = human(7, &bytes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "#7  2023-11-14T22:13:20.123Z  process_start  required  {} B  true x --password=[REDACTED]\\u{{1b}}[2J",
                bytes.len()
            ),
            "control characters are escaped"
        );
        assert_eq!(
            lines[1],
            "    pid=4242 ppid=1 user=u-3f9a exe=/usr/bin/true"
        );
        assert_eq!(
            lines[2],
            "    redacted argv[2] by option_value ×1; pseudonymized user_name"
        );
        assert!(human(9, b"\xff\xff").starts_with("#9  undecodable record (2 bytes)"));
    }

    #[test]
    fn json_holds_the_decoded_record_and_its_exact_bytes() {
        let mut r = start();
        r.payload = Some(Payload::Health(SensorHealth {
            dropped: [("spool_full".to_owned(), 3)].into(),
            ..Default::default()
        }));
        let bytes = r.encode_to_vec();
        let v = json(7, &bytes);
        assert_eq!(
            data_encoding::BASE64
                .decode(v["bytes_b64"].as_str().unwrap().as_bytes())
                .unwrap(),
            bytes
        );
        assert_eq!(v["sequence"], 7);
        assert_eq!(v["kind"], "health");
        assert_eq!(v["level"], "required");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(
            v["redactions"],
            json!([{"field": "argv[2]", "rule": "option_value", "count": 1}])
        );
        assert_eq!(v["pseudonymized"], json!(["user_name"]));
        // The record as the proto names it: enums by name, 64-bit integers as strings.
        assert_eq!(v["record"]["level"], "DATA_LEVEL_REQUIRED");
        assert_eq!(v["record"]["sequence"], "7");
        assert_eq!(v["record"]["health"]["dropped"]["spool_full"], "3");
        let undecodable = json(9, b"\xff\xff");
        assert!(
            undecodable["error"]
                .as_str()
                .unwrap()
                .starts_with("undecodable")
        );
        assert_eq!(undecodable["bytes_b64"], "//8=");
    }
}
