//! `vigil device ...`: a tenant's enrolled sensors. Listing and showing go
//! to the Hunt service (admin, analyst, read-only), which knows each
//! device's latest host and health reports; revoking to Admin.

use crate::client::{Api, rpc};
use crate::display::{Table, fields, human_bytes, or_dash, print, time_json, time_or_dash, yes_no};
use crate::records::{health_json, host_json};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use vigil_proto::v1::{
    Device, DeviceInfo, GetDeviceRequest, HostInfo, ListHuntDevicesRequest, RevokeDeviceRequest,
    SensorHealth,
};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// List the tenant's devices, with their OS, sensor, rules and health.
    List,
    /// Everything known of one device: enrollment, host, sensor health.
    Show {
        /// Device id (as `device list` prints it).
        id: String,
    },
    /// Revoke a device: its certificate is refused from its next request and an open stream is closed.
    Revoke {
        /// Device id (as `device list` prints it).
        id: String,
    },
}

pub async fn run(api: &Api, cmd: DeviceCommand, json: bool) -> Result<()> {
    match cmd {
        DeviceCommand::List => {
            let r = api
                .hunt()
                .list_devices(ListHuntDevicesRequest {})
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
        DeviceCommand::Show { id } => {
            let d = api
                .hunt()
                .get_device(GetDeviceRequest { device_id: id })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", to_json(&d));
            } else {
                print(&fields(&show_fields(&d)))?;
            }
        }
        DeviceCommand::Revoke { id } => {
            let d = api
                .admin()
                .revoke_device(RevokeDeviceRequest { device_id: id })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", info_json(&d));
            } else {
                print(&fields(&device_fields(&d)))?;
            }
        }
    }
    Ok(())
}

/// The `device list` table.
pub fn table(devices: &[Device]) -> Table {
    let mut t = Table::new(&[
        "id",
        "hostname",
        "os",
        "sensor",
        "rules",
        "health",
        "lost",
        "connected",
        "last seen",
        "stored through",
        "enrolled",
        "revoked",
    ]);
    for d in devices {
        let info = d.info.clone().unwrap_or_default();
        let host = d.host.clone().unwrap_or_default();
        t.row(vec![
            info.device_id.clone(),
            // The name at enrollment; else the one the host reported.
            or_dash(if info.hostname.is_empty() {
                &host.hostname
            } else {
                &info.hostname
            }),
            or_dash(&os(&host)),
            or_dash(&host.sensor_version),
            rules(&info, &host),
            d.health.as_ref().map_or("-".into(), health),
            d.lost.to_string(),
            yes_no(info.connected),
            time_or_dash(info.last_seen_unix_ns),
            info.stored_through.to_string(),
            time_or_dash(info.enrolled_unix_ns),
            time_or_dash(info.revoked_unix_ns),
        ]);
    }
    t
}

/// `Debian GNU/Linux 13`.
pub fn os(h: &HostInfo) -> String {
    format!("{} {}", h.os_name, h.os_version).trim().to_owned()
}

/// The published rule set the sensor runs (`v3`), or else the local rules'
/// version from its host report (`local 3f9a0c2e71b4`).
fn rules(info: &DeviceInfo, host: &HostInfo) -> String {
    if !info.rules_version.is_empty() {
        info.rules_version.clone()
    } else if !host.rules_version.is_empty() {
        let short: String = host.rules_version.chars().take(12).collect();
        format!("local {short}")
    } else {
        "-".into()
    }
}

/// `ok`, or how many sources fell back.
fn health(h: &SensorHealth) -> String {
    match h.degraded.len() {
        0 => "ok".into(),
        n => format!("{n} degraded"),
    }
}

