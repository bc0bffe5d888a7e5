//! `vigil token ...` (API tokens for people: admin, analyst, auditor,
//! read-only) and `vigil enroll-token ...` (tokens sensors enroll with), both
//! a tenant admin's (Admin service). A secret is printed once, when made.

use crate::client::{Api, rpc};
use crate::display::{Table, expiry, fields, print, time_json, time_or_dash};
use crate::role::{self, TenantRole};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use vigil_proto::v1::{
    ApiTokenInfo, CreateApiTokenRequest, CreateEnrollmentTokenRequest, EnrollmentTokenInfo,
    ListApiTokensRequest, ListEnrollmentTokensRequest, RevokeApiTokenRequest,
    RevokeEnrollmentTokenRequest, Role,
};

const SHOWN_ONCE: &str =
    "The token is shown once (the server keeps only its digest): store it now.";

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a person or a script (the secret is shown once).
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        role: TenantRole,
        /// Who or what it is for (shown in lists and in the audit log).
        #[arg(long)]
        name: String,
        /// Days until it expires (default: never).
        #[arg(long, value_name = "DAYS")]
        expires: Option<u32>,
    },
    /// List the tenant's API tokens (never their secrets).
    List,
    /// Revoke an API token: refused from its next call.
    Revoke {
        /// Token id (as `token list` prints it).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum EnrollTokenCommand {
    /// Create a token sensors enroll with (the secret is shown once).
    Create {
        /// Validity, 1 to 720 hours (default 24).
        #[arg(long, value_name = "H")]
        hours: Option<u32>,
    },
    /// List the tenant's enrollment tokens (never their secrets).
    List,
    /// Revoke an enrollment token: no device enrolls with it any more (enrolled ones stay).
    Revoke {
        /// Token id (as `enroll-token list` prints it).
        id: String,
    },
}

