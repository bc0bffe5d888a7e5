//! The Operator service: tenants (create, list, show, delete), the master
//! key, and access requests. The operator sees tenants' health and size,
//! never their data.

use crate::auth::{Access, Caller};
use crate::{Shared, internal, store_status};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vigil_proto::v1::{
    AccessGrant, CreateTenantRequest, CreateTenantResponse, DeleteTenantRequest,
    DeleteTenantResponse, GetTenantRequest, ListAccessGrantsRequest, ListAccessGrantsResponse,
    ListTenantsRequest, ListTenantsResponse, RequestAccessRequest, RotateMasterKeyRequest,
    RotateMasterKeyResponse, TenantInfo, operator_server::Operator,
};
use vigil_store::{DEFAULT_RETENTION_DAYS, Grant, Role, TenantRecord};

pub(crate) struct OperatorService {
    pub(crate) shared: Arc<Shared>,
}

/// A tenant's settings, health and size.
pub(crate) fn tenant_info(shared: &Shared, rec: &TenantRecord) -> Result<TenantInfo, Status> {
    let devices = shared.control.devices(&rec.id).map_err(internal)?;
    let connected = devices
        .iter()
        .filter(|d| shared.live.device(&d.device_id).0 > 0)
        .count();
    Ok(TenantInfo {
        tenant_id: rec.id.clone(),
        name: rec.name.clone(),
        region: rec.region.clone(),
        retention_days: rec.retention_days,
        created_unix_ns: rec.created_unix_ns,
        devices: devices.len() as u32,
        devices_revoked: devices.iter().filter(|d| d.revoked).count() as u32,
        store_bytes: shared.control.tenant_size(rec),
        devices_connected: connected as u32,
        last_ingest_unix_ns: shared.live.tenant_last_ingest(&rec.id),
        data_key_version: rec.data_key_version(),
        data_key_versions_in_use: rec.data_key_versions(),
        served: shared.control.tenant_dir(rec).is_ok(),
    })
}

pub(crate) fn grant_proto(g: &Grant, now: i64) -> AccessGrant {
    AccessGrant {
        grant_id: g.id.clone(),
        tenant_id: g.tenant_id.clone(),
        operator_token_id: g.operator_token_id.clone(),
        operator_name: g.operator_name.clone(),
        reason: g.reason.clone(),
        duration_minutes: g.duration_minutes,
        requested_unix_ns: g.requested_unix_ns,
        state: g.state_at(now).to_owned(),
        decided_by: g.decided_by.clone(),
        decided_unix_ns: g.decided_unix_ns,
        expires_unix_ns: g.expires_unix_ns,
    }
}