/// Every field of a device, for `device show`.
pub fn show_fields(d: &Device) -> Vec<(&'static str, String)> {
    let mut f = device_fields(&d.info.clone().unwrap_or_default());
    match &d.host {
        None => f.push(("Host report", "none".into())),
        Some(h) => {
            f.push(("Host report", time_or_dash(d.host_unix_ns)));
            f.extend([
                ("Machine id", or_dash(&h.machine_id)),
                ("OS", or_dash(&os(h))),
                ("Kernel", or_dash(&h.kernel_version)),
                ("Architecture", or_dash(&h.architecture)),
                ("Boot time", time_or_dash(h.boot_time_unix_ns)),
                ("Boot id", or_dash(&h.boot_id)),
                ("Sensor version", or_dash(&h.sensor_version)),
            ]);
            for i in &h.interfaces {
                let mut s = i.name.clone();
                if !i.mac.is_empty() {
                    s.push_str(&format!(" {}", i.mac));
                }
                if !i.addresses.is_empty() {
                    s.push_str(&format!(" {}", i.addresses.join(", ")));
                }
                f.push(("Interface", s));
            }
            f.push((
                "Rules loaded",
                format!("{} (version {})", h.rules_loaded, or_dash(&h.rules_version)),
            ));
        }
    }
    match &d.health {
        None => f.push(("Health report", "none".into())),
        Some(h) => {
            f.push(("Health report", time_or_dash(d.health_unix_ns)));
            f.push(("Sources", list_or_none(&h.sources)));
            f.push(("Degraded", list_or_none(&h.degraded)));
            // Sorted: the maps come in no particular order.
            let mut dropped: Vec<_> = h.dropped.iter().filter(|(_, n)| **n > 0).collect();
            dropped.sort();
            let dropped: Vec<String> = dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            f.push(("Dropped", list_or_none(&dropped)));
            f.push((
                "Spool",
                format!(
                    "{} records, {}",
                    h.spool_records,
                    human_bytes(h.spool_bytes)
                ),
            ));
            f.push(("Memory (RSS)", human_bytes(h.rss_bytes)));
            f.push((
                "CPU",
                format!(
                    "{:.1}% of a core over {} s",
                    h.cpu_percent, h.interval_seconds
                ),
            ));
            f.push(("Rules in use", h.rules_loaded.to_string()));
            let sources: BTreeSet<&String> = h.produced.keys().chain(h.delivered.keys()).collect();
            for s in sources {
                let n = |m: &std::collections::HashMap<String, u64>| m.get(s).copied().unwrap_or(0);
                f.push((
                    "Events",
                    format!(
                        "{s}: produced {}, delivered {}",
                        n(&h.produced),
                        n(&h.delivered)
                    ),
                ));
            }
        }
    }
    f.push(("Lost", d.lost.to_string()));
    f
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join("; ")
    }
}

