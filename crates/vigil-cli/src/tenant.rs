//! `vigil tenant ...`: the deployment operator's tenants (Operator service),
//! and how a tenant (`TenantInfo`) is shown wherever a call returns one.

use crate::client::{Api, rpc};
use crate::display::{Table, fields, human_bytes, print, time_json, time_or_dash};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use vigil_proto::v1::{
    CreateTenantRequest, CreateTenantResponse, DeleteTenantRequest, DeleteTenantResponse,
    GetTenantRequest, ListTenantsRequest, TenantInfo,
};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first admin token (the token is shown once).
    Create {
        /// The tenant's name (repeated later to delete it).
        name: String,
        /// Region its data lives in, fixed for good (default: the server's only region).
        #[arg(long)]
        region: Option<String>,
        /// How long its data is kept, 30 to 180 days (default 90).
        #[arg(long, value_name = "N")]
        retention_days: Option<u32>,
    },
    /// List the deployment's tenants.
    List,
    /// Show one tenant.
    Show {
        /// Tenant id.
        id: String,
    },
    /// Delete a tenant: its keys are destroyed first (its data is unreadable at once), then its files.
    Delete {
        /// Tenant id.
        id: String,
        /// The tenant's name, repeated, so that a mistyped id cannot erase another tenant.
        #[arg(long, value_name = "NAME", required = true)]
        confirm: String,
    },
}