impl OperatorService {
    fn tenant(&self, id: &str) -> Result<TenantRecord, Status> {
        match self.shared.control.tenant(id).map_err(internal)? {
            Some(t) => Ok(t),
            None => match self.shared.control.deleted_tenant(id).map_err(internal)? {
                Some(d) => Err(Status::not_found(format!(
                    "tenant {id} was deleted at {} ns",
                    d.deleted_unix_ns
                ))),
                None => Err(Status::not_found(format!("no tenant {id}"))),
            },
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(internal)?
    }
}

fn operator<T>(shared: &Shared, req: &Request<T>, method: &'static str) -> Result<Caller, Status> {
    shared.authorize(req, method, Access::Operator)
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn create_tenant(
        &self,
        req: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        const M: &str = "Operator/CreateTenant";
        let caller = operator(&self.shared, &req, M)?;
        let r = req.into_inner();
        let region = if r.region.is_empty() {
            match self.shared.control.regions() {
                [only] => only.name.clone(),
                _ => {
                    let s = Status::invalid_argument(format!(
                        "name a region: this server serves {}",
                        region_names(&self.shared)
                    ));
                    return self.shared.audited(&caller, M, None, "", Err(s));
                }
            }
        } else {
            r.region.clone()
        };
        let days = if r.retention_days == 0 {
            DEFAULT_RETENTION_DAYS
        } else {
            r.retention_days
        };
        let summary = format!("name={:?} region={region} retention_days={days}", r.name);
        let by = caller.token.name.clone();
        let result = self
            .blocking(move |shared| {
                let rec = shared
                    .control
                    .create_tenant(None, &r.name, &region, days)
                    .map_err(store_status)?;
                let (token, info) = shared
                    .control
                    .create_api_token(Some(&rec.id), Role::Admin, "first admin", 0, &by)
                    .map_err(store_status)?;
                Ok((rec, token, info))
            })
            .await;
        let target = result.as_ref().ok().map(|(rec, _, _)| rec.id.clone());
        let result = match result {
            Ok((rec, token, info)) => Ok(Response::new(CreateTenantResponse {
                tenant: Some(tenant_info(&self.shared, &rec)?),
                admin_token: token,
                admin_token_info: Some(crate::admin::token_proto(&info)),
            })),
            Err(s) => Err(s),
        };
        self.shared
            .audited(&caller, M, target.as_deref(), &summary, result)
    }

    async fn list_tenants(
        &self,
        req: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        const M: &str = "Operator/ListTenants";
        let caller = operator(&self.shared, &req, M)?;
        let result = self
            .blocking(|shared| {
                let tenants = shared
                    .control
                    .tenants()
                    .map_err(internal)?
                    .iter()
                    .map(|t| tenant_info(shared, t))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Response::new(ListTenantsResponse {
                    tenants,
                    regions: shared
                        .control
                        .regions()
                        .iter()
                        .map(|r| r.name.clone())
                        .collect(),
                }))
            })
            .await;
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn get_tenant(
        &self,
        req: Request<GetTenantRequest>,
    ) -> Result<Response<TenantInfo>, Status> {
        const M: &str = "Operator/GetTenant";
        let caller = operator(&self.shared, &req, M)?;
        let id = req.into_inner().tenant_id;
        let result = self
            .tenant(&id)
            .and_then(|t| tenant_info(&self.shared, &t))
            .map(Response::new);
        let target = result.is_ok().then_some(id.as_str());
        self.shared
            .audited(&caller, M, target, &format!("tenant_id={id}"), result)
    }

    async fn delete_tenant(
        &self,
        req: Request<DeleteTenantRequest>,
    ) -> Result<Response<DeleteTenantResponse>, Status> {
        const M: &str = "Operator/DeleteTenant";
        let caller = operator(&self.shared, &req, M)?;
        let r = req.into_inner();
        let summary = format!(
            "tenant_id={} confirm_name={:?}",
            r.tenant_id, r.confirm_name
        );
        let rec = match self.tenant(&r.tenant_id) {
            Ok(rec) if rec.name == r.confirm_name => rec,
            Ok(rec) => {
                let s = Status::failed_precondition(format!(
                    "confirm_name must repeat the tenant's name ({:?})",
                    rec.name
                ));
                return self.shared.audited(&caller, M, None, &summary, Err(s));
            }
            Err(s) => return self.shared.audited(&caller, M, None, &summary, Err(s)),
        };
        // Recorded in the tenant's log before that log is erased with it.
        self.shared
            .audited(&caller, M, Some(&rec.id), &summary, Ok(()))?;
        let id = rec.id.clone();
        self.shared.live.end(|o| o.tenant == id, "tenant deleted");
        self.shared.audit.forget(&id);
        let result = self
            .blocking(move |shared| shared.control.delete_tenant(&id).map_err(store_status))
            .await
            .map(|bytes| {
                Response::new(DeleteTenantResponse {
                    tenant_id: rec.id.clone(),
                    bytes_removed: bytes,
                })
            });
        self.shared.audit.forget(&rec.id);
        self.shared.committers.forget(&rec.id);
        self.shared.correlators.forget(&rec.id);
        // The tenant's log is gone: the outcome goes to the deployment log.
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn rotate_master_key(
        &self,
        req: Request<RotateMasterKeyRequest>,
    ) -> Result<Response<RotateMasterKeyResponse>, Status> {
        const M: &str = "Operator/RotateMasterKey";
        let caller = operator(&self.shared, &req, M)?;
        let result = self
            .blocking(|shared| shared.control.rotate_master_key().map_err(store_status))
            .await
            .map(|(new, old, n)| {
                Response::new(RotateMasterKeyResponse {
                    master_key_id: new,
                    retired_key_id: old,
                    tenants_rewrapped: n,
                })
            });
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn request_access(
        &self,
        req: Request<RequestAccessRequest>,
    ) -> Result<Response<AccessGrant>, Status> {
        const M: &str = "Operator/RequestAccess";
        let caller = operator(&self.shared, &req, M)?;
        let r = req.into_inner();
        let minutes = if r.duration_minutes == 0 {
            60
        } else {
            r.duration_minutes
        };
        let summary = format!(
            "tenant_id={} duration_minutes={minutes} reason={:?}",
            r.tenant_id, r.reason
        );
        let token = caller.token.clone();
        let result = self
            .shared
            .control
            .request_grant(&r.tenant_id, &token, &r.reason, minutes)
            .map_err(store_status)
            .map(|g| Response::new(grant_proto(&g, self.shared.control.now())));
        let target = result.is_ok().then_some(r.tenant_id.as_str());
        self.shared.audited(&caller, M, target, &summary, result)
    }

    async fn list_my_access_grants(
        &self,
        req: Request<ListAccessGrantsRequest>,
    ) -> Result<Response<ListAccessGrantsResponse>, Status> {
        const M: &str = "Operator/ListMyAccessGrants";
        let caller = operator(&self.shared, &req, M)?;
        let now = self.shared.control.now();
        let result = self
            .shared
            .control
            .grants(None, Some(&caller.token.id))
            .map_err(internal)
            .map(|v| {
                Response::new(ListAccessGrantsResponse {
                    grants: v.iter().map(|g| grant_proto(g, now)).collect(),
                })
            });
        self.shared.audited(&caller, M, None, "", result)
    }
}

fn region_names(shared: &Shared) -> String {
    shared
        .control
        .regions()
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
