//! `vigil access ...`: an operator asks a tenant's admins for time-limited
//! read access to its data; the admins approve, deny or revoke it. An
//! approved operator then calls with `--tenant TENANT`.

use crate::client::{Api, rpc};
use crate::display::{Table, fields, print, time_json, time_or_dash};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use tonic::Code;
use vigil_proto::v1::{
    AccessGrant, DecideAccessGrantRequest, ListAccessGrantsRequest, RequestAccessRequest, Role,
};

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Ask a tenant's admins for read access to its data (operator).
    Request {
        /// Tenant id.
        #[arg(value_name = "TENANT")]
        tenant_id: String,
        /// Why: shown to the tenant's admins and kept in the audit log.
        #[arg(long)]
        reason: String,
        /// How long, 1 to 1440 minutes, counted from approval (default 60).
        #[arg(long, value_name = "N")]
        minutes: Option<u32>,
    },
    /// Access grants: an operator's own requests, or a tenant admin's tenant's.
    List,
    /// Approve a pending request (tenant admin).
    Approve {
        /// Grant id (as `access list` prints it).
        id: String,
    },
    /// Deny a pending request (tenant admin).
    Deny {
        /// Grant id (as `access list` prints it).
        id: String,
    },
    /// End an approved grant before it expires (tenant admin).
    Revoke {
        /// Grant id (as `access list` prints it).
        id: String,
    },
}

/// Which list `vigil access list` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantList {
    /// `Operator.ListMyAccessGrants`: the operator's own requests.
    Mine,
    /// `Admin.ListAccessGrants`: the tenant's.
    Tenant,
    /// Unknown role: try the tenant's, and on PERMISSION_DENIED the operator's.
    TenantThenMine,
}

/// The profile's role, when it names one, decides; otherwise the server does.
pub fn grant_list_for(role: Option<Role>) -> GrantList {
    match role {
        Some(Role::Operator) => GrantList::Mine,
        Some(Role::Unspecified) | None => GrantList::TenantThenMine,
        Some(_) => GrantList::Tenant,
    }
}

pub async fn run(api: &Api, role: Option<Role>, cmd: AccessCommand, json: bool) -> Result<()> {
    let decide = |id: String| DecideAccessGrantRequest { grant_id: id };
    let requested = matches!(cmd, AccessCommand::Request { .. });
    let grant = match cmd {
        AccessCommand::Request {
            tenant_id,
            reason,
            minutes,
        } => {
            api.operator()
                .request_access(RequestAccessRequest {
                    tenant_id,
                    reason,
                    duration_minutes: minutes.unwrap_or_default(),
                })
                .await
        }
        AccessCommand::List => {
            let grants = list(api, grant_list_for(role)).await?;
            if json {
                for g in &grants {
                    out!("{}", to_json(g));
                }
            } else if grants.is_empty() {
                eprintln!("no access grants");
            } else {
                print(&table(&grants).lines())?;
            }
            return Ok(());
        }
        AccessCommand::Approve { id } => api.admin().approve_access_grant(decide(id)).await,
        AccessCommand::Deny { id } => api.admin().deny_access_grant(decide(id)).await,
        AccessCommand::Revoke { id } => api.admin().revoke_access_grant(decide(id)).await,
    }
    .map_err(rpc)?
    .into_inner();
    if json {
        out!("{}", to_json(&grant));
    } else {
        print(&fields(&grant_fields(&grant)))?;
        if requested {
            eprintln!(
                "Once a tenant admin approves it (vigil access approve {}), call with --tenant {}.",
                grant.grant_id, grant.tenant_id
            );
        }
    }
    Ok(())
}

async fn list(api: &Api, which: GrantList) -> Result<Vec<AccessGrant>> {
    let mine = || async {
        api.operator()
            .list_my_access_grants(ListAccessGrantsRequest {})
            .await
    };
    let r = match which {
        GrantList::Mine => mine().await,
        GrantList::Tenant => {
            api.admin()
                .list_access_grants(ListAccessGrantsRequest {})
                .await
        }
        GrantList::TenantThenMine => match api
            .admin()
            .list_access_grants(ListAccessGrantsRequest {})
            .await
        {
            Err(s) if s.code() == Code::PermissionDenied => mine().await,
            other => other,
        },
    };
    Ok(r.map_err(rpc)?.into_inner().grants)
}

