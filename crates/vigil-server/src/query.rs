//! The Alerts service, for analysts. Every call is authenticated by a bearer
//! API token (admin, analyst, read-only; an operator only under a grant),
//! reads only the store of the caller's tenant, and is audited. Changing an
//! alert (`UpdateAlert`) is for admins and analysts only.

use crate::alert::Change;
use crate::auth::{ANALYSTS, Access, READERS};
use crate::live::Owners;
use crate::{Shared, internal};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use vigil_proto::v1::{
    Alert, AlertEvidence, GetAlertRequest, ListAlertsRequest, ListAlertsResponse, ProcessTree,
    RuleInfo, Severity, UpdateAlertRequest, WatchAlertsRequest, alerts_server::Alerts,
};

pub(crate) struct AlertsService {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) const DEFAULT_PAGE: u32 = 100;
pub(crate) const MAX_PAGE: u32 = 1000;

fn keep(req: &ListAlertsRequest, a: &Alert) -> bool {
    (req.min_severity == 0 || a.severity >= req.min_severity)
        && (req.status == 0 || a.status == req.status)
        && (req.rule_id.is_empty() || a.rule_id == req.rule_id)
        && (req.device_id.is_empty() || a.device_id == req.device_id)
        && (req.since_unix_ns == 0 || a.time_unix_ns >= req.since_unix_ns)
        && (req.until_unix_ns == 0 || a.time_unix_ns < req.until_unix_ns)
        && (req.assignee.is_empty() || a.assignee == req.assignee)
}

/// How far ahead of the server a device's clock may be for `since` to skip
/// alerts received before it.
const CLOCK_SLACK_NS: i64 = 86_400 * 1_000_000_000;

/// Alerts older than this are gone (the longest retention, and a day).
const OLDEST_NS: i64 = 181 * crate::alert::DAY_NS;

