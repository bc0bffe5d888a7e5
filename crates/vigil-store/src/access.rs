//! Who may do what: people's API tokens (with a role), sensors' enrollment
//! tokens, enrolled devices, and operators' access grants. Secrets are stored
//! only as SHA-256 digests; each has a public id to list and revoke it by.

use crate::control::{ControlStore, all, decode, encode, get, put, update};
use crate::{StoreError, new_id, new_secret, token_digest};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

pub(crate) const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
pub(crate) const ENROLLMENT_TOKENS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("enrollment_tokens");
pub(crate) const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
pub(crate) const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");

/// Longest an operator's access grant may last.
pub const MAX_GRANT_MINUTES: u32 = 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the deployment; reads no tenant data except under a grant.
    Operator,
    Admin,
    Analyst,
    Auditor,
    ReadOnly,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::ReadOnly => "read-only",
        }
    }
}

/// A person's (or a script's) API token: a role, and the tenant it acts in
/// (none for the operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub tenant_id: Option<String>,
    pub role: Role,
    pub name: String,
    pub created_unix_ns: i64,
    /// 0: never.
    pub expires_unix_ns: i64,
    /// 0: not revoked.
    pub revoked_unix_ns: i64,
    pub created_by: String,
}

/// What presenting an API token yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(ApiToken),
    Expired(ApiToken),
    Revoked(ApiToken),
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub id: String,
    pub tenant_id: String,
    pub created_unix_ns: i64,
    pub expires_unix_ns: i64,
    pub revoked_unix_ns: i64,
    pub uses: u32,
    pub created_by: String,
}

/// What presenting an enrollment token yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Tenant(String),
    Expired,
    Revoked,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: String,
    pub tenant_id: String,
    pub hostname: String,
    pub enrolled_unix_ns: i64,
    pub revoked: bool,
    #[serde(default)]
    pub revoked_unix_ns: i64,
    /// The device certificate's public key (an uncompressed SEC1 P-256
    /// point): what verifies the offline bundles the device signs. Empty for
    /// a device enrolled before it was kept, until its next stream.
    #[serde(default, with = "hex_bytes")]
    pub public_key: Vec<u8>,
}

/// Bytes as a hex string in the JSON rows.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Pending,
    Approved,
    Denied,
    Revoked,
}

/// An operator's time-limited access to one tenant's data, approved by
/// that tenant's admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub tenant_id: String,
    pub operator_token_id: String,
    pub operator_name: String,
    pub reason: String,
    pub duration_minutes: u32,
    pub requested_unix_ns: i64,
    pub state: GrantState,
    pub decided_by: String,
    pub decided_unix_ns: i64,
    pub expires_unix_ns: i64,
}

impl Grant {
    /// `pending`, `approved`, `denied`, `revoked`, or `expired` (approved, past its end).
    pub fn state_at(&self, now: i64) -> &'static str {
        match self.state {
            GrantState::Pending => "pending",
            GrantState::Approved if now >= self.expires_unix_ns => "expired",
            GrantState::Approved => "approved",
            GrantState::Denied => "denied",
            GrantState::Revoked => "revoked",
        }
    }

    pub fn active_at(&self, now: i64) -> bool {
        self.state == GrantState::Approved && now < self.expires_unix_ns
    }
}

/// What an admin does with a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    Revoke,
}

fn short_id(prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}{}", &new_id()?[..12]))
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), StoreError> {
    if s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{field} must be 1 to {max} printable characters"
        )));
    }
    Ok(())
}