/// The `access list` table.
pub fn table(grants: &[AccessGrant]) -> Table {
    let mut t = Table::new(&[
        "id",
        "tenant",
        "operator",
        "state",
        "minutes",
        "requested",
        "decided by",
        "expires",
        "reason",
    ]);
    for g in grants {
        t.row(vec![
            g.grant_id.clone(),
            g.tenant_id.clone(),
            operator(g),
            g.state.clone(),
            g.duration_minutes.to_string(),
            time_or_dash(g.requested_unix_ns),
            if g.decided_by.is_empty() {
                "-".into()
            } else {
                g.decided_by.clone()
            },
            time_or_dash(g.expires_unix_ns),
            g.reason.clone(),
        ]);
    }
    t
}

fn operator(g: &AccessGrant) -> String {
    if g.operator_name.is_empty() {
        g.operator_token_id.clone()
    } else {
        g.operator_name.clone()
    }
}

pub fn grant_fields(g: &AccessGrant) -> Vec<(&'static str, String)> {
    vec![
        ("Grant", g.grant_id.clone()),
        ("Tenant", g.tenant_id.clone()),
        (
            "Operator",
            format!("{} ({})", g.operator_name, g.operator_token_id),
        ),
        ("State", g.state.clone()),
        ("Reason", g.reason.clone()),
        ("Duration", format!("{} minutes", g.duration_minutes)),
        ("Requested", time_or_dash(g.requested_unix_ns)),
        (
            "Decided",
            if g.decided_unix_ns == 0 {
                "-".into()
            } else {
                format!("{} by {}", time_or_dash(g.decided_unix_ns), g.decided_by)
            },
        ),
        ("Expires", time_or_dash(g.expires_unix_ns)),
    ]
}

pub fn to_json(g: &AccessGrant) -> Value {
    json!({
        "grant_id": g.grant_id,
        "tenant_id": g.tenant_id,
        "operator_token_id": g.operator_token_id,
        "operator_name": g.operator_name,
        "reason": g.reason,
        "duration_minutes": g.duration_minutes,
        "state": g.state,
        "requested": time_json(g.requested_unix_ns),
        "requested_unix_ns": g.requested_unix_ns,
        "decided_by": g.decided_by,
        "decided": time_json(g.decided_unix_ns),
        "decided_unix_ns": g.decided_unix_ns,
        "expires": time_json(g.expires_unix_ns),
        "expires_unix_ns": g.expires_unix_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000_000_000;

    fn pending() -> AccessGrant {
        AccessGrant {
            grant_id: "g1".into(),
            tenant_id: "acme".into(),
            operator_token_id: "op-tok".into(),
            operator_name: "ops on call".into(),
            reason: "ticket 4711".into(),
            duration_minutes: 60,
            requested_unix_ns: T,
            state: "pending".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_role_chooses_the_list() {
        assert_eq!(grant_list_for(Some(Role::Operator)), GrantList::Mine);
        assert_eq!(grant_list_for(Some(Role::Admin)), GrantList::Tenant);
        assert_eq!(grant_list_for(Some(Role::Auditor)), GrantList::Tenant);
        assert_eq!(grant_list_for(None), GrantList::TenantThenMine);
        assert_eq!(
            grant_list_for(Some(Role::Unspecified)),
            GrantList::TenantThenMine
        );
    }

    #[test]
    fn a_pending_grant_in_the_table() {
        let t = table(&[pending()]);
        assert_eq!(
            t.header(),
            [
                "id",
                "tenant",
                "operator",
                "state",
                "minutes",
                "requested",
                "decided by",
                "expires",
                "reason"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "g1",
                "acme",
                "ops on call",
                "pending",
                "60",
                "2023-11-14T22:13:20Z",
                "-",
                "-",
                "ticket 4711"
            ]
        );
    }

    #[test]
    fn json_field_names_and_nulls() {
        let v = to_json(&pending());
        assert_eq!(v["grant_id"], "g1");
        assert_eq!(v["state"], "pending");
        assert_eq!(v["expires"], Value::Null);
        assert_eq!(v["decided"], Value::Null);
        assert_eq!(v["requested"], "2023-11-14T22:13:20Z");
        assert_eq!(v.as_object().unwrap().len(), 14);
    }

    #[test]
    fn an_approved_grant_says_who_decided_and_when_it_ends() {
        let g = AccessGrant {
            state: "approved".into(),
            decided_by: "alice".into(),
            decided_unix_ns: T,
            expires_unix_ns: T + 3_600_000_000_000,
            ..pending()
        };
        let f = grant_fields(&g);
        assert!(f.contains(&("Decided", "2023-11-14T22:13:20Z by alice".into())));
        assert!(f.contains(&("Expires", "2023-11-14T23:13:20Z".into())));
    }
}
