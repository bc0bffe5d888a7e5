//! `vigil settings ...` (a tenant admin's tenant) and `vigil keys ...` (key
//! rotation: the operator's master key, a tenant admin's data key).

use crate::client::{Api, rpc};
use crate::display::{fields, print};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use vigil_proto::v1::{
    GetSettingsRequest, RotateDataKeyRequest, RotateMasterKeyRequest, RotateMasterKeyResponse,
    SetRetentionRequest,
};

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Show the tenant's settings: region, retention, devices, store size, data key.
    Show,
    /// Set how long the tenant's data is kept.
    Retention {
        /// Days, 30 to 180.
        days: u32,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Wrap every tenant's data keys under a new master key, then retire the old one (operator).
    RotateMaster,
    /// Seal new data under a new data key; older data is re-sealed in the background (tenant admin).
    RotateData,
}

pub async fn settings(api: &Api, cmd: SettingsCommand, json: bool) -> Result<()> {
    let mut admin = api.admin();
    let t = match cmd {
        SettingsCommand::Show => admin.get_settings(GetSettingsRequest {}).await,
        SettingsCommand::Retention { days } => {
            admin
                .set_retention(SetRetentionRequest {
                    retention_days: days,
                })
                .await
        }
    }
    .map_err(rpc)?
    .into_inner();
    crate::tenant::show(&t, json)
}

pub async fn keys(api: &Api, cmd: KeysCommand, json: bool) -> Result<()> {
    match cmd {
        KeysCommand::RotateMaster => {
            let r = api
                .operator()
                .rotate_master_key(RotateMasterKeyRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", master_json(&r));
            } else {
                print(&fields(&master_fields(&r)))?;
            }
        }
        KeysCommand::RotateData => {
            let t = api
                .admin()
                .rotate_data_key(RotateDataKeyRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            crate::tenant::show(&t, json)?;
        }
    }
    Ok(())
}

pub fn master_fields(r: &RotateMasterKeyResponse) -> Vec<(&'static str, String)> {
    vec![
        ("Master key", r.master_key_id.clone()),
        ("Retired key", r.retired_key_id.clone()),
        ("Tenants rewrapped", r.tenants_rewrapped.to_string()),
    ]
}

pub fn master_json(r: &RotateMasterKeyResponse) -> Value {
    json!({
        "master_key_id": r.master_key_id,
        "retired_key_id": r.retired_key_id,
        "tenants_rewrapped": r.tenants_rewrapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_rotation_output() {
        let r = RotateMasterKeyResponse {
            master_key_id: "mk-2".into(),
            retired_key_id: "mk-1".into(),
            tenants_rewrapped: 3,
        };
        assert_eq!(
            fields(&master_fields(&r)),
            [
                "Master key         mk-2",
                "Retired key        mk-1",
                "Tenants rewrapped  3"
            ]
        );
        assert_eq!(
            master_json(&r),
            json!({"master_key_id": "mk-2", "retired_key_id": "mk-1", "tenants_rewrapped": 3})
        );
    }
}
