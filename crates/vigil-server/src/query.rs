//! The Alerts service, for analysts. Every call is authenticated by a bearer
//! API token scoped to one tenant, reads only that tenant's store, and is
//! written to the audit log.

use crate::Shared;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use vigil_proto::v1::{
    Alert, GetAlertRequest, ListAlertsRequest, ListAlertsResponse, WatchAlertsRequest,
    alerts_server::Alerts,
};

pub(crate) struct AlertsService {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) const DEFAULT_PAGE: u32 = 100;
pub(crate) const MAX_PAGE: u32 = 1000;

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "Internal error");
    Status::internal("internal error")
}

/// The tenant an analyst's bearer token grants, and the token's name.
fn analyst<T>(shared: &Shared, req: &Request<T>, method: &str) -> Result<(String, String), Status> {
    let header = req
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    match shared.control.api_token(token.trim()).map_err(internal)? {
        Some(info) => {
            tracing::info!(target: "audit", tenant = %info.tenant_id, token = %info.name, method, peer = ?req.remote_addr(), "Analyst access");
            Ok((info.tenant_id, info.name))
        }
        None => {
            tracing::warn!(target: "audit", method, peer = ?req.remote_addr(), "Analyst access refused: invalid token");
            Err(Status::unauthenticated("invalid API token"))
        }
    }
}

fn keep(req: &ListAlertsRequest, a: &Alert) -> bool {
    (req.min_severity == 0 || a.severity >= req.min_severity)
        && (req.status == 0 || a.status == req.status)
        && (req.rule_id.is_empty() || a.rule_id == req.rule_id)
        && (req.device_id.is_empty() || a.device_id == req.device_id)
        && (req.since_unix_ns == 0 || a.time_unix_ns >= req.since_unix_ns)
        && (req.until_unix_ns == 0 || a.time_unix_ns < req.until_unix_ns)
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<Alert, Status>> + Send>>;

#[tonic::async_trait]
impl Alerts for AlertsService {
    async fn list_alerts(
        &self,
        req: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let (tenant, _) = analyst(&self.shared, &req, "ListAlerts")?;
        let req = req.into_inner();
        let size = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        if !req.page_token.is_empty() && (req.page_token.len() > 64 || !req.page_token.is_ascii()) {
            return Err(Status::invalid_argument("malformed page_token"));
        }
        let store = self
            .shared
            .control
            .tenant_store(&tenant)
            .map_err(internal)?;
        let rows = tokio::task::spawn_blocking(move || {
            let before = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
            // One more than asked tells whether another page exists.
            store
                .alerts(before, size + 1, |bytes| {
                    Alert::decode(bytes).is_ok_and(|a| keep(&req, &a))
                })
                .map(|rows| (rows, req))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let (mut rows, _) = rows;
        let more = rows.len() > size;
        rows.truncate(size);
        let alerts: Vec<Alert> = rows
            .iter()
            .filter_map(|(_, b)| Alert::decode(b.as_slice()).ok())
            .collect();
        let next_page_token = if more {
            rows.last().map(|r| r.0.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListAlertsResponse {
            alerts,
            next_page_token,
        }))
    }

    async fn get_alert(&self, req: Request<GetAlertRequest>) -> Result<Response<Alert>, Status> {
        let (tenant, _) = analyst(&self.shared, &req, "GetAlert")?;
        let id = req.into_inner().id;
        if id.is_empty() || id.len() > 64 {
            return Err(Status::invalid_argument("malformed alert id"));
        }
        let store = self
            .shared
            .control
            .tenant_store(&tenant)
            .map_err(internal)?;
        let bytes = tokio::task::spawn_blocking(move || store.alert(&id))
            .await
            .map_err(internal)?
            .map_err(internal)?
            // Another tenant's id is indistinguishable from a missing one.
            .ok_or_else(|| Status::not_found("no such alert"))?;
        Alert::decode(bytes.as_slice())
            .map(Response::new)
            .map_err(internal)
    }

    type WatchAlertsStream = AlertStream;

    async fn watch_alerts(
        &self,
        req: Request<WatchAlertsRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        let (tenant, _) = analyst(&self.shared, &req, "WatchAlerts")?;
        let min = req.into_inner().min_severity;
        let rx = self.shared.alerts.subscribe(&tenant);
        let stream =
            tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |r| match r {
                Ok(a) if a.severity >= min => Some(Ok(a)),
                Ok(_) => None,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    Some(Err(Status::data_loss(format!(
                        "watcher fell behind; {n} alerts skipped (use ListAlerts)"
                    ))))
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}
