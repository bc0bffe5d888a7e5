//! Records that look like real activity, for the tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use vigil_evaluate::{Evaluator, to_json_lines};
use vigil_proto::v1::{
    Direction, FileEvent, FileOperation, NetworkConnection, Path as PbPath, ProcessRef,
    ProcessStart, Record, TransportProtocol, record::Payload,
};
use vigil_rules::{Engine, EngineConfig, FlatEvent, Hit, LogSource, RuleSet};

/// Nanoseconds of an ordinary 2023 day, so that time fields read as such.
pub const T0: i64 = 1_700_000_000_000_000_000;

/// The SigmaHQ corpus (`VIGIL_SIGMA_CORPUS`, default `../shared/sigma` from
/// the workspace root), or `None` with the reason printed.
pub fn corpus() -> Option<PathBuf> {
    let p = std::env::var_os("VIGIL_SIGMA_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sigma"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: Sigma corpus not found at {} (set VIGIL_SIGMA_CORPUS)",
            p.display()
        );
        None
    }
}

pub fn rules(yaml: &str) -> Arc<RuleSet> {
    let mut set = RuleSet::new();
    let mut report = vigil_rules::LoadReport::default();
    set.load_str(std::path::Path::new("t.yml"), yaml, &mut report);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    Arc::new(set)
}

pub fn pb(p: &str) -> Option<PbPath> {
    Some(PbPath {
        text: p.into(),
        ..Default::default()
    })
}

pub fn pref(pid: u32, exe: &str, cmd: &str) -> ProcessRef {
    ProcessRef {
        guid: format!("guid-{pid}"),
        pid,
        executable: pb(exe),
        command_line: cmd.into(),
    }
}

pub fn start(pid: u32, exe: &str, argv: &[&str], user: &str, parent: &ProcessRef) -> Payload {
    let uid = if user == "root" { 0 } else { 1000 };
    Payload::ProcessStart(ProcessStart {
        guid: format!("guid-{pid}"),
        pid,
        parent_pid: parent.pid,
        parent_guid: parent.guid.clone(),
        executable: pb(exe),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        command_line: argv.join(" "),
        cwd: pb("/home/alice"),
        uid,
        euid: uid,
        gid: uid,
        egid: uid,
        user_name: user.into(),
        login_uid: 1000,
        start_time_unix_ns: T0,
        parent: Some(parent.clone()),
        origin: "kernel".into(),
        tty: "pts0".into(),
        session_id: 3,
        source: "ebpf".into(),
        ..Default::default()
    })
}

pub fn file(op: FileOperation, path: &str, by: &ProcessRef, user: &str) -> Payload {
    Payload::File(FileEvent {
        operation: op as i32,
        path: pb(path),
        size: 120,
        mode: 0o100644,
        process: Some(by.clone()),
        user_name: user.into(),
        process_uid: if user == "root" { 0 } else { 1000 },
        ..Default::default()
    })
}

pub fn rename(from: &str, to: &str, by: &ProcessRef) -> Payload {
    let Payload::File(mut f) = file(FileOperation::Rename, to, by, "root") else {
        unreachable!()
    };
    f.previous_path = pb(from);
    Payload::File(f)
}

pub fn net(
    direction: Direction,
    protocol: TransportProtocol,
    local: (&str, u32),
    remote: (&str, u32),
    by: &ProcessRef,
) -> Payload {
    Payload::Network(NetworkConnection {
        protocol: protocol as i32,
        direction: direction as i32,
        local_address: local.0.into(),
        local_port: local.1,
        remote_address: remote.0.into(),
        remote_port: remote.1,
        state: "established".into(),
        process: Some(by.clone()),
        origin: "live".into(),
        user_name: "alice".into(),
        uid: 1000,
    })
}

pub fn outbound(exe: &str, remote: &str, port: u32) -> Payload {
    net(
        Direction::Outbound,
        TransportProtocol::Tcp,
        ("192.168.1.20", 51234),
        (remote, port),
        &pref(4242, exe, exe),
    )
}

/// Ids of the rules (and correlations) the evaluator fires for `payload`.
pub fn fired(
    ev: &mut Evaluator,
    time: i64,
    payload: &Payload,
    ancestry: &[ProcessRef],
) -> Vec<String> {
    let mut ids: Vec<String> = ev
        .evaluate(time, payload, ancestry)
        .into_iter()
        .map(|d| d.rule_id)
        .collect();
    ids.sort();
    ids
}

/// Ids of the rules that fire when the record's JSON lines are read the way
/// `vigil rules match` reads them (`FlatEvent::from_json` of `event` under
/// `logsource`) and evaluated by a fresh engine.
pub fn fired_via_json(
    set: &Arc<RuleSet>,
    time: i64,
    payload: &Payload,
    ancestry: &[ProcessRef],
) -> Vec<String> {
    let record = Record {
        sequence: 7,
        time_unix_ns: time,
        payload: Some(payload.clone()),
        ..Default::default()
    };
    let mut engine = Engine::new(Arc::clone(set), EngineConfig::default());
    let mut ids = Vec::new();
    for line in to_json_lines(&record, ancestry) {
        // Through text, as a file of lines would be.
        let line: serde_json::Value =
            serde_json::from_str(&line.to_string()).expect("JSON line parses");
        let Some(serde_json::Value::Object(event)) = line.get("event") else {
            continue;
        };
        let ls = line
            .get("logsource")
            .and_then(|v| v.as_object())
            .expect("logsource");
        let get = |k: &str| ls.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let source = LogSource {
            product: get("product"),
            category: get("category"),
            service: get("service"),
        };
        let t = line.get("time").and_then(|v| v.as_i64()).expect("time");
        for h in engine.process(&source, &FlatEvent::from_json(event), t) {
            let id = match h {
                Hit::Rule(i) => set.rules()[i].id.clone(),
                Hit::Correlation(i) => set.correlations()[i].id.clone(),
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.sort();
    ids
}
