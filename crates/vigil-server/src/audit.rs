//! The audit trail: one hash-chained log per tenant (in the tenant's region,
//! erased with it) and one for the deployment. Operator calls land in the
//! deployment log and in the log of the tenant they touch; tenant users'
//! calls in their tenant's; refusals of unknown callers in the deployment's.
//! An entry is written before the call answers; a call whose entry cannot be
//! written fails (fail closed). Also the Audit service, which reads them.

use crate::auth::{Access, Caller};
use crate::{Shared, internal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};
use vigil_audit::{AuditLog, NewEntryRef};
use vigil_proto::v1::{
    AuditEntry, ListAuditEntriesRequest, ListAuditEntriesResponse, VerifyAuditLogRequest,
    VerifyAuditLogResponse, audit_server::Audit,
};
use vigil_store::{ControlStore, Role};

/// Who an entry is about.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    pub(crate) actor: String,
    pub(crate) actor_id: String,
    pub(crate) role: String,
    /// The tenant the actor belongs to (none: operator, anonymous).
    pub(crate) home_tenant: Option<String>,
    pub(crate) peer: String,
}

impl Who {
    pub(crate) fn anonymous(peer: &str) -> Who {
        Who {
            actor: "anonymous".into(),
            actor_id: String::new(),
            role: "none".into(),
            home_tenant: None,
            peer: peer.to_owned(),
        }
    }

    pub(crate) fn device(device: &str, tenant: &str, peer: &str) -> Who {
        Who {
            actor: format!("device {device}"),
            actor_id: device.to_owned(),
            role: "device".into(),
            home_tenant: Some(tenant.to_owned()),
            peer: peer.to_owned(),
        }
    }

    pub(crate) fn system() -> Who {
        Who {
            actor: "vigil-server".into(),
            actor_id: String::new(),
            role: "system".into(),
            home_tenant: None,
            peer: String::new(),
        }
    }
}

fn suppressed_summary(n: u64) -> String {
    format!(
        "{n} refused anonymous calls were not itemized (more than {ANONYMOUS_ENTRIES_PER_SECOND} a second)"
    )
}

enum Admit {
    Itemize,
    Suppress,
    /// Itemize, after an entry summing up this many suppressed ones.
    Summarize(u64),
}