/// A device as JSON: the enrollment fields as `device revoke` prints them,
/// then the latest `host` and `health` reports (`null` when none came) and `lost`.
pub fn to_json(d: &Device) -> Value {
    let mut v = info_json(&d.info.clone().unwrap_or_default());
    if let Value::Object(m) = &mut v {
        m.insert(
            "host".into(),
            d.host.as_ref().map_or(Value::Null, host_json),
        );
        m.insert("host_time".into(), time_json(d.host_unix_ns));
        m.insert("host_unix_ns".into(), d.host_unix_ns.into());
        m.insert(
            "health".into(),
            d.health.as_ref().map_or(Value::Null, health_json),
        );
        m.insert("health_time".into(), time_json(d.health_unix_ns));
        m.insert("health_unix_ns".into(), d.health_unix_ns.into());
        m.insert("lost".into(), d.lost.into());
    }
    v
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

pub fn info_json(d: &DeviceInfo) -> Value {
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::NetworkInterface;

    const T: i64 = 1_700_000_000_000_000_000;

    fn info() -> DeviceInfo {
        DeviceInfo {
            device_id: "16d65e9e".into(),
            hostname: "vm".into(),
            enrolled_unix_ns: T,
            revoked_unix_ns: 0,
            connected: true,
            last_seen_unix_ns: 0,
            stored_through: 812,
            rules_version: "v3".into(),
        }
    }

    fn device() -> Device {
        Device {
            info: Some(info()),
            host: Some(HostInfo {
                machine_id: "m1".into(),
                hostname: "vm".into(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "13".into(),
                kernel_version: "6.18.0".into(),
                boot_time_unix_ns: T,
                sensor_version: "0.1.0".into(),
                architecture: "x86_64".into(),
                boot_id: "b1".into(),
                interfaces: vec![NetworkInterface {
                    name: "eth0".into(),
                    mac: "52:54:00:12:34:56".into(),
                    addresses: vec!["192.0.2.7/24".into(), "fe80::1/64".into()],
                }],
                rules_version: "3f9a0c2e71b4d5e6".into(),
                rules_loaded: 144,
            }),
            host_unix_ns: T,
            health: Some(SensorHealth {
                dropped: [("spool_full".to_owned(), 1), ("kernel_lost".to_owned(), 3)].into(),
                spool_records: 12,
                spool_bytes: 1536,
                sources: vec!["ebpf_process".into(), "ebpf_file".into()],
                degraded: vec!["ebpf_network: fell back to audit".into()],
                rules_loaded: 144,
                rss_bytes: 40 * 1024 * 1024,
                produced: [("ebpf_process".to_owned(), 100)].into(),
                delivered: [("ebpf_process".to_owned(), 99)].into(),
                cpu_percent: 1.25,
                interval_seconds: 60,
                ..Default::default()
            }),
            health_unix_ns: T,
            lost: 4,
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
                "os",
                "sensor",
                "rules",
                "health",
                "lost",
                "connected",
                "last seen",
                "stored through",
                "enrolled",
                "revoked"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "16d65e9e",
                "vm",
                "Debian GNU/Linux 13",
                "0.1.0",
                "v3",
                "1 degraded",
                "4",
                "yes",
                "-",
                "812",
                "2023-11-14T22:13:20Z",
                "-"
            ]
        );
    }

    #[test]
    fn a_device_that_never_reported_has_dashes_and_local_rules_show_their_version() {
        let bare = Device {
            info: Some(DeviceInfo {
                rules_version: String::new(),
                ..info()
            }),
            ..Default::default()
        };
        let row = table(std::slice::from_ref(&bare)).rows()[0].clone();
        assert_eq!(row[2..7], ["-", "-", "-", "-", "0"]);
        let local = Device {
            host: device().host,
            health: Some(SensorHealth::default()),
            ..bare
        };
        let row = table(&[local]).rows()[0].clone();
        assert_eq!(row[4..6], ["local 3f9a0c2e71b4", "ok"]);
    }

    #[test]
    fn show_has_every_field() {
        let lines = fields(&show_fields(&device()));
        let want = [
            "Device          16d65e9e",
            "Hostname        vm",
            "Enrolled        2023-11-14T22:13:20Z",
            "Revoked         -",
            "Connected       yes",
            "Last seen       -",
            "Stored through  812",
            "Rules           v3",
            "Host report     2023-11-14T22:13:20Z",
            "Machine id      m1",
            "OS              Debian GNU/Linux 13",
            "Kernel          6.18.0",
            "Architecture    x86_64",
            "Boot time       2023-11-14T22:13:20Z",
            "Boot id         b1",
            "Sensor version  0.1.0",
            "Interface       eth0 52:54:00:12:34:56 192.0.2.7/24, fe80::1/64",
            "Rules loaded    144 (version 3f9a0c2e71b4d5e6)",
            "Health report   2023-11-14T22:13:20Z",
            "Sources         ebpf_process; ebpf_file",
            "Degraded        ebpf_network: fell back to audit",
            "Dropped         kernel_lost 3; spool_full 1",
            "Spool           12 records, 1.5 KiB",
            "Memory (RSS)    40.0 MiB",
            "CPU             1.2% of a core over 60 s",
            "Rules in use    144",
            "Events          ebpf_process: produced 100, delivered 99",
            "Lost            4",
        ];
        assert_eq!(lines, want);
    }

    #[test]
    fn show_says_when_no_report_came() {
        let d = Device {
            info: Some(info()),
            ..Default::default()
        };
        let f = show_fields(&d);
        assert!(f.contains(&("Host report", "none".into())));
        assert!(f.contains(&("Health report", "none".into())));
        assert!(!f.iter().any(|(k, _)| *k == "OS"));
    }

    #[test]
    fn json_field_names() {
        let v = to_json(&device());
        assert_eq!(v["device_id"], "16d65e9e");
        assert_eq!(v["connected"], true);
        assert_eq!(v["revoked"], Value::Null);
        assert_eq!(v["enrolled"], "2023-11-14T22:13:20Z");
        assert_eq!(v["stored_through"], 812);
        assert_eq!(v["host"]["os_name"], "Debian GNU/Linux");
        assert_eq!(v["host"]["interfaces"][0]["addresses"][1], "fe80::1/64");
        assert_eq!(v["health"]["dropped"]["kernel_lost"], 3);
        assert_eq!(v["host_time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["lost"], 4);
        let bare = to_json(&Device::default());
        assert_eq!(bare["host"], Value::Null);
        assert_eq!(bare["health"], Value::Null);
    }
}
