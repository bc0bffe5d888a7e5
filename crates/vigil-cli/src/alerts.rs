//! `vigil alerts ...`: list, show, watch and update a tenant's alerts.

use crate::client::{Api, AuthChannel, rpc};
use crate::display::{Table, host_or_id, rfc3339};
use crate::profile::Profile;
use crate::{devices, tree};
use anyhow::Result;
use serde_json::json;
use tokio_stream::StreamExt;
use vigil_proto::v1::{
    Alert, AlertEvidence, AlertStatus, GetAlertRequest, ListAlertsRequest, RuleInfo, Severity,
    UpdateAlertRequest, WatchAlertsRequest, alerts_client::AlertsClient,
};

pub type Client = AlertsClient<AuthChannel>;

/// An Alerts client for the profile's token (no `x-vigil-tenant`).
pub async fn client(profile: &Profile) -> Result<Client> {
    Ok(Api::connect(profile, None).await?.alerts())
}

pub fn severity_name(s: i32) -> &'static str {
    match Severity::try_from(s).unwrap_or(Severity::Unspecified) {
        Severity::Informational => "informational",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
        Severity::Unspecified => "unspecified",
    }
}

pub fn parse_severity(s: &str) -> Result<Severity> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "informational" | "info" => Severity::Informational,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        other => {
            anyhow::bail!("unknown severity `{other}` (informational, low, medium, high, critical)")
        }
    })
}

fn status_name(s: i32) -> &'static str {
    match AlertStatus::try_from(s).unwrap_or(AlertStatus::Unspecified) {
        AlertStatus::New => "new",
        AlertStatus::InProgress => "in_progress",
        AlertStatus::Resolved => "resolved",
        AlertStatus::FalsePositive => "false_positive",
        AlertStatus::Unspecified => "unspecified",
    }
}

/// `new`, `in-progress`, `resolved`, `false-positive` (or with `_`).
pub fn parse_status(s: &str) -> Result<AlertStatus> {
    Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "new" => AlertStatus::New,
        "in-progress" => AlertStatus::InProgress,
        "resolved" => AlertStatus::Resolved,
        "false-positive" => AlertStatus::FalsePositive,
        other => {
            anyhow::bail!("unknown status `{other}` (new, in-progress, resolved, false-positive)")
        }
    })
}

pub fn to_json(a: &Alert) -> serde_json::Value {
    let p = a.process.clone().unwrap_or_default();
    json!({
        "id": a.id,
        "rule_id": a.rule_id,
        "rule_title": a.rule_title,
        "severity": severity_name(a.severity),
        "status": status_name(a.status),
        "device": a.device_id,
        "hostname": a.hostname,
        "time": rfc3339(a.time_unix_ns),
        "time_unix_ns": a.time_unix_ns,
        "command_line": p.command_line,
        "process": {
            "guid": p.guid,
            "pid": p.pid,
            "executable": p.executable.map(|e| e.text).unwrap_or_default(),
        },
        "tags": a.tags,
        "devices": devices(a),
        "count": a.count.max(1),
        "first_seen": rfc3339(a.first_seen_unix_ns),
        "last_seen": rfc3339(a.last_seen_unix_ns),
        "assignee": a.assignee,
        "comments": a.comments.iter().map(|c| json!({
            "author": c.author,
            "time": rfc3339(c.time_unix_ns),
            "text": c.text,
        })).collect::<Vec<_>>(),
        "updated_by": a.updated_by,
        "updated_unix_ns": a.updated_unix_ns,
    })
}

pub fn one_line(a: &Alert) -> String {
    let p = a.process.clone().unwrap_or_default();
    format!(
        "{}  {:<8}  {}  {}  host={}  pid={}  {}",
        rfc3339(a.time_unix_ns),
        severity_name(a.severity),
        a.id,
        a.rule_title,
        host(a),
        p.pid,
        p.command_line
    )
}

/// The `alerts list` table.
pub fn table(alerts: &[Alert]) -> Table {
    let mut t = Table::new(&[
        "time",
        "severity",
        "id",
        "rule",
        "host",
        "pid",
        "command line",
    ]);
    for a in alerts {
        let p = a.process.clone().unwrap_or_default();
        t.row(vec![
            rfc3339(a.time_unix_ns),
            severity_name(a.severity).into(),
            a.id.clone(),
            a.rule_title.clone(),
            host(a),
            p.pid.to_string(),
            p.command_line,
        ]);
    }
    t
}