pub(crate) fn result_text(r: Result<(), &Status>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// The open logs.
pub(crate) struct AuditLogs {
    control: Arc<ControlStore>,
    deployment: Arc<AuditLog>,
    tenants: Mutex<HashMap<String, Arc<AuditLog>>>,
    anonymous: Mutex<Budget>,
}

/// Refusals of callers nobody authenticated are itemized up to this many a
/// second; beyond that they are counted and summed up in one entry, so that
/// anyone who can reach the port cannot fill the disk through the audit log.
pub(crate) const ANONYMOUS_ENTRIES_PER_SECOND: u32 = 50;

#[derive(Debug, Default)]
struct Budget {
    second: i64,
    used: u32,
    suppressed: u64,
}

impl AuditLogs {
    pub(crate) fn open(control: Arc<ControlStore>) -> Result<AuditLogs, crate::ServerError> {
        let (path, key) = control.deployment_audit()?;
        let deployment = Arc::new(
            AuditLog::open(&path, &key).map_err(|e| crate::ServerError::Io(e.to_string()))?,
        );
        Ok(AuditLogs {
            control,
            deployment,
            tenants: Mutex::new(HashMap::new()),
            anonymous: Mutex::new(Budget::default()),
        })
    }

    pub(crate) fn deployment(&self) -> &Arc<AuditLog> {
        &self.deployment
    }

    /// A tenant's log, opened on first use. `None` for a tenant that does not
    /// exist (or whose region this server does not serve).
    pub(crate) fn tenant(&self, id: &str) -> Option<Arc<AuditLog>> {
        let mut open = self.tenants.lock().ok()?;
        if let Some(l) = open.get(id) {
            return Some(Arc::clone(l));
        }
        let path = self.control.tenant_audit_path(id).ok()?;
        let key = self.control.tenant_audit_key(id).ok()?;
        match AuditLog::open(&path, &key) {
            Ok(l) => {
                let l = Arc::new(l);
                open.insert(id.to_owned(), Arc::clone(&l));
                Some(l)
            }
            Err(e) => {
                tracing::error!(tenant = id, error = %e, "Cannot open the tenant's audit log");
                None
            }
        }
    }

    /// Closes a deleted tenant's log (its file goes with the tenant's).
    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut open) = self.tenants.lock() {
            open.remove(id);
        }
    }

    fn anonymous_budget(&self, now: i64) -> Admit {
        let Ok(mut b) = self.anonymous.lock() else {
            return Admit::Itemize;
        };
        let second = now.div_euclid(1_000_000_000);
        if second != b.second {
            b.second = second;
            b.used = 1;
            let n = std::mem::take(&mut b.suppressed);
            return if n > 0 {
                Admit::Summarize(n)
            } else {
                Admit::Itemize
            };
        }
        if b.used < ANONYMOUS_ENTRIES_PER_SECOND {
            b.used += 1;
            Admit::Itemize
        } else {
            b.suppressed += 1;
            Admit::Suppress
        }
    }

    /// Makes everything appended so far durable (group commit), after summing
    /// up anonymous refusals left unitemized in a second that has passed.
    pub(crate) fn flush_all(&self) {
        let now = self.control.now();
        let pending = self.anonymous.lock().ok().and_then(|mut b| {
            (b.suppressed > 0 && now.div_euclid(1_000_000_000) != b.second)
                .then(|| std::mem::take(&mut b.suppressed))
        });
        if let Some(n) = pending {
            let _ = self.write(
                &Who::system(),
                true,
                None,
                "Refusals",
                &suppressed_summary(n),
                "ok",
            );
        }
        let logs: Vec<Arc<AuditLog>> = self
            .tenants
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for l in std::iter::once(&self.deployment).chain(logs.iter()) {
            if let Err(e) = l.flush() {
                tracing::error!(log = %l.path().display(), error = %e, "Audit log flush failed");
            }
        }
    }

    /// Appends one entry to the deployment log (when `deployment`) and to
    /// `tenant`'s log (when given and it exists).
    pub(crate) fn write(
        &self,
        who: &Who,
        deployment: bool,
        tenant: Option<&str>,
        method: &str,
        summary: &str,
        result: &str,
    ) -> Result<(), Status> {
        let now = self.control.now();
        // Borrowed: an append on the request path allocates nothing.
        let entry = |tenant_id| NewEntryRef {
            time_unix_ns: now,
            actor: &who.actor,
            actor_id: &who.actor_id,
            role: &who.role,
            tenant_id,
            method,
            summary,
            result,
            peer: &who.peer,
        };
        if deployment {
            self.deployment
                .append_ref(&entry(tenant.unwrap_or("")))
                .map_err(internal)?;
        }
        if let Some(id) = tenant
            && let Some(log) = self.tenant(id)
        {
            log.append_ref(&entry(id)).map_err(internal)?;
        }
        Ok(())
    }
}

impl Shared {
    /// Audits a refused call: the deployment log always, and `tenant`'s.
    pub(crate) fn refused(
        &self,
        who: &Who,
        method: &str,
        tenant: Option<&str>,
        summary: &str,
        status: &Status,
        reason: &'static str,
    ) {
        tracing::warn!(target: "audit", actor = %who.actor, method, tenant, code = ?status.code(), message = status.message(), "Call refused");
        crate::metrics::refused(reason);
        if who.home_tenant.is_none() && who.actor_id.is_empty() && tenant.is_none() {
            match self.audit.anonymous_budget(self.control.now()) {
                Admit::Itemize => {}
                Admit::Suppress => return,
                Admit::Summarize(n) => {
                    let summary = suppressed_summary(n);
                    let _ =
                        self.audit
                            .write(&Who::system(), true, None, "Refusals", &summary, "ok");
                }
            }
        }
        let result = result_text(Err(status));
        if let Err(e) = self
            .audit
            .write(who, true, tenant, method, summary, &result)
        {
            tracing::error!(error = %e, "Audit write failed");
        }
        // The caller's own tenant hears of its members' refused calls too.
        if let Some(home) = who.home_tenant.as_deref()
            && Some(home) != tenant
            && let Err(e) = self
                .audit
                .write(who, false, Some(home), method, summary, &result)
        {
            tracing::error!(error = %e, "Audit write failed");
        }
    }

