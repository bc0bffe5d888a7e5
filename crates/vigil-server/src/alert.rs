//! Detections become alerts: severity from the rule level, identity from the
//! authenticated device, status `new`. Alerts are fanned out per tenant to
//! watchers; a tenant's channel only ever carries that tenant's alerts.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;
use vigil_proto::v1::{Alert, AlertStatus, Detection, Severity};

pub(crate) fn severity(level: &str) -> Severity {
    match level.to_ascii_lowercase().as_str() {
        "informational" => Severity::Informational,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => Severity::Unspecified,
    }
}

/// Alert ids sort by time: `<received ns, 20 digits>-<random>`.
pub(crate) fn new_alert_id(received_ns: i64) -> Result<String, vigil_store::StoreError> {
    let rand = vigil_store::new_id()?;
    Ok(format!("{:020}-{}", received_ns.max(0), &rand[..12]))
}

pub(crate) fn from_detection(
    id: String,
    d: Detection,
    device_id: &str,
    hostname: &str,
    time_unix_ns: i64,
    received_unix_ns: i64,
) -> Alert {
    Alert {
        id,
        severity: severity(&d.level) as i32,
        status: AlertStatus::New as i32,
        rule_id: d.rule_id.clone(),
        rule_title: d.rule_title.clone(),
        tags: d.tags.clone(),
        device_id: device_id.to_owned(),
        hostname: hostname.to_owned(),
        time_unix_ns,
        process: d.process.clone(),
        detection: Some(d),
        received_unix_ns,
    }
}

/// Per-tenant broadcast of new alerts.
#[derive(Debug, Default)]
pub(crate) struct AlertBus {
    channels: Mutex<HashMap<String, broadcast::Sender<Alert>>>,
}

const BUS_CAPACITY: usize = 1024;

impl AlertBus {
    pub(crate) fn subscribe(&self, tenant: &str) -> broadcast::Receiver<Alert> {
        let mut c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        c.entry(tenant.to_owned())
            .or_insert_with(|| broadcast::channel(BUS_CAPACITY).0)
            .subscribe()
    }

    pub(crate) fn publish(&self, tenant: &str, alert: &Alert) {
        let c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = c.get(tenant) {
            let _ = tx.send(alert.clone());
        }
    }
}
