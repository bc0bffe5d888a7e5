//! A process tree (`hunt process-tree`, and an alert's evidence) as an
//! indented tree and as JSON. Pure.
//!
//! ```text
//! vm (16d65e9e…)
//! /sbin/init  pid 1  guid …  started 2026-…
//!   sshd: alice  pid 900  guid …  started 2026-…
//!     ▶ cat /etc/shadow  pid 20312  guid …  started 2026-…  exited 0
//!         2026-…  file  open /etc/shadow
//!         (more events not shown)
//!       head -1  pid 20313  guid …  started 2026-…
//! ```

use crate::display::{clean, rfc3339};
use crate::records;
use serde_json::{Map, Value, json};
use vigil_proto::v1::{ProcessTree, Record, TreeProcess, record::Payload};

/// Marks the process the tree is about.
const MARK: &str = "▶ ";

/// The tree as lines: the device, the ancestors oldest first, each one
/// level deeper, the process itself (marked), then its children one level
/// deeper still. Under each process, up to `events` of its events.
/// Control characters are escaped, as in every table.
pub fn lines(t: &ProcessTree, events: usize) -> Vec<String> {
    let mut out = vec![if t.hostname.is_empty() {
        t.device_id.clone()
    } else {
        format!("{} ({})", t.hostname, t.device_id)
    }];
    // The server sends the parent first; a tree reads from the root down.
    let mut depth = 0;
    for a in t.ancestors.iter().rev() {
        process(&mut out, a, depth, false, events);
        depth += 1;
    }
    if let Some(p) = &t.process {
        process(&mut out, p, depth, true, events);
        depth += 1;
    }
    for c in &t.children {
        process(&mut out, c, depth, false, events);
    }
    if t.children_truncated {
        out.push(format!("{}(more children not shown)", indent(depth)));
    }
    // Command lines and paths come from devices: no terminal control characters.
    out.iter().map(|l| clean(l)).collect()
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

fn process(out: &mut Vec<String>, p: &TreeProcess, depth: usize, marked: bool, events: usize) {
    let mark = if marked { MARK } else { "" };
    out.push(format!("{}{mark}{}", indent(depth), describe(p)));
    // Events line up under the process's text, past the mark.
    let under = format!("{}    ", indent(depth));
    for e in p.events.iter().take(events) {
        out.push(format!(
            "{under}{}  {}  {}",
            rfc3339(e.time_unix_ns),
            records::kind(e),
            records::summary(e)
        ));
    }
    let hidden = p.events.len().saturating_sub(events);
    let word = if hidden == 1 { "event" } else { "events" };
    // The server says only that it has more than it sent, not how many.
    match (hidden, p.events_truncated) {
        (0, false) => {}
        (0, true) => out.push(format!("{under}(more events not shown)")),
        (n, false) => out.push(format!("{under}({n} more {word} not shown)")),
        (n, true) => out.push(format!(
            "{under}({n} more {word} not shown, and more on the server)"
        )),
    }
}

/// `cat /etc/shadow  pid 20312  guid …  started …  exited 0`.
fn describe(p: &TreeProcess) -> String {
    let mut s = match p.start.as_ref().map(|r| (r, &r.payload)) {
        Some((r, Some(Payload::ProcessStart(start)))) => format!(
            "{}  pid {}  guid {}  started {}",
            records::summary(r),
            start.pid,
            p.guid,
            rfc3339(r.time_unix_ns),
        ),
        _ => format!("(start not recorded)  guid {}", p.guid),
    };
    if let Some(Payload::ProcessExit(e)) = p.exit.as_ref().and_then(|r| r.payload.as_ref()) {
        if e.exit_signal != 0 {
            s.push_str(&format!("  killed by signal {}", e.exit_signal));
        } else {
            s.push_str(&format!("  exited {}", e.exit_code));
        }
    }
    s
}

/// The tree as one JSON object: device, `process`, `ancestors` (parent
/// first, as the server sends them), `children`; each process with its
/// `start`, `exit` and `events` as `hunt search --json` writes records.
pub fn to_json(t: &ProcessTree) -> Value {
    json!({
        "device_id": t.device_id,
        "hostname": t.hostname,
        "process": t.process.as_ref().map_or(Value::Null, process_json),
        "ancestors": t.ancestors.iter().map(process_json).collect::<Vec<_>>(),
        "children": t.children.iter().map(process_json).collect::<Vec<_>>(),
        "children_truncated": t.children_truncated,
    })
}

fn process_json(p: &TreeProcess) -> Value {
    let record = |r: &Option<Record>| {
        r.as_ref()
            .map_or(Value::Null, |r| Value::Object(records::fields(r)))
    };
    let mut m = Map::new();
    m.insert("guid".into(), p.guid.clone().into());
    m.insert("start".into(), record(&p.start));
    m.insert("exit".into(), record(&p.exit));
    m.insert(
        "events".into(),
        p.events
            .iter()
            .map(|e| Value::Object(records::fields(e)))
            .collect(),
    );
    m.insert("events_truncated".into(), p.events_truncated.into());
    Value::Object(m)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::records::tests::{at, file, start};
    use vigil_proto::v1::{FileOperation, ProcessExit};

    pub fn node(guid: &str, command_line: &str, events: usize, truncated: bool) -> TreeProcess {
        TreeProcess {
            start: Some(at(1, start(guid, command_line))),
            guid: guid.into(),
            exit: None,
            events: (0..events)
                .map(|i| at(10 + i as u64, file(FileOperation::Open, &format!("/f{i}"))))
                .collect(),
            events_truncated: truncated,
        }
    }

    pub fn tree() -> ProcessTree {
        let mut me = node("g-me", "cat /etc/shadow", 2, true);
        me.exit = Some(at(
            20,
            Payload::ProcessExit(ProcessExit {
                guid: "g-me".into(),
                exit_code: 0,
                ..Default::default()
            }),
        ));
        ProcessTree {
            device_id: "dev1".into(),
            hostname: "vm".into(),
            process: Some(me),
            // Parent first.
            ancestors: vec![
                node("g-bash", "bash", 0, false),
                TreeProcess {
                    guid: "g-init".into(),
                    ..Default::default()
                },
            ],
            children: vec![
                node("g-c1", "head -1", 1, false),
                node("g-c2", "wc", 0, false),
            ],
            children_truncated: false,
        }
    }

    const T: &str = "2023-11-14T22:13:20Z";

    #[test]
    fn ancestors_oldest_first_then_the_marked_process_then_its_children() {
        let lines = lines(&tree(), 200);
        let want = [
            "vm (dev1)".to_owned(),
            "(start not recorded)  guid g-init".into(),
            format!("  bash  pid 42  guid g-bash  started {T}"),
            format!("    ▶ cat /etc/shadow  pid 42  guid g-me  started {T}  exited 0"),
            format!("        {T}  file  open /f0"),
            format!("        {T}  file  open /f1"),
            "        (more events not shown)".into(),
            format!("      head -1  pid 42  guid g-c1  started {T}"),
            format!("          {T}  file  open /f0"),
            format!("      wc  pid 42  guid g-c2  started {T}"),
        ];
        assert_eq!(lines, want);
    }

    #[test]
    fn events_cut_here_are_counted() {
        let lines = lines(&tree(), 1);
        assert!(
            lines.contains(&"        (1 more event not shown, and more on the server)".to_owned()),
            "{lines:#?}"
        );
        let lines = super::lines(&tree(), 0);
        assert!(!lines.iter().any(|l| l.contains("  file  ")));
        assert!(lines.contains(&"          (1 more event not shown)".to_owned()));
        assert!(
            lines.contains(&"        (2 more events not shown, and more on the server)".to_owned())
        );
    }

    #[test]
    fn control_characters_from_devices_are_escaped() {
        let mut t = tree();
        t.children = vec![node("g-x", "evil\u{1b}[2J", 0, false)];
        let lines = lines(&t, 0);
        assert!(
            lines.iter().any(|l| l.contains("evil\\u{1b}[2J")),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains('\u{1b}')));
    }

    #[test]
    fn json_keeps_the_servers_order_and_every_record() {
        let v = to_json(&tree());
        assert_eq!(v["device_id"], "dev1");
        assert_eq!(v["process"]["guid"], "g-me");
        assert_eq!(v["process"]["events_truncated"], true);
        assert_eq!(v["process"]["events"].as_array().unwrap().len(), 2);
        assert_eq!(v["process"]["events"][0]["kind"], "file");
        assert_eq!(v["process"]["exit"]["kind"], "process_exit");
        assert_eq!(v["ancestors"][0]["guid"], "g-bash");
        assert_eq!(v["ancestors"][1]["start"], Value::Null);
        assert_eq!(v["children"][1]["guid"], "g-c2");
        assert_eq!(
            v["process"]["start"]["event"]["CommandLine"],
            "cat /etc/shadow"
        );
    }
}