    /// Audits a completed call and returns its result — or, when the entry
    /// cannot be written, an error instead of the result.
    pub(crate) fn audited<T>(
        &self,
        caller: &Caller,
        method: &'static str,
        target_tenant: Option<&str>,
        summary: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let who = caller.who();
        let operator = caller.token.role == Role::Operator;
        let tenant = target_tenant.or(caller.tenant.as_deref());
        self.audit.write(
            &who,
            operator,
            tenant,
            method,
            summary,
            &result_text(result.as_ref().map(|_| ())),
        )?;
        crate::metrics::api_call(method, caller.started.elapsed().as_secs_f64());
        result
    }
}

fn to_proto(e: vigil_audit::Entry) -> AuditEntry {
    AuditEntry {
        seq: e.seq,
        time_unix_ns: e.time_unix_ns,
        actor: e.actor,
        actor_id: e.actor_id,
        role: e.role,
        tenant_id: e.tenant_id,
        method: e.method,
        summary: e.summary,
        result: e.result,
        peer: e.peer,
        prev: e.prev,
        mac: e.mac,
    }
}

pub(crate) struct AuditService {
    pub(crate) shared: Arc<Shared>,
}

impl AuditService {
    /// The log the caller may read: their tenant's, or the deployment's.
    fn log_of(&self, caller: &Caller) -> Result<Arc<AuditLog>, Status> {
        match &caller.tenant {
            None => Ok(Arc::clone(self.shared.audit.deployment())),
            Some(t) => self.shared.audit.tenant(t).ok_or_else(|| {
                Status::failed_precondition("the tenant's audit log is unavailable")
            }),
        }
    }
}

pub(crate) const MAX_AUDIT_PAGE: u32 = 1000;

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list_audit_entries(
        &self,
        req: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        const M: &str = "Audit/ListAuditEntries";
        let caller = self.shared.authorize(&req, M, Access::Audit)?;
        let r = req.into_inner();
        let summary = format!(
            "after_seq={} limit={} method={:?} actor={:?} refused_only={}",
            r.after_seq, r.limit, r.method, r.actor, r.refused_only
        );
        let log = self.log_of(&caller);
        let result = async {
            let log = log?;
            let limit = match r.limit {
                0 => 100,
                n => n.min(MAX_AUDIT_PAGE),
            } as usize;
            let entries = tokio::task::spawn_blocking(move || {
                log.list(r.after_seq, limit + 1, |e| {
                    (r.method.is_empty() || e.method == r.method)
                        && (r.actor.is_empty() || e.actor == r.actor || e.actor_id == r.actor)
                        && (!r.refused_only || e.result != "ok")
                })
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            let more = entries.len() > limit;
            let entries: Vec<AuditEntry> = entries.into_iter().take(limit).map(to_proto).collect();
            let next_after_seq = if more {
                entries.last().map_or(0, |e| e.seq)
            } else {
                0
            };
            Ok(Response::new(ListAuditEntriesResponse {
                entries,
                next_after_seq,
            }))
        }
        .await;
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn verify_audit_log(
        &self,
        req: Request<VerifyAuditLogRequest>,
    ) -> Result<Response<VerifyAuditLogResponse>, Status> {
        const M: &str = "Audit/VerifyAuditLog";
        let caller = self.shared.authorize(&req, M, Access::Audit)?;
        let log = self.log_of(&caller);
        let result = async {
            let log = log?;
            let name = caller
                .tenant
                .as_deref()
                .map_or("deployment".to_owned(), |t| format!("tenant {t}"));
            let report = tokio::task::spawn_blocking(move || log.verify())
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(Response::new(VerifyAuditLogResponse {
                ok: report.ok,
                entries: report.entries,
                first_bad_line: report.first_bad_line,
                reason: report.reason,
                log: name,
            }))
        }
        .await;
        self.shared.audited(&caller, M, None, "", result)
    }
}