/// The index postings a list request reads: for each filter, the values an
/// alert must be indexed under one of (`vigil_store::AlertQuery::all_of`),
/// the most selective first — an assignee, a rule, a device, a window of at
/// most two days, a status, severities, a wider window. `keep` still checks
/// every filter exactly (time windows are looked up by hours and days).
fn postings(req: &ListAlertsRequest, now: i64) -> Vec<Vec<Vec<u8>>> {
    use crate::alert::{AlertTerm, DAY_NS, time_terms};
    let mut groups = Vec::new();
    if !req.assignee.is_empty() {
        groups.push(vec![AlertTerm::Assignee(&req.assignee).material()]);
    }
    if !req.rule_id.is_empty() {
        groups.push(vec![AlertTerm::Rule(&req.rule_id).material()]);
    }
    if !req.device_id.is_empty() {
        groups.push(vec![AlertTerm::Device(&req.device_id).material()]);
    }
    // Since alone is bounded by received time in the store (see `list`).
    let window = (req.until_unix_ns != 0).then(|| {
        let lo = match req.since_unix_ns {
            0 => now.saturating_sub(OLDEST_NS),
            s => s,
        };
        (lo, req.until_unix_ns)
    });
    let narrow = window.is_some_and(|(lo, hi)| hi.saturating_sub(lo) <= 2 * DAY_NS);
    let time = window.and_then(|(lo, hi)| time_terms(lo, hi, 400));
    if narrow && let Some(t) = &time {
        groups.push(t.clone());
    }
    if req.status != 0 {
        groups.push(vec![AlertTerm::Status(req.status).material()]);
    }
    if req.min_severity > Severity::Informational as i32 {
        groups.push(
            (req.min_severity..=Severity::Critical as i32)
                .map(|s| AlertTerm::Severity(s).material())
                .collect(),
        );
    }
    if !narrow && let Some(t) = time {
        groups.push(t);
    }
    groups
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<Alert, Status>> + Send>>;

#[tonic::async_trait]
impl Alerts for AlertsService {
    async fn list_alerts(
        &self,
        req: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        const M: &str = "Alerts/ListAlerts";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let req = req.into_inner();
        let summary = format!(
            "page_size={} page_token={:?} min_severity={} status={} rule_id={:?} device_id={:?} since={} until={} assignee=<{} chars>",
            req.page_size,
            req.page_token,
            req.min_severity,
            req.status,
            req.rule_id,
            req.device_id,
            req.since_unix_ns,
            req.until_unix_ns,
            req.assignee.chars().count()
        );
        let result = self.list(tenant, req).await;
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn get_alert(&self, req: Request<GetAlertRequest>) -> Result<Response<Alert>, Status> {
        const M: &str = "Alerts/GetAlert";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let id = req.into_inner().id;
        let summary = format!("id={id:?}");
        let result = self.get(tenant, id).await;
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn update_alert(
        &self,
        req: Request<UpdateAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        const M: &str = "Alerts/UpdateAlert";
        let caller = self.shared.authorize(&req, M, Access::Tenant(ANALYSTS))?;
        let tenant = caller.tenant()?.to_owned();
        let req = req.into_inner();
        let change = Change::from_request(&req);
        let summary = match &change {
            Ok(c) => format!("id={:?} {}", req.id, c.summary()),
            Err(_) => format!("id={:?} invalid", req.id),
        };
        let result = match change {
            Ok(c) => {
                self.update(tenant, req.id, c, caller.token.name.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        self.shared.audited(&caller, M, None, &summary, result)
    }

    type WatchAlertsStream = AlertStream;

    async fn watch_alerts(
        &self,
        req: Request<WatchAlertsRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        const M: &str = "Alerts/WatchAlerts";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let min = req.into_inner().min_severity;
        let rx = self.shared.alerts.subscribe(&tenant);
        let shared = Arc::clone(&self.shared);
        let owners = Owners {
            tenant,
            device: None,
            token: Some(caller.token.id.clone()),
            grant: caller.grant.clone(),
        };
        let alerts =
            tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |r| match r {
                Ok(a) if a.severity >= min => Some(Ok(a)),
                Ok(_) => None,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    Some(Err(Status::data_loss(format!(
                        "watcher fell behind; {n} alerts skipped (use ListAlerts)"
                    ))))
                }
            });
        // Ends the stream when its token, grant or tenant is revoked.
        let stream = crate::live::until_revoked(shared, owners, alerts);
        self.shared.audited(
            &caller,
            M,
            None,
            &format!("min_severity={min}"),
            Ok(Response::new(stream)),
        )
    }
}

impl AlertsService {
    async fn list(
        &self,
        tenant: String,
        req: ListAlertsRequest,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let size = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        if !req.page_token.is_empty() && (req.page_token.len() > 64 || !req.page_token.is_ascii()) {
            return Err(Status::invalid_argument("malformed page_token"));
        }
        let store = self.store(&tenant)?;
        let now = self.shared.control.now();
        let rows = tokio::task::spawn_blocking(move || {
            let all_of = postings(&req, now);
            let q = vigil_store::AlertQuery {
                before: (!req.page_token.is_empty()).then_some(req.page_token.as_str()),
                all_of: &all_of,
                // An alert is received after it happened: none received before
                // `since` qualifies (a day of slack for device clocks ahead).
                received_since_ns: (req.since_unix_ns != 0)
                    .then(|| req.since_unix_ns.saturating_sub(CLOCK_SLACK_NS)),
            };
            // One more than asked tells whether another page exists.
            store
                .alerts(&q, size + 1, &mut |bytes| {
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

    /// The caller's tenant's data.
    fn store(&self, tenant: &str) -> Result<Arc<dyn vigil_store::TenantData>, Status> {
        self.shared
            .control
            .tenant_store(tenant)
            .map_err(crate::store_status)
    }

    /// The same, for a call naming alert `id` (checked before the store is opened).
    fn store_for_alert(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Arc<dyn vigil_store::TenantData>, Status> {
        if id.is_empty() || id.len() > 64 {
            return Err(Status::invalid_argument("malformed alert id"));
        }
        self.store(tenant)
    }

    async fn update(
        &self,
        tenant: String,
        id: String,
        change: Change,
        author: String,
    ) -> Result<Response<Alert>, Status> {
        let store = self.store_for_alert(&tenant, &id)?;
        let now = self.shared.control.now();
        let (outcome, refusal) = tokio::task::spawn_blocking(move || {
            let mut refusal = None;
            // Read, change and re-seal in one write transaction: no lost update.
            let index = crate::alert::Aggregate { window_ns: 0 };
            let outcome = store.update_alert(
                &id,
                &mut |bytes| {
                    let mut a = match Alert::decode(bytes) {
                        Ok(a) => a,
                        Err(e) => {
                            refusal = Some(internal(e));
                            return None;
                        }
                    };
                    match change.apply(&mut a, &author, now) {
                        Ok(()) => Some(a.encode_to_vec()),
                        Err(s) => {
                            refusal = Some(s);
                            None
                        }
                    }
                },
                &index,
            );
            (outcome, refusal)
        })
        .await
        .map_err(internal)?;
        match outcome.map_err(internal)? {
            // Another tenant's id is indistinguishable from a missing one.
            vigil_store::AlertUpdate::Missing => Err(Status::not_found("no such alert")),
            vigil_store::AlertUpdate::Refused => {
                Err(refusal.unwrap_or_else(|| Status::internal("alert update refused")))
            }
            vigil_store::AlertUpdate::Updated(bytes) => Alert::decode(bytes.as_slice())
                .map(Response::new)
                .map_err(internal),
        }
    }

    async fn get(&self, tenant: String, id: String) -> Result<Response<Alert>, Status> {
        let store = self.store_for_alert(&tenant, &id)?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let bytes = store
                .alert(&id)
                .map_err(internal)?
                // Another tenant's id is indistinguishable from a missing one.
                .ok_or_else(|| Status::not_found("no such alert"))?;
            let mut a = Alert::decode(bytes.as_slice()).map_err(internal)?;
            a.evidence = Some(evidence(&shared, store.as_ref(), &tenant, &a)?);
            Ok(Response::new(a))
        })
        .await
        .map_err(internal)?
    }
}

/// Events per process in an alert's evidence (`GetProcessTree` gives more).
const EVIDENCE_EVENTS: u32 = 20;

/// What GetAlert adds to an alert, read now: the process tree around the
/// alerted process, the device as it is, and the rule.
fn evidence(
    shared: &Shared,
    store: &dyn vigil_store::TenantData,
    tenant: &str,
    a: &Alert,
) -> Result<AlertEvidence, Status> {
    let guid = a.process.as_ref().map_or("", |p| p.guid.as_str());
    let process_tree = if guid.is_empty() {
        None
    } else {
        crate::hunt::process_tree(store, guid, EVIDENCE_EVENTS)
            .map_err(internal)?
            .map(|t| ProcessTree {
                hostname: a.hostname.clone(),
                ..t
            })
    };
    let device = match shared.control.device(&a.device_id).map_err(internal)? {
        Some(d) if d.tenant_id == tenant => {
            let running = crate::hunt::running(shared, tenant)?;
            Some(crate::hunt::device(shared, store, &running, &d)?)
        }
        _ => None,
    };
    let rule = a.detection.as_ref().map(|d| RuleInfo {
        id: d.rule_id.clone(),
        title: d.rule_title.clone(),
        author: d.author.clone(),
        level: d.level.clone(),
        tags: d.tags.clone(),
        attack: crate::alert::attack_ids(&d.tags),
        references: d.references.clone(),
        description: d.description.clone(),
    });
    Ok(AlertEvidence {
        process_tree,
        device,
        rule,
    })
}

impl AlertsService {}
