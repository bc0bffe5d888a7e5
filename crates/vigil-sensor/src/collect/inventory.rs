//! What runs, and what the machine is, when the sensor starts (sysinfo).

use super::{ExecInfo, Origin, procfs};
use vigil_proto::v1::{HostInfo, NetworkInterface};

/// Every process visible now, as exec events marked [`Origin::Snapshot`],
/// parents before children so the process tree can be built in order.
pub(crate) fn snapshot() -> Vec<ExecInfo> {
    let mut sys = match sysinfo::System::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Process inventory unavailable");
            return Vec::new();
        }
    };
    sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
    let boot_ns = procfs::boot_time_unix_ns();
    let mut out: Vec<ExecInfo> = sys
        .processes()
        .iter()
        .filter(|(_, p)| p.thread_kind().is_none())
        .filter_map(|(pid, p)| {
            let pid = pid.as_u32();
            let start = i64::try_from(p.start_time())
                .unwrap_or(0)
                .saturating_mul(1_000_000_000);
            // /proc has the full detail (argv bytes, ids); sysinfo decides what exists.
            procfs::exec_info(
                pid,
                if start > 0 { start } else { boot_ns },
                Origin::Snapshot,
            )
        })
        .collect();
    out.sort_by_key(|e| (e.unix_ns, e.pid));
    out
}

pub(crate) fn host_info(machine_id: &str, boot_id: &str) -> HostInfo {
    HostInfo {
        machine_id: machine_id.to_owned(),
        hostname: sysinfo::System::host_name().unwrap_or_default(),
        os_name: sysinfo::System::name().unwrap_or_default(),
        os_version: sysinfo::System::long_os_version().unwrap_or_default(),
        kernel_version: sysinfo::System::kernel_version().unwrap_or_default(),
        boot_time_unix_ns: procfs::boot_time_unix_ns(),
        sensor_version: env!("CARGO_PKG_VERSION").to_owned(),
        architecture: std::env::consts::ARCH.to_owned(),
        boot_id: boot_id.to_owned(),
        interfaces: interfaces(),
        ..HostInfo::default()
    }
}

/// Network interfaces with their addresses, sorted by name (so two snapshots compare equal).
fn interfaces() -> Vec<NetworkInterface> {
    let Ok(nets) = sysinfo::Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut out: Vec<NetworkInterface> = nets
        .iter()
        .map(|(name, data)| {
            let mut addresses: Vec<String> = data
                .ip_networks()
                .iter()
                .map(|n| format!("{}/{}", n.addr, n.prefix))
                .collect();
            addresses.sort();
            NetworkInterface {
                name: name.to_string_lossy().into_owned(),
                mac: data.mac_address().to_string(),
                addresses,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
