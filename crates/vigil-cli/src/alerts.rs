//! `vigil alerts ...`: list, show, watch and update a tenant's alerts.

use crate::client::{Api, AuthChannel, rpc};
use crate::display::{Table, rfc3339};
use crate::profile::Profile;
use anyhow::Result;
use serde_json::json;
use tokio_stream::StreamExt;
use vigil_proto::v1::{
    Alert, AlertStatus, GetAlertRequest, ListAlertsRequest, Severity, UpdateAlertRequest,
    WatchAlertsRequest, alerts_client::AlertsClient,
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
            host(a).into(),
            p.pid.to_string(),
            p.command_line,
        ]);
    }
    t
}

fn host(a: &Alert) -> &str {
    if a.hostname.is_empty() {
        &a.device_id
    } else {
        &a.hostname
    }
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
    let a = a.clone();
    if json {
        let mut v = to_json(&a);
        if let Some(d) = &a.detection {
            v["description"] = json!(d.description);
            v["matched_sequences"] =
                json!(d.matched.iter().map(|m| m.sequence).collect::<Vec<_>>());
        }
        out!("{v}");
    } else {
        let p = a.process.clone().unwrap_or_default();
        let mut f = vec![
            ("Alert", a.id.clone()),
            ("Rule", format!("{} ({})", a.rule_title, a.rule_id)),
            ("Severity", severity_name(a.severity).into()),
            ("Status", status_name(a.status).into()),
            ("Time", rfc3339(a.time_unix_ns)),
            ("Device", format!("{} ({})", a.hostname, a.device_id)),
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
        ];
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
        crate::display::print(&crate::display::fields(&f))?;
    }
    Ok(())
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
    use super::*;
    use vigil_proto::v1::ProcessRef;

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
}
