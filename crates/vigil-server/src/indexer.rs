//! The record indexer: one task per tenant that writes the postings of
//! newly stored chunks (`vigil_store::TenantStore::index_pending`) after
//! ingest has committed and acknowledged them, woken by each commit and
//! every few seconds. Ingest never waits for it; until it catches up,
//! lookups also open the chunks it has not reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use vigil_store::{StoreError, TenantData};

/// Chunks one indexing transaction takes at most.
const STEP: usize = 512;
/// How often an idle indexer looks anyway (after a restart, for instance).
const IDLE: Duration = Duration::from_secs(5);

struct Task {
    store: Weak<dyn TenantData>,
    wake: Arc<Notify>,
}

/// The indexers, one per tenant store, started on first use.
#[derive(Default)]
pub(crate) struct Indexers {
    tasks: Mutex<HashMap<String, Task>>,
}

impl std::fmt::Debug for Indexers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexers").finish_non_exhaustive()
    }
}

impl Indexers {
    /// Tells `tenant`'s indexer there is work (starting it when it is not
    /// running, or when the tenant's store was replaced).
    pub(crate) fn poke(&self, tenant: &str, store: &Arc<dyn TenantData>) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let fresh = tasks
            .get(tenant)
            .is_none_or(|t| t.store.upgrade().is_none_or(|s| !Arc::ptr_eq(&s, store)));
        if fresh {
            let wake = Arc::new(Notify::new());
            tokio::spawn(run(
                tenant.to_owned(),
                Arc::downgrade(store),
                Arc::clone(&wake),
            ));
            tasks.insert(
                tenant.to_owned(),
                Task {
                    store: Arc::downgrade(store),
                    wake,
                },
            );
        }
        if let Some(t) = tasks.get(tenant) {
            t.wake.notify_one();
        }
    }
}

/// What the index keeps of stored record bytes.
pub(crate) fn derive(bytes: &[u8]) -> Option<vigil_store::RecordIndex> {
    use prost::Message;
    vigil_proto::v1::Record::decode(bytes)
        .ok()
        .map(|r| crate::hunt::index::record_index(&r))
}

async fn run(tenant: String, store: Weak<dyn TenantData>, wake: Arc<Notify>) {
    loop {
        loop {
            // Held only while indexing: a stopped server's store closes.
            let Some(s) = store.upgrade() else { return };
            let step = tokio::task::spawn_blocking(move || {
                let n = s.index_pending(&derive, STEP)?;
                Ok::<_, StoreError>((n, s.index_backlog()?))
            })
            .await;
            if let Ok(Ok((_, left))) = &step {
                crate::metrics::index_backlog(&tenant, *left);
            }
            match step.map(|r| r.map(|(n, _)| n)) {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(StoreError::UnknownTenant(_))) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Indexing failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(IDLE) => {}
        }
    }
}