/// How a kind of token is shown: one JSON object, `key value` fields, a table.
trait Shown: Sized {
    const NONE: &'static str;
    fn id(&self) -> &str;
    fn expires_unix_ns(&self) -> i64;
    fn json(&self) -> Value;
    fn fields(&self) -> Vec<(&'static str, String)>;
    fn table(items: &[Self]) -> Table;
}

impl Shown for ApiTokenInfo {
    const NONE: &'static str = "no API tokens";
    fn id(&self) -> &str {
        &self.token_id
    }
    fn expires_unix_ns(&self) -> i64 {
        self.expires_unix_ns
    }
    fn json(&self) -> Value {
        api_token_json(self)
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        api_token_fields(self)
    }
    fn table(items: &[Self]) -> Table {
        api_token_table(items)
    }
}

impl Shown for EnrollmentTokenInfo {
    const NONE: &'static str = "no enrollment tokens";
    fn id(&self) -> &str {
        &self.token_id
    }
    fn expires_unix_ns(&self) -> i64 {
        self.expires_unix_ns
    }
    fn json(&self) -> Value {
        enrollment_token_json(self)
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        enrollment_token_fields(self)
    }
    fn table(items: &[Self]) -> Table {
        enrollment_token_table(items)
    }
}

/// A new token: its secret, shown this once.
fn created<T: Shown>(json: bool, info: &T, secret: &str) -> Result<()> {
    if json {
        let mut v = info.json();
        v["token"] = json!(secret);
        out!("{v}");
    } else {
        print(&secret_lines(info.id(), secret, info.expires_unix_ns()))?;
        eprintln!("{SHOWN_ONCE}");
    }
    Ok(())
}

fn listed<T: Shown>(json: bool, items: &[T]) -> Result<()> {
    if json {
        for t in items {
            out!("{}", t.json());
        }
    } else if items.is_empty() {
        eprintln!("{}", T::NONE);
    } else {
        print(&T::table(items).lines())?;
    }
    Ok(())
}

fn one<T: Shown>(json: bool, t: &T) -> Result<()> {
    if json {
        out!("{}", t.json());
    } else {
        print(&fields(&t.fields()))?;
    }
    Ok(())
}

pub async fn token(api: &Api, cmd: TokenCommand, json: bool) -> Result<()> {
    let mut admin = api.admin();
    match cmd {
        TokenCommand::Create {
            role,
            name,
            expires,
        } => {
            let r = admin
                .create_api_token(CreateApiTokenRequest {
                    name,
                    role: Role::from(role) as i32,
                    expires_days: expires.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            created(json, &r.info.unwrap_or_default(), &r.token)
        }
        TokenCommand::List => {
            let r = admin
                .list_api_tokens(ListApiTokensRequest {})
                .await
                .map_err(rpc)?;
            listed(json, &r.into_inner().tokens)
        }
        TokenCommand::Revoke { id } => {
            let r = admin
                .revoke_api_token(RevokeApiTokenRequest { token_id: id })
                .await
                .map_err(rpc)?;
            one(json, &r.into_inner())
        }
    }
}

pub async fn enroll_token(api: &Api, cmd: EnrollTokenCommand, json: bool) -> Result<()> {
    let mut admin = api.admin();
    match cmd {
        EnrollTokenCommand::Create { hours } => {
            let r = admin
                .create_enrollment_token(CreateEnrollmentTokenRequest {
                    valid_hours: hours.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            created(json, &r.info.unwrap_or_default(), &r.token)
        }
        EnrollTokenCommand::List => {
            let r = admin
                .list_enrollment_tokens(ListEnrollmentTokensRequest {})
                .await
                .map_err(rpc)?;
            listed(json, &r.into_inner().tokens)
        }
        EnrollTokenCommand::Revoke { id } => {
            let r = admin
                .revoke_enrollment_token(RevokeEnrollmentTokenRequest { token_id: id })
                .await
                .map_err(rpc)?;
            one(json, &r.into_inner())
        }
    }
}

/// `token_id <id>`, `token <secret>`, `expires <time>`: one `key value` per line.
pub fn secret_lines(id: &str, secret: &str, expires_unix_ns: i64) -> Vec<String> {
    vec![
        format!("token_id {id}"),
        format!("token {secret}"),
        format!("expires {}", expiry(expires_unix_ns)),
    ]
}

pub fn api_token_table(tokens: &[ApiTokenInfo]) -> Table {
    let mut t = Table::new(&[
        "id",
        "name",
        "role",
        "created",
        "expires",
        "revoked",
        "created by",
    ]);
    for x in tokens {
        t.row(vec![
            x.token_id.clone(),
            x.name.clone(),
            role::name_of(x.role).into(),
            time_or_dash(x.created_unix_ns),
            expiry(x.expires_unix_ns),
            time_or_dash(x.revoked_unix_ns),
            x.created_by.clone(),
        ]);
    }
    t
}

pub fn api_token_fields(t: &ApiTokenInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Token", t.token_id.clone()),
        ("Name", t.name.clone()),
        ("Role", role::name_of(t.role).into()),
        ("Tenant", or_dash(&t.tenant_id)),
        ("Created", time_or_dash(t.created_unix_ns)),
        ("Created by", or_dash(&t.created_by)),
        ("Expires", expiry(t.expires_unix_ns)),
        ("Revoked", time_or_dash(t.revoked_unix_ns)),
    ]
}

pub fn api_token_json(t: &ApiTokenInfo) -> Value {
    json!({
        "token_id": t.token_id,
        "name": t.name,
        "role": role::name_of(t.role),
        "tenant_id": t.tenant_id,
        "created": time_json(t.created_unix_ns),
        "created_unix_ns": t.created_unix_ns,
        "expires": time_json(t.expires_unix_ns),
        "expires_unix_ns": t.expires_unix_ns,
        "revoked": time_json(t.revoked_unix_ns),
        "revoked_unix_ns": t.revoked_unix_ns,
        "created_by": t.created_by,
    })
}

pub fn enrollment_token_table(tokens: &[EnrollmentTokenInfo]) -> Table {
    let mut t = Table::new(&["id", "created", "expires", "revoked", "uses", "created by"]);
    for x in tokens {
        t.row(vec![
            x.token_id.clone(),
            time_or_dash(x.created_unix_ns),
            expiry(x.expires_unix_ns),
            time_or_dash(x.revoked_unix_ns),
            x.uses.to_string(),
            x.created_by.clone(),
        ]);
    }
    t
}

pub fn enrollment_token_fields(t: &EnrollmentTokenInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Token", t.token_id.clone()),
        ("Tenant", or_dash(&t.tenant_id)),
        ("Created", time_or_dash(t.created_unix_ns)),
        ("Created by", or_dash(&t.created_by)),
        ("Expires", expiry(t.expires_unix_ns)),
        ("Revoked", time_or_dash(t.revoked_unix_ns)),
        ("Devices enrolled", t.uses.to_string()),
    ]
}

pub fn enrollment_token_json(t: &EnrollmentTokenInfo) -> Value {
    json!({
        "token_id": t.token_id,
        "tenant_id": t.tenant_id,
        "created": time_json(t.created_unix_ns),
        "created_unix_ns": t.created_unix_ns,
        "expires": time_json(t.expires_unix_ns),
        "expires_unix_ns": t.expires_unix_ns,
        "revoked": time_json(t.revoked_unix_ns),
        "revoked_unix_ns": t.revoked_unix_ns,
        "uses": t.uses,
        "created_by": t.created_by,
    })
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000_000_000;

    fn api_token() -> ApiTokenInfo {
        ApiTokenInfo {
            token_id: "tok1".into(),
            name: "jane".into(),
            role: Role::ReadOnly as i32,
            tenant_id: "acme".into(),
            created_unix_ns: T,
            expires_unix_ns: 0,
            revoked_unix_ns: 0,
            created_by: "admin".into(),
        }
    }

    #[test]
    fn api_token_table_columns_and_zero_times() {
        let t = api_token_table(&[api_token()]);
        assert_eq!(
            t.header(),
            [
                "id",
                "name",
                "role",
                "created",
                "expires",
                "revoked",
                "created by"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "tok1",
                "jane",
                "read-only",
                "2023-11-14T22:13:20Z",
                "never",
                "-",
                "admin"
            ]
        );
    }

    #[test]
    fn api_token_json_names_the_role_and_nulls_zero_times() {
        let v = api_token_json(&api_token());
        assert_eq!(v["role"], "read-only");
        assert_eq!(v["expires"], Value::Null);
        assert_eq!(v["revoked"], Value::Null);
        assert_eq!(v["created"], "2023-11-14T22:13:20Z");
        for k in [
            "token_id",
            "name",
            "tenant_id",
            "created_by",
            "expires_unix_ns",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert!(v.get("token").is_none(), "a listed token has no secret");
    }

    #[test]
    fn enrollment_token_table_columns() {
        let t = enrollment_token_table(&[EnrollmentTokenInfo {
            token_id: "e1".into(),
            tenant_id: "acme".into(),
            created_unix_ns: T,
            expires_unix_ns: T + 3_600_000_000_000,
            revoked_unix_ns: T,
            uses: 4,
            created_by: "admin".into(),
        }]);
        assert_eq!(
            t.header(),
            ["id", "created", "expires", "revoked", "uses", "created by"]
        );
        assert_eq!(
            t.rows()[0],
            [
                "e1",
                "2023-11-14T22:13:20Z",
                "2023-11-14T23:13:20Z",
                "2023-11-14T22:13:20Z",
                "4",
                "admin"
            ]
        );
    }

    #[test]
    fn a_new_secret_is_printed_as_key_value_lines() {
        assert_eq!(
            secret_lines("tok1", "vgl_s", 0),
            ["token_id tok1", "token vgl_s", "expires never"]
        );
    }

    #[test]
    fn show_fields_use_dashes_for_missing_values() {
        let f = api_token_fields(&ApiTokenInfo {
            created_by: String::new(),
            ..api_token()
        });
        assert!(f.contains(&("Created by", "-".into())));
        assert!(f.contains(&("Expires", "never".into())));
    }
}
