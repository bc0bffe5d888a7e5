//! Background work: retention on a schedule, the audit logs' group commit,
//! and finishing data key rotations (also ones a restart interrupted).
//! [`Maintenance`] also lets tests and admin tools run a pass now.

use crate::Shared;
use crate::audit::Who;
use std::sync::Arc;
use std::time::Duration;

/// How often appended audit entries are made durable.
pub const AUDIT_FLUSH_EVERY: Duration = Duration::from_millis(200);

/// A handle on the server's background work.
#[derive(Clone)]
pub struct Maintenance {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance").finish_non_exhaustive()
    }
}

impl Maintenance {
    /// One retention pass over every served tenant, now (by the server's
    /// clock). Each tenant that lost data gets an audit entry. Returns
    /// (tenant, records removed, alerts removed).
    pub async fn enforce_retention(&self) -> Result<Vec<(String, u64, u64)>, crate::ServerError> {
        let shared = Arc::clone(&self.shared);
        let purged = tokio::task::spawn_blocking(move || shared.control.enforce_retention())
            .await
            .map_err(|e| crate::ServerError::Io(e.to_string()))??;
        let mut out = Vec::new();
        for (tenant, p) in purged {
            if p.records > 0 || p.alerts > 0 {
                let summary = format!(
                    "removed {} records and {} alerts older than the retention period",
                    p.records, p.alerts
                );
                let _ = self.shared.audit.write(
                    &Who::system(),
                    false,
                    Some(&tenant),
                    "Retention",
                    &summary,
                    "ok",
                );
            }
            out.push((tenant, p.records, p.alerts));
        }
        Ok(out)
    }

    /// Makes every audit entry appended so far durable.
    pub async fn flush_audit(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.audit.flush_all()).await;
    }
}

/// Re-seals a tenant's data under its new key in the background, then
/// destroys the old keys; audited in the tenant's log.
pub(crate) fn finish_rotation(shared: Arc<Shared>, tenant: String, version: u32) {
    tokio::spawn(async move {
        let s = Arc::clone(&shared);
        let t = tenant.clone();
        let r = tokio::task::spawn_blocking(move || {
            // Published rule sets first, and the record index rebuilt under
            // the new key: the older keys are destroyed next.
            s.rules.sets.reseal(&s.control, &t)?;
            s.control
                .tenant_store(&t)?
                .rebuild_index(&crate::indexer::derive)?;
            s.control.finish_data_key_rotation(&t)
        })
        .await;
        let (summary, result) = match r {
            Ok(Ok(n)) => (
                format!("re-sealed {n} values under data key {version}; older keys destroyed"),
                "ok".to_owned(),
            ),
            Ok(Err(e)) => (String::new(), format!("failed: {e}")),
            Err(e) => (String::new(), format!("failed: {e}")),
        };
        tracing::info!(tenant = %tenant, %summary, %result, "Data key rotation finished");
        let _ = shared.audit.write(
            &Who::system(),
            false,
            Some(&tenant),
            "DataKeyRotation",
            &summary,
            &result,
        );
    });
}

/// Starts the background tasks; abort the handles when serving ends (they
/// hold the store open).
pub(crate) fn start(shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let m = Maintenance {
        shared: Arc::clone(shared),
    };
    let every = Duration::from_secs(shared.config.retention_check_seconds);
    let retention = m.clone();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = retention.enforce_retention().await {
                tracing::error!(error = %e, "Retention pass failed");
            }
        }
    }));
    let sizes = m.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let shared = Arc::clone(&sizes.shared);
            let _ = tokio::task::spawn_blocking(move || {
                for t in shared.control.tenants().unwrap_or_default() {
                    crate::metrics::store_bytes(&t.id, shared.control.tenant_size(&t));
                    // Only a tenant whose region this server serves has a store here.
                    if shared.control.tenant_dir(&t).is_ok()
                        && let Ok(c) = shared
                            .control
                            .tenant_store(&t.id)
                            .and_then(|s| s.level_counts())
                    {
                        crate::metrics::records_held(&t.id, c.required_records, c.optional_records);
                    }
                }
            })
            .await;
        }
    }));
    let flusher = m.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(AUDIT_FLUSH_EVERY);
        loop {
            tick.tick().await;
            flusher.flush_audit().await;
        }
    }));
    // Alerts stored before alert postings existed get theirs (once; cheap
    // after), and every tenant's record indexer catches up.
    let indexer = Arc::clone(shared);
    tasks.push(tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || {
            for t in indexer.control.tenants().unwrap_or_default() {
                let Ok(store) = indexer.control.tenant_store(&t.id) else {
                    continue;
                };
                indexer.committers.indexers.poke(&t.id, &store);
                match store.index_unindexed_alerts(&crate::alert::Aggregate { window_ns: 0 }) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tenant = %t.id, alerts = n, "Alerts indexed for filtered listing"),
                    Err(e) => tracing::warn!(tenant = %t.id, error = %e, "Indexing older alerts failed"),
                }
            }
        })
        .await;
    }));
    match shared.control.tenants_mid_rotation() {
        Ok(ids) => {
            for id in ids {
                let version = shared
                    .control
                    .tenant(&id)
                    .ok()
                    .flatten()
                    .map_or(0, |t| t.data_key_version());
                tracing::info!(tenant = %id, "Resuming an interrupted data key rotation");
                finish_rotation(Arc::clone(shared), id, version);
            }
        }
        Err(e) => tracing::error!(error = %e, "Cannot list interrupted rotations"),
    }
    tasks
}