/// The alert's host, and how many other devices a cross-device detection names (`vm +2`).
fn host(a: &Alert) -> String {
    let host = host_or_id(&a.hostname, &a.device_id);
    match others(a) {
        0 => host.to_owned(),
        n => format!("{host} +{n}"),
    }
}

/// Devices of the detection other than the alert's own.
fn others(a: &Alert) -> usize {
    devices(a).iter().filter(|d| **d != a.device_id).count()
}

/// Every device a server-side (cross-device) detection names; empty for a sensor's.
fn devices(a: &Alert) -> &[String] {
    a.detection.as_ref().map_or(&[], |d| d.devices.as_slice())
}

pub struct ListArgs {
    pub json: bool,
    pub min_severity: Option<Severity>,
    pub rule_id: Option<String>,
    pub device: Option<String>,
    pub assignee: Option<String>,
    pub limit: Option<usize>,
}

/// JSON lines are written as each page arrives; the table waits for the last
/// page, since its columns are as wide as their widest cell.
pub async fn list(api: &Api, args: ListArgs) -> Result<()> {
    let mut c = api.alerts();
    let mut token = String::new();
    let mut printed = 0usize;
    let mut rows = Vec::new();
    loop {
        let page_size = args.limit.map_or(500, |l| (l - printed).min(1000)) as u32;
        let resp = c
            .list_alerts(ListAlertsRequest {
                page_size,
                page_token: token.clone(),
                min_severity: args.min_severity.map_or(0, |s| s as i32),
                rule_id: args.rule_id.clone().unwrap_or_default(),
                device_id: args.device.clone().unwrap_or_default(),
                assignee: args.assignee.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(rpc)?
            .into_inner();
        for a in resp.alerts {
            if args.limit.is_some_and(|l| printed >= l) {
                break;
            }
            if args.json {
                out!("{}", to_json(&a));
            } else {
                rows.push(a);
            }
            printed += 1;
        }
        if resp.next_page_token.is_empty() || args.limit.is_some_and(|l| printed >= l) {
            break;
        }
        token = resp.next_page_token;
    }
    if printed == 0 && !args.json {
        eprintln!("no alerts");
    } else if !args.json {
        crate::display::print(&table(&rows).lines())?;
    }
    Ok(())
}

pub async fn show(api: &Api, id: &str, json: bool) -> Result<()> {
    let mut c = api.alerts();
    let a = c
        .get_alert(GetAlertRequest { id: id.to_owned() })
        .await
        .map_err(rpc)?
        .into_inner();
    print_alert(&a, json)
}

/// What `alerts update` changes; at least one is given.
pub struct UpdateArgs {
    pub status: Option<String>,
    pub assign: Option<String>,
    pub unassign: bool,
    pub comment: Option<String>,
}

pub async fn update(api: &Api, id: &str, args: UpdateArgs, json: bool) -> Result<()> {
    let status = args.status.as_deref().map(parse_status).transpose()?;
    if status.is_none() && args.assign.is_none() && !args.unassign && args.comment.is_none() {
        anyhow::bail!("nothing to change: give --status, --assign, --unassign or --comment");
    }
    let mut c = api.alerts();
    let a = c
        .update_alert(UpdateAlertRequest {
            id: id.to_owned(),
            status: status.map_or(0, |s| s as i32),
            assignee: args.assign,
            clear_assignee: args.unassign,
            comment: args.comment.unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    print_alert(&a, json)
}

fn print_alert(a: &Alert, json: bool) -> Result<()> {
    if json {
        out!("{}", show_json(a));
    } else {
        crate::display::print(&show_lines(a))?;
    }
    Ok(())
}

/// `alerts show --json`: the alert, the detection's description and matched
/// sequences, and the evidence when the server sent it.
pub fn show_json(a: &Alert) -> serde_json::Value {
    let mut v = to_json(a);
    if let Some(d) = &a.detection {
        v["description"] = json!(d.description);
        v["matched_sequences"] = json!(d.matched.iter().map(|m| m.sequence).collect::<Vec<_>>());
    }
    if let Some(e) = &a.evidence {
        v["evidence"] = evidence_json(e);
    }
    v
}

fn evidence_json(e: &AlertEvidence) -> serde_json::Value {
    json!({
        "rule": e.rule.as_ref().map(|r| json!({
            "id": r.id,
            "title": r.title,
            "author": r.author,
            "level": r.level,
            "tags": r.tags,
            "attack": r.attack,
            "references": r.references,
            "description": r.description,
        })),
        "device": e.device.as_ref().map(devices::to_json),
        "process_tree": e.process_tree.as_ref().map(tree::to_json),
    })
}

/// Events shown under each process of an alert's tree (`hunt process-tree` shows them all).
const TREE_EVENTS: usize = 3;

/// `alerts show`: the alert's fields, then its evidence: the rule, the
/// device, and the process tree with the first few events of each process.
pub fn show_lines(a: &Alert) -> Vec<String> {
    let p = a.process.clone().unwrap_or_default();
    let mut f = vec![
        ("Alert", a.id.clone()),
        ("Rule", format!("{} ({})", a.rule_title, a.rule_id)),
        ("Severity", severity_name(a.severity).into()),
        ("Status", status_name(a.status).into()),
        ("Time", rfc3339(a.time_unix_ns)),
        ("Device", format!("{} ({})", a.hostname, a.device_id)),
    ];
    if !devices(a).is_empty() {
        f.push(("Devices", devices(a).join(", ")));
    }
    f.extend([
        ("Process", format!("pid {} guid {}", p.pid, p.guid)),
        (
            "Executable",
            p.executable.map(|e| e.text).unwrap_or_default(),
        ),
        ("Command line", p.command_line),
        ("Tags", a.tags.join(", ")),
        ("Count", a.count.max(1).to_string()),
        ("First seen", rfc3339(a.first_seen_unix_ns)),
        ("Last seen", rfc3339(a.last_seen_unix_ns)),
        (
            "Assignee",
            if a.assignee.is_empty() {
                "-".into()
            } else {
                a.assignee.clone()
            },
        ),
    ]);
    if !a.updated_by.is_empty() {
        f.push((
            "Updated",
            format!("{} by {}", rfc3339(a.updated_unix_ns), a.updated_by),
        ));
    }
    for c in &a.comments {
        f.push((
            "Comment",
            format!("{} {}: {}", rfc3339(c.time_unix_ns), c.author, c.text),
        ));
    }
    if let Some(d) = &a.detection
        && !d.description.is_empty()
    {
        f.push(("Description", d.description.trim().to_owned()));
    }
    let evidence = a.evidence.as_ref();
    if let Some(r) = evidence.and_then(|e| e.rule.as_ref()) {
        rule_fields(r, &mut f);
    }
    if let Some(d) = evidence.and_then(|e| e.device.as_ref()) {
        let h = d.host.clone().unwrap_or_default();
        let mut s = host_or_id(&h.hostname, &a.device_id).to_owned();
        for (what, v) in [("", devices::os(&h)), ("sensor ", h.sensor_version)] {
            if !v.is_empty() {
                s.push_str(&format!(", {what}{v}"));
            }
        }
        f.push(("Host", s));
    }
    let mut lines = crate::display::fields(&f);
    if let Some(t) = evidence.and_then(|e| e.process_tree.as_ref()) {
        lines.push(String::new());
        lines.push("Process tree".into());
        lines.extend(tree::lines(t, TREE_EVENTS).iter().map(|l| format!("  {l}")));
    }
    lines
}

/// The rule as the server knows it now: author, level, ATT&CK ids, references.
fn rule_fields(r: &RuleInfo, f: &mut Vec<(&'static str, String)>) {
    if !r.author.is_empty() {
        f.push(("Rule author", r.author.clone()));
    }
    if !r.level.is_empty() {
        f.push(("Rule level", r.level.clone()));
    }
    if !r.attack.is_empty() {
        f.push(("ATT&CK", r.attack.join(", ")));
    }
    for u in &r.references {
        f.push(("Reference", u.clone()));
    }
}

pub async fn watch(api: &Api, json: bool, min: Option<Severity>) -> Result<()> {
    let mut c = api.alerts();
    let mut s = c
        .watch_alerts(WatchAlertsRequest {
            min_severity: min.map_or(0, |s| s as i32),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(a) = s.next().await {
        let a = a.map_err(rpc)?;
        if json {
            out!("{}", to_json(&a));
        } else {
            out!("{}", one_line(&a));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::{Detection, Device, HostInfo, ProcessRef};

    fn alert() -> Alert {
        Alert {
            id: "a1".into(),
            rule_id: "r-1".into(),
            rule_title: "Shadow File Read".into(),
            severity: Severity::High as i32,
            status: AlertStatus::New as i32,
            device_id: "dev1".into(),
            hostname: String::new(),
            time_unix_ns: 1_700_000_000_000_000_000,
            process: Some(ProcessRef {
                pid: 42,
                command_line: "cat /etc/shadow".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_list_table_has_one_row_per_alert_and_falls_back_to_the_device_id() {
        let t = table(&[alert()]);
        assert_eq!(
            t.header(),
            [
                "time",
                "severity",
                "id",
                "rule",
                "host",
                "pid",
                "command line"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "2023-11-14T22:13:20Z",
                "high",
                "a1",
                "Shadow File Read",
                "dev1",
                "42",
                "cat /etc/shadow"
            ]
        );
    }

    #[test]
    fn statuses_parse_with_dashes_or_underscores() {
        assert_eq!(
            parse_status("in-progress").unwrap(),
            AlertStatus::InProgress
        );
        assert_eq!(
            parse_status("FALSE_POSITIVE").unwrap(),
            AlertStatus::FalsePositive
        );
        assert_eq!(parse_status("resolved").unwrap(), AlertStatus::Resolved);
        assert!(parse_status("closed").is_err());
    }

    #[test]
    fn json_field_names_are_stable() {
        let v = to_json(&alert());
        for k in [
            "id",
            "rule_id",
            "rule_title",
            "severity",
            "status",
            "device",
            "hostname",
            "time",
            "time_unix_ns",
            "command_line",
            "process",
            "tags",
            "count",
            "first_seen",
            "last_seen",
            "assignee",
            "comments",
        ] {
            assert!(v.get(k).is_some(), "missing {k}: {v}");
        }
        assert_eq!(v["severity"], "high");
        assert_eq!(v["process"]["pid"], 42);
    }

    fn with_evidence() -> Alert {
        Alert {
            hostname: "vm".into(),
            detection: Some(Detection {
                devices: vec!["dev1".into(), "dev2".into(), "dev3".into()],
                ..Default::default()
            }),
            evidence: Some(AlertEvidence {
                process_tree: Some(crate::tree::tests::tree()),
                device: Some(Device {
                    host: Some(HostInfo {
                        hostname: "vm".into(),
                        os_name: "Debian GNU/Linux".into(),
                        os_version: "13".into(),
                        sensor_version: "0.1.0".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                rule: Some(RuleInfo {
                    id: "r-1".into(),
                    title: "Shadow File Read".into(),
                    author: "Jane".into(),
                    level: "high".into(),
                    attack: vec!["T1003.008".into(), "TA0006".into()],
                    references: vec!["https://a.example".into(), "https://b.example".into()],
                    ..Default::default()
                }),
            }),
            ..alert()
        }
    }

    #[test]
    fn cross_device_alerts_name_their_other_devices() {
        let a = with_evidence();
        assert_eq!(table(std::slice::from_ref(&a)).rows()[0][4], "vm +2");
        assert_eq!(to_json(&a)["devices"], json!(["dev1", "dev2", "dev3"]));
        assert!(show_lines(&a).contains(&"Devices       dev1, dev2, dev3".to_owned()));
        // A sensor's detection names no devices: nothing is added.
        assert_eq!(table(&[alert()]).rows()[0][4], "dev1");
        assert!(
            !show_lines(&alert())
                .iter()
                .any(|l| l.starts_with("Devices"))
        );
    }

    #[test]
    fn show_prints_the_evidence() {
        let lines = show_lines(&with_evidence());
        for want in [
            "Rule author   Jane",
            "Rule level    high",
            "ATT&CK        T1003.008, TA0006",
            "Reference     https://a.example",
            "Reference     https://b.example",
            "Host          vm, Debian GNU/Linux 13, sensor 0.1.0",
            "Process tree",
            "  vm (dev1)",
            "  (start not recorded)  guid g-init",
        ] {
            assert!(lines.contains(&want.to_owned()), "{want}: {lines:#?}");
        }
        let tree_at = lines.iter().position(|l| l == "Process tree").unwrap();
        assert_eq!(lines[tree_at - 1], "");
        // The marked process, with its first events only.
        assert!(lines.iter().any(|l| l.contains("▶ cat /etc/shadow")));
        assert!(
            lines.iter().any(|l| l.trim() == "(more events not shown)"),
            "{lines:#?}"
        );
        // Without evidence, none of it.
        let plain = show_lines(&alert());
        assert!(
            !plain
                .iter()
                .any(|l| l.starts_with("Process tree") || l.starts_with("Host"))
        );
    }

    #[test]
    fn show_json_holds_the_evidence() {
        let v = show_json(&with_evidence());
        assert_eq!(v["evidence"]["rule"]["author"], "Jane");
        assert_eq!(v["evidence"]["rule"]["attack"][0], "T1003.008");
        assert_eq!(v["evidence"]["device"]["host"]["sensor_version"], "0.1.0");
        assert_eq!(v["evidence"]["process_tree"]["process"]["guid"], "g-me");
        assert!(show_json(&alert()).get("evidence").is_none());
    }
}
