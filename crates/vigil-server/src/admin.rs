//! The Admin service: a tenant admin's people (API tokens with roles),
//! sensors (enrollment tokens, devices), settings (retention, data key) and
//! operators' access requests. Everything acts in the caller's own tenant.

use crate::auth::{ADMINS, Access, Caller, READERS};
use crate::operator::{grant_proto, tenant_info};
use crate::{Shared, internal, store_status};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use vigil_proto::v1::{
    self as pb, AccessGrant, ApiTokenInfo, CreateApiTokenRequest, CreateApiTokenResponse,
    CreateEnrollmentTokenRequest, CreateEnrollmentTokenResponse, DecideAccessGrantRequest,
    DeviceInfo, EnrollmentTokenInfo, GetSettingsRequest, ListAccessGrantsRequest,
    ListAccessGrantsResponse, ListApiTokensRequest, ListApiTokensResponse, ListDevicesRequest,
    ListDevicesResponse, ListEnrollmentTokensRequest, ListEnrollmentTokensResponse,
    RevokeApiTokenRequest, RevokeDeviceRequest, RevokeEnrollmentTokenRequest, RotateDataKeyRequest,
    SetRetentionRequest, TenantInfo, admin_server::Admin,
};
use vigil_store::{ApiToken, Decision, EnrollmentToken, Role};

pub(crate) struct AdminService {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) fn role_proto(r: Role) -> pb::Role {
    match r {
        Role::Operator => pb::Role::Operator,
        Role::Admin => pb::Role::Admin,
        Role::Analyst => pb::Role::Analyst,
        Role::Auditor => pb::Role::Auditor,
        Role::ReadOnly => pb::Role::ReadOnly,
    }
}

pub(crate) fn token_proto(t: &ApiToken) -> ApiTokenInfo {
    ApiTokenInfo {
        token_id: t.id.clone(),
        name: t.name.clone(),
        role: role_proto(t.role) as i32,
        tenant_id: t.tenant_id.clone().unwrap_or_default(),
        created_unix_ns: t.created_unix_ns,
        expires_unix_ns: t.expires_unix_ns,
        revoked_unix_ns: t.revoked_unix_ns,
        created_by: t.created_by.clone(),
    }
}

fn enrollment_proto(t: &EnrollmentToken) -> EnrollmentTokenInfo {
    EnrollmentTokenInfo {
        token_id: t.id.clone(),
        tenant_id: t.tenant_id.clone(),
        created_unix_ns: t.created_unix_ns,
        expires_unix_ns: t.expires_unix_ns,
        revoked_unix_ns: t.revoked_unix_ns,
        uses: t.uses,
        created_by: t.created_by.clone(),
    }
}

impl AdminService {
    fn store(&self, tenant: &str) -> Result<std::sync::Arc<dyn vigil_store::TenantData>, Status> {
        self.shared
            .control
            .tenant_store(tenant)
            .map_err(store_status)
    }

    fn admin<T>(&self, req: &Request<T>, method: &'static str) -> Result<Caller, Status> {
        self.shared.authorize(req, method, Access::Tenant(ADMINS))
    }