/// Rows of a tenant being deleted: tokens, devices, grants.
pub(crate) fn remove_tenant_rows(tx: &WriteTransaction, tenant: &str) -> Result<(), StoreError> {
    fn sweep<T: for<'de> Deserialize<'de>>(
        tx: &WriteTransaction,
        table: TableDefinition<&str, &[u8]>,
        owned: impl Fn(&T) -> bool,
    ) -> Result<(), StoreError> {
        let mut t = tx.open_table(table)?;
        let mut gone = Vec::new();
        for r in t.iter()? {
            let (k, v) = r?;
            if owned(&decode::<T>(redb::TableHandle::name(&table), v.value())?) {
                gone.push(k.value().to_owned());
            }
        }
        for k in gone {
            t.remove(k.as_str())?;
        }
        Ok(())
    }
    sweep(tx, API_TOKENS, |t: &ApiToken| {
        t.tenant_id.as_deref() == Some(tenant)
    })?;
    sweep(tx, ENROLLMENT_TOKENS, |t: &EnrollmentToken| {
        t.tenant_id == tenant
    })?;
    sweep(tx, DEVICES, |d: &DeviceRecord| d.tenant_id == tenant)?;
    sweep(tx, GRANTS, |g: &Grant| g.tenant_id == tenant)?;
    Ok(())
}

