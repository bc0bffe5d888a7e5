//! Group commit of sensor batches: one committer task per tenant takes every
//! batch the tenant's streams have waiting and commits them in one store
//! transaction — one fsync for all — then answers each stream. A stream still
//! acknowledges a batch only after the transaction that holds it is durable;
//! what changes is that many batches share that transaction's cost.
//!
//! Order: a stream's batches reach the committer in the order it received
//! them and are committed in that order (one queue, one transaction at a
//! time). Once a batch of a stream fails, none of that stream's later batches
//! is committed: stored, they would raise the device's high-water mark over
//! the failed batch's records, which the sensor re-sends and which would then
//! be skipped as duplicates.

use crate::store_status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use vigil_store::{BatchOutcome, NewAlert, NewBatch, TenantData};

/// Batches waiting for a tenant's committer, at most; a stream waits to submit beyond it.
const QUEUE: usize = 256;
/// One transaction takes at most this many batches, or batches until it
/// holds this many records: it stays a bounded amount of work and memory.
const MAX_GROUP_BATCHES: usize = 64;
const MAX_GROUP_RECORDS: usize = 100_000;

/// A batch ready to be stored, and where its outcome goes.
pub(crate) struct Pending {
    pub(crate) store: Arc<dyn TenantData>,
    pub(crate) device: String,
    pub(crate) received_ns: i64,
    /// (sequence, the record as the sensor encoded it).
    pub(crate) records: Vec<(u64, prost::bytes::Bytes)>,
    /// What the index keeps of each record, in the same order.
    pub(crate) index: Vec<vigil_store::RecordIndex>,
    pub(crate) alerts: Vec<NewAlert>,
    /// The alert aggregation window (0: never aggregate).
    pub(crate) aggregation_ns: i64,
    pub(crate) stream: Arc<StreamFailed>,
    pub(crate) done: oneshot::Sender<Result<BatchOutcome, Status>>,
}

/// Set when a batch of the stream failed: its later batches are refused.
#[derive(Debug, Default)]
pub(crate) struct StreamFailed(AtomicBool);

impl StreamFailed {
    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The committers, one per tenant, started on first use.
#[derive(Debug, Default)]
pub(crate) struct Committers {
    queues: Mutex<HashMap<String, mpsc::Sender<Pending>>>,
    /// Woken after each commit: they index what it stored.
    pub(crate) indexers: Arc<crate::indexer::Indexers>,
}

impl Committers {
    /// Queues `p` for its tenant's next transaction; its outcome arrives on `p.done`.
    pub(crate) async fn submit(&self, tenant: &str, p: Pending) -> Result<(), Status> {
        let mut p = p;
        // A committer that stopped is replaced once.
        for _ in 0..2 {
            let queue = self.queue(tenant)?;
            match queue.send(p).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    p = back;
                    if let Ok(mut q) = self.queues.lock()
                        && q.get(tenant).is_some_and(|t| t.same_channel(&queue))
                    {
                        q.remove(tenant);
                    }
                }
            }
        }
        Err(Status::unavailable("the tenant's committer stopped"))
    }

    fn queue(&self, tenant: &str) -> Result<mpsc::Sender<Pending>, Status> {
        let mut q = self
            .queues
            .lock()
            .map_err(|_| Status::internal("committers poisoned"))?;
        Ok(q.entry(tenant.to_owned())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(rx, tenant.to_owned(), Arc::clone(&self.indexers)));
                tx
            })
            .clone())
    }

    /// Lets a deleted tenant's committer end once what it holds is answered.
    pub(crate) fn forget(&self, tenant: &str) {
        if let Ok(mut q) = self.queues.lock() {
            q.remove(tenant);
        }
    }
}

/// A committer: groups what is waiting, commits, answers; until every sender is gone.
async fn run(
    mut rx: mpsc::Receiver<Pending>,
    tenant: String,
    indexers: Arc<crate::indexer::Indexers>,
) {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut group = vec![first];
        let mut records = group[0].records.len();
        while group.len() < MAX_GROUP_BATCHES && records < MAX_GROUP_RECORDS {
            match rx.try_recv() {
                // A tenant deleted and created again has a new store: not in this transaction.
                Ok(p) if !Arc::ptr_eq(&p.store, &group[0].store) => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    records += p.records.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let (group, refused): (Vec<Pending>, Vec<Pending>) =
            group.into_iter().partition(|p| !p.stream.is_set());
        for p in refused {
            let _ = p.done.send(Err(Status::aborted(
                "an earlier batch of this stream was not stored",
            )));
        }
        let Some(store) = group.first().map(|p| Arc::clone(&p.store)) else {
            continue;
        };
        let streams: Vec<Arc<StreamFailed>> = group.iter().map(|p| Arc::clone(&p.stream)).collect();
        let committed = tokio::task::spawn_blocking(move || {
            let batches: Vec<NewBatch<'_, prost::bytes::Bytes>> = group
                .iter()
                .map(|p| NewBatch {
                    device: &p.device,
                    received_ns: p.received_ns,
                    records: &p.records,
                    index: &p.index,
                    alerts: &p.alerts,
                })
                .collect();
            let merge = crate::alert::Aggregate {
                window_ns: group.first().map_or(0, |p| p.aggregation_ns),
            };
            let outcome = store.commit_batches(&batches, &merge);
            (group, outcome)
        })
        .await;
        match committed {
            Ok((group, Ok(outcomes))) => {
                if let Some(p) = group.first() {
                    indexers.poke(&tenant, &p.store);
                }
                for (p, o) in group.into_iter().zip(outcomes) {
                    let _ = p.done.send(Ok(o));
                }
            }
            Ok((group, Err(e))) => {
                let status = store_status(e);
                for p in group {
                    p.stream.set();
                    let _ = p.done.send(Err(status.clone()));
                }
            }
            Err(e) => {
                // The waiters' senders went with the task: they see their channel closed.
                tracing::error!(error = %e, "Batch commit task failed");
                for s in streams {
                    s.set();
                }
            }
        }
    }
}