    fn settings(&self, tenant: &str) -> Result<TenantInfo, Status> {
        let rec = self
            .shared
            .control
            .tenant(tenant)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("tenant deleted"))?;
        tenant_info(&self.shared, &rec)
    }

    fn decide(
        &self,
        req: Request<DecideAccessGrantRequest>,
        method: &'static str,
        decision: Decision,
    ) -> Result<Response<AccessGrant>, Status> {
        let caller = self.admin(&req, method)?;
        let id = req.into_inner().grant_id;
        let tenant = caller.tenant()?.to_owned();
        let result = self
            .shared
            .control
            .decide_grant(&tenant, &id, decision, &caller.token.name)
            .map_err(store_status)
            .map(|g| Response::new(grant_proto(&g, self.shared.control.now())));
        if decision == Decision::Revoke && result.is_ok() {
            self.shared.live.end(
                |o| o.grant.as_deref() == Some(id.as_str()),
                "access grant revoked",
            );
        }
        let result = self
            .shared
            .audited(&caller, method, None, &format!("grant_id={id}"), result);
        // The operator's own log hears of decisions on their requests.
        if result.is_ok() {
            let who = caller.who();
            let _ = self.shared.audit.write(
                &who,
                true,
                None,
                method,
                &format!("tenant_id={tenant} grant_id={id}"),
                "ok",
            );
        }
        result
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_settings(
        &self,
        req: Request<GetSettingsRequest>,
    ) -> Result<Response<TenantInfo>, Status> {
        const M: &str = "Admin/GetSettings";
        let caller = self.admin(&req, M)?;
        let result = self.settings(caller.tenant()?).map(Response::new);
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn set_retention(
        &self,
        req: Request<SetRetentionRequest>,
    ) -> Result<Response<TenantInfo>, Status> {
        const M: &str = "Admin/SetRetention";
        let caller = self.admin(&req, M)?;
        let days = req.into_inner().retention_days;
        let result = self
            .shared
            .control
            .set_retention(caller.tenant()?, days)
            .map_err(store_status)
            .and_then(|rec| tenant_info(&self.shared, &rec))
            .map(Response::new);
        self.shared
            .audited(&caller, M, None, &format!("retention_days={days}"), result)
    }

    async fn rotate_data_key(
        &self,
        req: Request<RotateDataKeyRequest>,
    ) -> Result<Response<TenantInfo>, Status> {
        const M: &str = "Admin/RotateDataKey";
        let caller = self.admin(&req, M)?;
        let tenant = caller.tenant()?.to_owned();
        let shared = Arc::clone(&self.shared);
        let t = tenant.clone();
        let result = tokio::task::spawn_blocking(move || shared.control.rotate_data_key(&t))
            .await
            .map_err(internal)
            .and_then(|r| r.map_err(store_status));
        if let Ok(version) = &result {
            crate::maintenance::finish_rotation(Arc::clone(&self.shared), tenant.clone(), *version);
        }
        let result = result
            .and_then(|_| self.settings(&tenant))
            .map(Response::new);
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn create_api_token(
        &self,
        req: Request<CreateApiTokenRequest>,
    ) -> Result<Response<CreateApiTokenResponse>, Status> {
        const M: &str = "Admin/CreateApiToken";
        let caller = self.admin(&req, M)?;
        let r = req.into_inner();
        let role = match pb::Role::try_from(r.role) {
            Ok(pb::Role::Admin) => Ok(Role::Admin),
            Ok(pb::Role::Analyst) => Ok(Role::Analyst),
            Ok(pb::Role::Auditor) => Ok(Role::Auditor),
            Ok(pb::Role::ReadOnly) => Ok(Role::ReadOnly),
            _ => Err(Status::invalid_argument(
                "role must be admin, analyst, auditor or read-only",
            )),
        };
        let summary = format!(
            "name={:?} role={} expires_days={}",
            r.name,
            role.as_ref().map_or("invalid", |r| r.name()),
            r.expires_days
        );
        let now = self.shared.control.now();
        let expires = if r.expires_days == 0 {
            0
        } else {
            now.saturating_add(i64::from(r.expires_days).saturating_mul(86_400_000_000_000))
        };
        let result = role.and_then(|role| {
            self.shared
                .control
                .create_api_token(
                    caller.tenant.as_deref(),
                    role,
                    &r.name,
                    expires,
                    &caller.token.name,
                )
                .map_err(store_status)
                .map(|(token, info)| {
                    Response::new(CreateApiTokenResponse {
                        token,
                        info: Some(token_proto(&info)),
                    })
                })
        });
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn list_api_tokens(
        &self,
        req: Request<ListApiTokensRequest>,
    ) -> Result<Response<ListApiTokensResponse>, Status> {
        const M: &str = "Admin/ListApiTokens";
        let caller = self.admin(&req, M)?;
        let result = self
            .shared
            .control
            .api_tokens(caller.tenant.as_deref())
            .map_err(internal)
            .map(|v| {
                Response::new(ListApiTokensResponse {
                    tokens: v.iter().map(token_proto).collect(),
                })
            });
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn revoke_api_token(
        &self,
        req: Request<RevokeApiTokenRequest>,
    ) -> Result<Response<ApiTokenInfo>, Status> {
        const M: &str = "Admin/RevokeApiToken";
        let caller = self.admin(&req, M)?;
        let id = req.into_inner().token_id;
        let result = self
            .shared
            .control
            .revoke_api_token(caller.tenant.as_deref(), &id)
            .map_err(store_status);
        if result.is_ok() {
            self.shared.live.end(
                |o| o.token.as_deref() == Some(id.as_str()),
                "API token revoked",
            );
        }
        let result = result.map(|t| Response::new(token_proto(&t)));
        self.shared
            .audited(&caller, M, None, &format!("token_id={id}"), result)
    }

    async fn create_enrollment_token(
        &self,
        req: Request<CreateEnrollmentTokenRequest>,
    ) -> Result<Response<CreateEnrollmentTokenResponse>, Status> {
        const M: &str = "Admin/CreateEnrollmentToken";
        let caller = self.admin(&req, M)?;
        let hours = match req.into_inner().valid_hours {
            0 => 24,
            h => h,
        };
        let result = if hours > 720 {
            Err(Status::invalid_argument(
                "valid_hours must be between 1 and 720",
            ))
        } else {
            self.shared
                .control
                .create_enrollment_token(
                    caller.tenant()?,
                    Duration::from_secs(u64::from(hours) * 3600),
                    &caller.token.name,
                )
                .map_err(store_status)
                .map(|(token, info)| {
                    Response::new(CreateEnrollmentTokenResponse {
                        token,
                        info: Some(enrollment_proto(&info)),
                    })
                })
        };
        self.shared
            .audited(&caller, M, None, &format!("valid_hours={hours}"), result)
    }

    async fn list_enrollment_tokens(
        &self,
        req: Request<ListEnrollmentTokensRequest>,
    ) -> Result<Response<ListEnrollmentTokensResponse>, Status> {
        const M: &str = "Admin/ListEnrollmentTokens";
        let caller = self.admin(&req, M)?;
        let result = self
            .shared
            .control
            .enrollment_tokens(caller.tenant()?)
            .map_err(internal)
            .map(|v| {
                Response::new(ListEnrollmentTokensResponse {
                    tokens: v.iter().map(enrollment_proto).collect(),
                })
            });
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn revoke_enrollment_token(
        &self,
        req: Request<RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<EnrollmentTokenInfo>, Status> {
        const M: &str = "Admin/RevokeEnrollmentToken";
        let caller = self.admin(&req, M)?;
        let id = req.into_inner().token_id;
        let result = self
            .shared
            .control
            .revoke_enrollment_token(caller.tenant()?, &id)
            .map_err(store_status)
            .map(|t| Response::new(enrollment_proto(&t)));
        self.shared
            .audited(&caller, M, None, &format!("token_id={id}"), result)
    }

    async fn list_devices(
        &self,
        req: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        const M: &str = "Admin/ListDevices";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let result = self
            .shared
            .control
            .devices(caller.tenant()?)
            .map_err(internal)
            .and_then(|v| {
                let tenant = caller.tenant()?;
                let store = self.store(tenant)?;
                let running = crate::hunt::running(&self.shared, tenant)?;
                v.iter()
                    .map(|d| crate::hunt::device_info(&self.shared, store.as_ref(), &running, d))
                    .collect()
            })
            .map(|devices| Response::new(ListDevicesResponse { devices }));
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn revoke_device(
        &self,
        req: Request<RevokeDeviceRequest>,
    ) -> Result<Response<DeviceInfo>, Status> {
        const M: &str = "Admin/RevokeDevice";
        let caller = self.admin(&req, M)?;
        let id = req.into_inner().device_id;
        let result = self
            .shared
            .control
            .revoke_device(caller.tenant()?, &id)
            .map_err(store_status);
        if result.is_ok() {
            self.shared.live.end(
                |o| o.device.as_deref() == Some(id.as_str()),
                "device revoked",
            );
        }
        let result = result
            .and_then(|d| {
                let store = self.store(&d.tenant_id)?;
                let running = crate::hunt::running(&self.shared, &d.tenant_id)?;
                crate::hunt::device_info(&self.shared, store.as_ref(), &running, &d)
            })
            .map(Response::new);
        self.shared
            .audited(&caller, M, None, &format!("device_id={id}"), result)
    }

    async fn list_access_grants(
        &self,
        req: Request<ListAccessGrantsRequest>,
    ) -> Result<Response<ListAccessGrantsResponse>, Status> {
        const M: &str = "Admin/ListAccessGrants";
        let caller = self.admin(&req, M)?;
        let now = self.shared.control.now();
        let result = self
            .shared
            .control
            .grants(Some(caller.tenant()?), None)
            .map_err(internal)
            .map(|v| {
                Response::new(ListAccessGrantsResponse {
                    grants: v.iter().map(|g| grant_proto(g, now)).collect(),
                })
            });
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn approve_access_grant(
        &self,
        req: Request<DecideAccessGrantRequest>,
    ) -> Result<Response<AccessGrant>, Status> {
        self.decide(req, "Admin/ApproveAccessGrant", Decision::Approve)
    }

    async fn deny_access_grant(
        &self,
        req: Request<DecideAccessGrantRequest>,
    ) -> Result<Response<AccessGrant>, Status> {
        self.decide(req, "Admin/DenyAccessGrant", Decision::Deny)
    }

    async fn revoke_access_grant(
        &self,
        req: Request<DecideAccessGrantRequest>,
    ) -> Result<Response<AccessGrant>, Status> {
        self.decide(req, "Admin/RevokeAccessGrant", Decision::Revoke)
    }
}
