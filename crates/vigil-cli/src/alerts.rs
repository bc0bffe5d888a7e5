//! `vigil alerts ...`: list, show and watch a tenant's alerts.

use crate::profile::Profile;
use anyhow::{Context, Result};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vigil_proto::v1::{
    Alert, AlertStatus, GetAlertRequest, ListAlertsRequest, Severity, WatchAlertsRequest,
    alerts_client::AlertsClient,
};

/// Adds the analyst's bearer token to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Client = AlertsClient<InterceptedService<Channel, Bearer>>;

pub async fn client(profile: &Profile) -> Result<Client> {
    let channel = profile.channel().await?;
    let value = format!("Bearer {}", profile.token)
        .parse()
        .context("token is not a valid header value")?;
    Ok(AlertsClient::with_interceptor(channel, Bearer(value)))
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

pub fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
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
        if a.hostname.is_empty() {
            &a.device_id
        } else {
            &a.hostname
        },
        p.pid,
        p.command_line
    )
}

pub struct ListArgs {
    pub json: bool,
    pub min_severity: Option<Severity>,
    pub rule_id: Option<String>,
    pub device: Option<String>,
    pub limit: Option<usize>,
}

pub async fn list(profile: &Profile, args: ListArgs) -> Result<()> {
    let mut c = client(profile).await?;
    let mut token = String::new();
    let mut printed = 0usize;
    loop {
        let page_size = args.limit.map_or(500, |l| (l - printed).min(1000)) as u32;
        let resp = c
            .list_alerts(ListAlertsRequest {
                page_size,
                page_token: token.clone(),
                min_severity: args.min_severity.map_or(0, |s| s as i32),
                rule_id: args.rule_id.clone().unwrap_or_default(),
                device_id: args.device.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("ListAlerts: {}: {}", s.code(), s.message()))?
            .into_inner();
        for a in &resp.alerts {
            if args.json {
                out!("{}", to_json(a));
            } else {
                out!("{}", one_line(a));
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
    }
    Ok(())
}

pub async fn show(profile: &Profile, id: &str, json: bool) -> Result<()> {
    let mut c = client(profile).await?;
    let a = c
        .get_alert(GetAlertRequest { id: id.to_owned() })
        .await
        .map_err(|s| anyhow::anyhow!("GetAlert {id}: {}: {}", s.code(), s.message()))?
        .into_inner();
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
        out!("Alert        {}", a.id);
        out!("Rule         {} ({})", a.rule_title, a.rule_id);
        out!("Severity     {}", severity_name(a.severity));
        out!("Status       {}", status_name(a.status));
        out!("Time         {}", rfc3339(a.time_unix_ns));
        out!("Device       {} ({})", a.hostname, a.device_id);
        out!("Process      pid {} guid {}", p.pid, p.guid);
        out!(
            "Executable   {}",
            p.executable.map(|e| e.text).unwrap_or_default()
        );
        out!("Command line {}", p.command_line);
        out!("Tags         {}", a.tags.join(", "));
        if let Some(d) = &a.detection
            && !d.description.is_empty()
        {
            out!("Description  {}", d.description.trim());
        }
    }
    Ok(())
}

pub async fn watch(profile: &Profile, json: bool, min: Option<Severity>) -> Result<()> {
    let mut c = client(profile).await?;
    let mut s = c
        .watch_alerts(WatchAlertsRequest {
            min_severity: min.map_or(0, |s| s as i32),
        })
        .await
        .map_err(|s| anyhow::anyhow!("WatchAlerts: {}: {}", s.code(), s.message()))?
        .into_inner();
    while let Some(a) = s.next().await {
        let a = a.map_err(|s| anyhow::anyhow!("WatchAlerts: {}: {}", s.code(), s.message()))?;
        if json {
            out!("{}", to_json(&a));
        } else {
            out!("{}", one_line(&a));
        }
    }
    Ok(())
}