pub async fn run(api: &Api, cmd: TenantCommand, json: bool) -> Result<()> {
    let mut op = api.operator();
    match cmd {
        TenantCommand::Create {
            name,
            region,
            retention_days,
        } => {
            let r = op
                .create_tenant(CreateTenantRequest {
                    name,
                    region: region.unwrap_or_default(),
                    retention_days: retention_days.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", created_json(&r));
            } else {
                print(&created_lines(&r))?;
                eprintln!(
                    "The admin token is shown once (the server keeps only its digest): store it now."
                );
            }
        }
        TenantCommand::List => {
            let r = op
                .list_tenants(ListTenantsRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                for t in &r.tenants {
                    out!("{}", to_json(t));
                }
            } else {
                if r.tenants.is_empty() {
                    eprintln!("no tenants");
                } else {
                    print(&table(&r.tenants).lines())?;
                }
                if !r.regions.is_empty() {
                    eprintln!("regions served: {}", r.regions.join(", "));
                }
            }
        }
        TenantCommand::Show { id } => {
            let t = op
                .get_tenant(GetTenantRequest { tenant_id: id })
                .await
                .map_err(rpc)?
                .into_inner();
            show(&t, json)?;
        }
        TenantCommand::Delete { id, confirm } => {
            let r = op
                .delete_tenant(DeleteTenantRequest {
                    tenant_id: id,
                    confirm_name: confirm,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", deleted_json(&r));
            } else {
                out!(
                    "deleted tenant {} ({} removed)",
                    r.tenant_id,
                    human_bytes(r.bytes_removed)
                );
            }
        }
    }
    Ok(())
}

/// Prints a tenant as a block of fields, or one JSON object.
pub fn show(t: &TenantInfo, json: bool) -> Result<()> {
    if json {
        out!("{}", to_json(t));
        Ok(())
    } else {
        print(&fields(&info_fields(t)))
    }
}

/// `tenant_id <id>` and `admin_token <secret>`: one `key value` per line, for
/// people and for `awk '$1 == "admin_token" {print $2}'`.
pub fn created_lines(r: &CreateTenantResponse) -> Vec<String> {
    let t = r.tenant.clone().unwrap_or_default();
    vec![
        format!("tenant_id {}", t.tenant_id),
        format!("admin_token {}", r.admin_token),
    ]
}

pub fn created_json(r: &CreateTenantResponse) -> Value {
    let t = r.tenant.clone().unwrap_or_default();
    json!({
        "tenant_id": t.tenant_id,
        "admin_token": r.admin_token,
        "tenant": to_json(&t),
        "admin_token_info": r.admin_token_info.as_ref().map(crate::tokens::api_token_json),
    })
}

pub fn deleted_json(r: &DeleteTenantResponse) -> Value {
    json!({"tenant_id": r.tenant_id, "bytes_removed": r.bytes_removed})
}

/// The `tenant list` table.
pub fn table(tenants: &[TenantInfo]) -> Table {
    let mut t = Table::new(&[
        "id",
        "name",
        "region",
        "retention",
        "devices",
        "connected",
        "size",
        "created",
    ]);
    for x in tenants {
        t.row(vec![
            x.tenant_id.clone(),
            x.name.clone(),
            region(x),
            format!("{} d", x.retention_days),
            x.devices.to_string(),
            x.devices_connected.to_string(),
            human_bytes(x.store_bytes),
            time_or_dash(x.created_unix_ns),
        ]);
    }
    t
}

/// The region, marked when this server does not serve it.
fn region(t: &TenantInfo) -> String {
    if t.served {
        t.region.clone()
    } else {
        format!("{} (not served here)", t.region)
    }
}

/// A tenant as `show` prints it.
pub fn info_fields(t: &TenantInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Tenant", t.tenant_id.clone()),
        ("Name", t.name.clone()),
        ("Region", region(t)),
        ("Retention", format!("{} days", t.retention_days)),
        ("Created", time_or_dash(t.created_unix_ns)),
        (
            "Devices",
            format!(
                "{} ({} connected, {} revoked)",
                t.devices, t.devices_connected, t.devices_revoked
            ),
        ),
        ("Last ingest", time_or_dash(t.last_ingest_unix_ns)),
        ("Store size", human_bytes(t.store_bytes)),
        ("Data key", key_versions(t)),
    ]
}

fn key_versions(t: &TenantInfo) -> String {
    let older: Vec<String> = t
        .data_key_versions_in_use
        .iter()
        .filter(|v| **v != t.data_key_version)
        .map(u32::to_string)
        .collect();
    if older.is_empty() {
        format!("version {}", t.data_key_version)
    } else {
        format!(
            "version {} (re-sealing from {})",
            t.data_key_version,
            older.join(", ")
        )
    }
}

pub fn to_json(t: &TenantInfo) -> Value {
    json!({
        "tenant_id": t.tenant_id,
        "name": t.name,
        "region": t.region,
        "served": t.served,
        "retention_days": t.retention_days,
        "created": time_json(t.created_unix_ns),
        "created_unix_ns": t.created_unix_ns,
        "devices": t.devices,
        "devices_connected": t.devices_connected,
        "devices_revoked": t.devices_revoked,
        "store_bytes": t.store_bytes,
        "last_ingest": time_json(t.last_ingest_unix_ns),
        "last_ingest_unix_ns": t.last_ingest_unix_ns,
        "data_key_version": t.data_key_version,
        "data_key_versions_in_use": t.data_key_versions_in_use,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{ApiTokenInfo, Role};

    fn tenant() -> TenantInfo {
        TenantInfo {
            tenant_id: "acme-7f3a".into(),
            name: "Acme".into(),
            region: "eu".into(),
            retention_days: 90,
            created_unix_ns: 1_700_000_000_000_000_000,
            devices: 12,
            devices_revoked: 1,
            store_bytes: 3 * 1024 * 1024 + 512 * 1024,
            devices_connected: 10,
            last_ingest_unix_ns: 0,
            data_key_version: 2,
            data_key_versions_in_use: vec![1, 2],
            served: true,
        }
    }

    #[test]
    fn the_list_table_has_the_documented_columns() {
        let t = table(&[tenant()]);
        assert_eq!(
            t.header(),
            [
                "id",
                "name",
                "region",
                "retention",
                "devices",
                "connected",
                "size",
                "created"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "acme-7f3a",
                "Acme",
                "eu",
                "90 d",
                "12",
                "10",
                "3.5 MiB",
                "2023-11-14T22:13:20Z"
            ]
        );
    }

    #[test]
    fn a_region_not_served_here_says_so() {
        let t = TenantInfo {
            served: false,
            ..tenant()
        };
        assert_eq!(table(&[t]).rows()[0][2], "eu (not served here)");
    }

    #[test]
    fn show_fields_name_zero_times_with_a_dash_and_key_rotation_in_progress() {
        let f = info_fields(&tenant());
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("Last ingest"), "-");
        assert_eq!(get("Data key"), "version 2 (re-sealing from 1)");
        assert_eq!(get("Devices"), "12 (10 connected, 1 revoked)");
        let done = TenantInfo {
            data_key_versions_in_use: vec![2],
            ..tenant()
        };
        assert_eq!(key_versions(&done), "version 2");
    }

    #[test]
    fn json_field_names() {
        let v = to_json(&tenant());
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "tenant_id",
            "name",
            "region",
            "served",
            "retention_days",
            "created",
            "created_unix_ns",
            "devices",
            "devices_connected",
            "devices_revoked",
            "store_bytes",
            "last_ingest",
            "last_ingest_unix_ns",
            "data_key_version",
            "data_key_versions_in_use",
        ] {
            assert!(keys.contains(&k), "missing {k} in {v}");
        }
        assert_eq!(v["last_ingest"], Value::Null);
        assert_eq!(v["created"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn create_prints_id_and_token_lines_and_one_json_object() {
        let r = CreateTenantResponse {
            tenant: Some(tenant()),
            admin_token: "vgl_secret".into(),
            admin_token_info: Some(ApiTokenInfo {
                token_id: "tok1".into(),
                role: Role::Admin as i32,
                ..Default::default()
            }),
        };
        assert_eq!(
            created_lines(&r),
            ["tenant_id acme-7f3a", "admin_token vgl_secret"]
        );
        let v = created_json(&r);
        assert_eq!(v["tenant_id"], "acme-7f3a");
        assert_eq!(v["admin_token"], "vgl_secret");
        assert_eq!(v["tenant"]["name"], "Acme");
        assert_eq!(v["admin_token_info"]["role"], "admin");
    }

    #[test]
    fn delete_json() {
        let v = deleted_json(&DeleteTenantResponse {
            tenant_id: "t".into(),
            bytes_removed: 7,
        });
        assert_eq!(v, json!({"tenant_id": "t", "bytes_removed": 7}));
    }
}
