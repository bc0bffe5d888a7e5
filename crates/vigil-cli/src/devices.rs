//! `vigil device ...`: a tenant's enrolled sensors (Admin service; listing
//! also for analysts and read-only users).

use crate::client::{Api, rpc};
use crate::display::{Table, fields, print, time_json, time_or_dash, yes_no};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use vigil_proto::v1::{DeviceInfo, ListDevicesRequest, RevokeDeviceRequest};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// List the tenant's devices.
    List,
    /// Revoke a device: its certificate is refused from its next request and an open stream is closed.
    Revoke {
        /// Device id (as `device list` prints it).
        id: String,
    },
}

pub async fn run(api: &Api, cmd: DeviceCommand, json: bool) -> Result<()> {
    let mut admin = api.admin();
    match cmd {
        DeviceCommand::List => {
            let r = admin
                .list_devices(ListDevicesRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                for d in &r.devices {
                    out!("{}", to_json(d));
                }
            } else if r.devices.is_empty() {
                eprintln!("no devices");
            } else {
                print(&table(&r.devices).lines())?;
            }
        }
        DeviceCommand::Revoke { id } => {
            let d = admin
                .revoke_device(RevokeDeviceRequest { device_id: id })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", to_json(&d));
            } else {
                print(&fields(&device_fields(&d)))?;
            }
        }
    }
    Ok(())
}

/// The `device list` table.
pub fn table(devices: &[DeviceInfo]) -> Table {
    let mut t = Table::new(&[
        "id",
        "hostname",
        "connected",
        "last seen",
        "stored through",
        "rules",
        "enrolled",
        "revoked",
    ]);
    for d in devices {
        t.row(vec![
            d.device_id.clone(),
            d.hostname.clone(),
            yes_no(d.connected),
            time_or_dash(d.last_seen_unix_ns),
            d.stored_through.to_string(),
            if d.rules_version.is_empty() {
                "-".into()
            } else {
                d.rules_version.clone()
            },
            time_or_dash(d.enrolled_unix_ns),
            time_or_dash(d.revoked_unix_ns),
        ]);
    }
    t
}

pub fn device_fields(d: &DeviceInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Device", d.device_id.clone()),
        ("Hostname", d.hostname.clone()),
        ("Enrolled", time_or_dash(d.enrolled_unix_ns)),
        ("Revoked", time_or_dash(d.revoked_unix_ns)),
        ("Connected", yes_no(d.connected)),
        ("Last seen", time_or_dash(d.last_seen_unix_ns)),
        ("Stored through", d.stored_through.to_string()),
        ("Rules", d.rules_version.clone()),
    ]
}

pub fn to_json(d: &DeviceInfo) -> Value {
    json!({
        "device_id": d.device_id,
        "hostname": d.hostname,
        "connected": d.connected,
        "enrolled": time_json(d.enrolled_unix_ns),
        "enrolled_unix_ns": d.enrolled_unix_ns,
        "revoked": time_json(d.revoked_unix_ns),
        "revoked_unix_ns": d.revoked_unix_ns,
        "last_seen": time_json(d.last_seen_unix_ns),
        "last_seen_unix_ns": d.last_seen_unix_ns,
        "stored_through": d.stored_through,
        "rules_version": d.rules_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceInfo {
        DeviceInfo {
            device_id: "16d65e9e".into(),
            hostname: "vm".into(),
            enrolled_unix_ns: 1_700_000_000_000_000_000,
            revoked_unix_ns: 0,
            connected: true,
            last_seen_unix_ns: 0,
            stored_through: 812,
            rules_version: "v3".into(),
        }
    }

    #[test]
    fn the_list_table() {
        let t = table(&[device()]);
        assert_eq!(
            t.header(),
            [
                "id",
                "hostname",
                "connected",
                "last seen",
                "stored through",
                "rules",
                "enrolled",
                "revoked"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "16d65e9e",
                "vm",
                "yes",
                "-",
                "812",
                "v3",
                "2023-11-14T22:13:20Z",
                "-"
            ]
        );
    }

    #[test]
    fn json_field_names() {
        let v = to_json(&device());
        assert_eq!(v["device_id"], "16d65e9e");
        assert_eq!(v["connected"], true);
        assert_eq!(v["revoked"], Value::Null);
        assert_eq!(v["enrolled"], "2023-11-14T22:13:20Z");
        assert_eq!(v["stored_through"], 812);
    }
}