impl ControlStore {
    fn require_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.tenant(tenant)?
            .map(|_| ())
            .ok_or_else(|| StoreError::UnknownTenant(tenant.to_owned()))
    }

    /// Creates an API token. Operator tokens have no tenant; every other role
    /// needs one. Returns the secret (shown once) and what is stored.
    pub fn create_api_token(
        &self,
        tenant: Option<&str>,
        role: Role,
        name: &str,
        expires_unix_ns: i64,
        created_by: &str,
    ) -> Result<(String, ApiToken), StoreError> {
        check_text("name", name, 128)?;
        match (tenant, role) {
            (Some(_), Role::Operator) => {
                return Err(StoreError::Invalid(
                    "an operator token belongs to no tenant".into(),
                ));
            }
            (None, r) if r != Role::Operator => {
                return Err(StoreError::Invalid(format!(
                    "a {} token needs a tenant",
                    r.name()
                )));
            }
            (Some(t), _) => self.require_tenant(t)?,
            (None, _) => {}
        }
        let secret = new_secret("vgl_api")?;
        let info = ApiToken {
            id: short_id("tok_")?,
            tenant_id: tenant.map(str::to_owned),
            role,
            name: name.to_owned(),
            created_unix_ns: self.now(),
            expires_unix_ns,
            revoked_unix_ns: 0,
            created_by: created_by.to_owned(),
        };
        put(&self.db, API_TOKENS, &token_digest(&secret), &info)?;
        Ok((secret, info))
    }

    /// Looks a presented secret up.
    pub fn check_api_token(&self, secret: &str) -> Result<TokenCheck, StoreError> {
        let now = self.now();
        Ok(
            match get::<ApiToken>(&self.db, API_TOKENS, &token_digest(secret))? {
                None => TokenCheck::Unknown,
                Some(t) if t.revoked_unix_ns != 0 => TokenCheck::Revoked(t),
                Some(t) if t.expires_unix_ns != 0 && t.expires_unix_ns <= now => {
                    TokenCheck::Expired(t)
                }
                Some(t) => TokenCheck::Valid(t),
            },
        )
    }

    /// A tenant's tokens, or the operators' (`None`).
    pub fn api_tokens(&self, tenant: Option<&str>) -> Result<Vec<ApiToken>, StoreError> {
        let mut v: Vec<ApiToken> = all(&self.db, API_TOKENS)?;
        v.retain(|t| t.tenant_id.as_deref() == tenant);
        v.sort_by_key(|t| t.created_unix_ns);
        Ok(v)
    }

    /// Revokes a token of `tenant` (or an operator token, `None`) by id.
    pub fn revoke_api_token(&self, tenant: Option<&str>, id: &str) -> Result<ApiToken, StoreError> {
        let now = self.now();
        self.update_where(
            API_TOKENS,
            |t: &ApiToken| t.id == id && t.tenant_id.as_deref() == tenant,
            |t| {
                if t.revoked_unix_ns == 0 {
                    t.revoked_unix_ns = now;
                }
            },
        )?
        .ok_or_else(|| StoreError::NotFound(format!("token {id}")))
    }

    /// Finds the one row `pick` selects and changes it, in one transaction.
    fn update_where<T: Serialize + for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        pick: impl Fn(&T) -> bool,
        change: impl FnOnce(&mut T),
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_write()?;
        let out = {
            let mut t = tx.open_table(table)?;
            let mut found = None;
            for r in t.iter()? {
                let (k, v) = r?;
                let row: T = decode(redb::TableHandle::name(&table), v.value())?;
                if pick(&row) {
                    found = Some((k.value().to_owned(), row));
                    break;
                }
            }
            match found {
                None => None,
                Some((k, mut row)) => {
                    change(&mut row);
                    t.insert(k.as_str(), encode(&row)?.as_slice())?;
                    Some(row)
                }
            }
        };
        tx.commit()?;
        Ok(out)
    }

    /// Creates an enrollment token for `tenant`'s sensors, valid for `ttl`.
    pub fn create_enrollment_token(
        &self,
        tenant: &str,
        ttl: std::time::Duration,
        created_by: &str,
    ) -> Result<(String, EnrollmentToken), StoreError> {
        self.require_tenant(tenant)?;
        let secret = new_secret("vgl_enroll")?;
        let now = self.now();
        let ttl_ns = i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX);
        let rec = EnrollmentToken {
            id: short_id("enr_")?,
            tenant_id: tenant.to_owned(),
            created_unix_ns: now,
            expires_unix_ns: now.saturating_add(ttl_ns),
            revoked_unix_ns: 0,
            uses: 0,
            created_by: created_by.to_owned(),
        };
        put(&self.db, ENROLLMENT_TOKENS, &token_digest(&secret), &rec)?;
        Ok((secret, rec))
    }

    pub fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentToken>, StoreError> {
        let mut v: Vec<EnrollmentToken> = all(&self.db, ENROLLMENT_TOKENS)?;
        v.retain(|t| t.tenant_id == tenant);
        v.sort_by_key(|t| t.created_unix_ns);
        Ok(v)
    }

    pub fn revoke_enrollment_token(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<EnrollmentToken, StoreError> {
        let now = self.now();
        self.update_where(
            ENROLLMENT_TOKENS,
            |t: &EnrollmentToken| t.id == id && t.tenant_id == tenant,
            |t| {
                if t.revoked_unix_ns == 0 {
                    t.revoked_unix_ns = now;
                }
            },
        )?
        .ok_or_else(|| StoreError::NotFound(format!("enrollment token {id}")))
    }

    /// Presents an enrollment token; a valid one counts a use.
    pub fn redeem_enrollment_token(&self, secret: &str) -> Result<Redeemed, StoreError> {
        let now = self.now();
        let mut outcome = Redeemed::Unknown;
        update(
            &self.db,
            ENROLLMENT_TOKENS,
            &token_digest(secret),
            |t: &mut EnrollmentToken| {
                outcome = if t.revoked_unix_ns != 0 {
                    Redeemed::Revoked
                } else if t.expires_unix_ns <= now {
                    Redeemed::Expired
                } else {
                    t.uses = t.uses.saturating_add(1);
                    Redeemed::Tenant(t.tenant_id.clone())
                };
                Ok(())
            },
        )?;
        Ok(outcome)
    }

    pub fn put_device(&self, rec: &DeviceRecord) -> Result<(), StoreError> {
        crate::check_id(&rec.device_id)?;
        put(&self.db, DEVICES, &rec.device_id, rec)
    }

    pub fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        get(&self.db, DEVICES, device_id)
    }

    pub fn devices(&self, tenant: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut v: Vec<DeviceRecord> = all(&self.db, DEVICES)?;
        v.retain(|d| d.tenant_id == tenant);
        v.sort_by_key(|d| d.enrolled_unix_ns);
        Ok(v)
    }

    /// Keeps the public key of a device enrolled before keys were kept (read
    /// from the certificate it streams with). A key already kept stays.
    pub fn set_device_public_key(&self, device_id: &str, key: &[u8]) -> Result<(), StoreError> {
        update(&self.db, DEVICES, device_id, |d: &mut DeviceRecord| {
            if d.public_key.is_empty() {
                d.public_key = key.to_vec();
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Revokes a device of `tenant`: its certificate is refused from now on.
    pub fn revoke_device(&self, tenant: &str, device_id: &str) -> Result<DeviceRecord, StoreError> {
        let now = self.now();
        let mut found = false;
        let rec = update(&self.db, DEVICES, device_id, |d: &mut DeviceRecord| {
            if d.tenant_id == tenant {
                found = true;
                if !d.revoked {
                    d.revoked = true;
                    d.revoked_unix_ns = now;
                }
            }
            Ok(())
        })?;
        match rec {
            Some(d) if found => Ok(d),
            // Another tenant's device is indistinguishable from a missing one.
            _ => Err(StoreError::NotFound(format!("device {device_id}"))),
        }
    }

    /// An operator asks for access to a tenant's data; pending until an admin decides.
    pub fn request_grant(
        &self,
        tenant: &str,
        operator: &ApiToken,
        reason: &str,
        minutes: u32,
    ) -> Result<Grant, StoreError> {
        self.require_tenant(tenant)?;
        check_text("reason", reason, 512)?;
        if !(1..=MAX_GRANT_MINUTES).contains(&minutes) {
            return Err(StoreError::Invalid(format!(
                "duration_minutes must be between 1 and {MAX_GRANT_MINUTES}"
            )));
        }
        let g = Grant {
            id: short_id("grant_")?,
            tenant_id: tenant.to_owned(),
            operator_token_id: operator.id.clone(),
            operator_name: operator.name.clone(),
            reason: reason.to_owned(),
            duration_minutes: minutes,
            requested_unix_ns: self.now(),
            state: GrantState::Pending,
            decided_by: String::new(),
            decided_unix_ns: 0,
            expires_unix_ns: 0,
        };
        put(&self.db, GRANTS, &g.id, &g)?;
        Ok(g)
    }

    /// Grants of a tenant, and/or asked by an operator token; newest first.
    pub fn grants(
        &self,
        tenant: Option<&str>,
        operator_token_id: Option<&str>,
    ) -> Result<Vec<Grant>, StoreError> {
        let mut v: Vec<Grant> = all(&self.db, GRANTS)?;
        v.retain(|g| {
            tenant.is_none_or(|t| g.tenant_id == t)
                && operator_token_id.is_none_or(|o| g.operator_token_id == o)
        });
        v.sort_by_key(|g| std::cmp::Reverse(g.requested_unix_ns));
        Ok(v)
    }

    /// A tenant admin approves, denies or revokes a grant of their tenant.
    pub fn decide_grant(
        &self,
        tenant: &str,
        grant_id: &str,
        decision: Decision,
        by: &str,
    ) -> Result<Grant, StoreError> {
        let now = self.now();
        let mut refused = None;
        let g = update(&self.db, GRANTS, grant_id, |g: &mut Grant| {
            if g.tenant_id != tenant {
                refused = Some(StoreError::NotFound(format!("grant {grant_id}")));
                return Ok(());
            }
            match (decision, g.state_at(now)) {
                (Decision::Approve | Decision::Deny, "pending") => {
                    g.state = if decision == Decision::Approve {
                        GrantState::Approved
                    } else {
                        GrantState::Denied
                    };
                    g.decided_by = by.to_owned();
                    g.decided_unix_ns = now;
                    if decision == Decision::Approve {
                        g.expires_unix_ns =
                            now.saturating_add(i64::from(g.duration_minutes) * 60_000_000_000);
                    }
                }
                (Decision::Revoke, "approved") => {
                    g.state = GrantState::Revoked;
                    g.decided_by = by.to_owned();
                    g.decided_unix_ns = now;
                }
                (_, state) => {
                    refused = Some(StoreError::Invalid(format!("grant {grant_id} is {state}")));
                }
            }
            Ok(())
        })?;
        if let Some(e) = refused {
            return Err(e);
        }
        g.ok_or_else(|| StoreError::NotFound(format!("grant {grant_id}")))
    }

    /// The approved, unexpired grant letting `operator_token_id` into `tenant`.
    pub fn active_grant(
        &self,
        operator_token_id: &str,
        tenant: &str,
    ) -> Result<Option<Grant>, StoreError> {
        let now = self.now();
        Ok(self
            .grants(Some(tenant), Some(operator_token_id))?
            .into_iter()
            .find(|g| g.active_at(now)))
    }
}
