//! What is connected right now, and the switches that end it: a revoked
//! device's stream, a revoked token's watch, a deleted tenant's everything.
//! Kept in memory; the control store is the authority on what is revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Set to the status a call must end with.
type EndSwitch = watch::Sender<Option<tonic::Status>>;

/// Who a long-lived call belongs to; revoking any of them ends it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Owners {
    pub(crate) tenant: String,
    pub(crate) device: Option<String>,
    pub(crate) token: Option<String>,
    /// The access grant an operator's call runs under.
    pub(crate) grant: Option<String>,
}

#[derive(Debug, Default)]
struct DeviceLive {
    streams: u32,
    last_seen_unix_ns: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Live {
    next: AtomicU64,
    /// Open long-lived calls: id → (owners, the switch that ends it).
    calls: Mutex<HashMap<u64, (Owners, EndSwitch)>>,
    devices: Mutex<HashMap<String, DeviceLive>>,
    tenants: Mutex<HashMap<String, i64>>,
}

/// An open call's registration; dropping it unregisters.
pub(crate) struct Registration<'a> {
    live: &'a Live,
    id: u64,
    device: Option<String>,
    /// Turns to `Some(status)` when the call must end.
    pub(crate) ended: watch::Receiver<Option<tonic::Status>>,
}

impl Registration<'_> {
    /// The status the call ends with (once `ended` changed).
    pub(crate) fn why(&self) -> tonic::Status {
        self.ended
            .borrow()
            .clone()
            .unwrap_or_else(|| tonic::Status::unavailable("ended by the server"))
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.live.calls.lock() {
            c.remove(&self.id);
        }
        if let Some(d) = &self.device
            && let Ok(mut m) = self.live.devices.lock()
            && let Some(e) = m.get_mut(d)
        {
            e.streams = e.streams.saturating_sub(1);
        }
    }
}

impl Live {
    pub(crate) fn register(&self, owners: Owners) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let device = owners.device.clone();
        if let Some(d) = &device
            && let Ok(mut m) = self.devices.lock()
        {
            m.entry(d.clone()).or_default().streams += 1;
        }
        if let Ok(mut c) = self.calls.lock() {
            c.insert(id, (owners, tx));
        }
        Registration {
            live: self,
            id,
            device,
            ended: rx,
        }
    }

    /// Ends every open call `pick` selects with PERMISSION_DENIED, telling
    /// it why (a revocation). Returns how many.
    pub(crate) fn end(&self, pick: impl Fn(&Owners) -> bool, why: &str) -> usize {
        self.end_with(pick, &tonic::Status::permission_denied(why))
    }

    /// Ends every open call with UNAVAILABLE: the server is stopping, and
    /// long-lived streams would otherwise hold its graceful shutdown open.
    /// Sensors reconnect; their unacknowledged batches are sent again.
    pub(crate) fn shutdown(&self) -> usize {
        self.end_with(
            |_| true,
            &tonic::Status::unavailable("the server is shutting down; reconnect later"),
        )
    }

    fn end_with(&self, pick: impl Fn(&Owners) -> bool, status: &tonic::Status) -> usize {
        let Ok(c) = self.calls.lock() else { return 0 };
        let mut n = 0;
        for (owners, tx) in c.values() {
            if pick(owners) {
                let _ = tx.send(Some(status.clone()));
                n += 1;
            }
        }
        n
    }

    pub(crate) fn saw(&self, tenant: &str, device: &str, now: i64) {
        if let Ok(mut m) = self.devices.lock() {
            m.entry(device.to_owned()).or_default().last_seen_unix_ns = now;
        }
        if let Ok(mut m) = self.tenants.lock() {
            m.insert(tenant.to_owned(), now);
        }
    }

    /// (open streams, last batch time) of a device since the server started.
    pub(crate) fn device(&self, device: &str) -> (u32, i64) {
        self.devices
            .lock()
            .ok()
            .and_then(|m| m.get(device).map(|d| (d.streams, d.last_seen_unix_ns)))
            .unwrap_or((0, 0))
    }

    pub(crate) fn tenant_last_ingest(&self, tenant: &str) -> i64 {
        self.tenants
            .lock()
            .ok()
            .and_then(|m| m.get(tenant).copied())
            .unwrap_or(0)
    }
}

/// A per-tenant broadcast (new alerts, stored records) to live watchers.
/// Publishing never waits: a watcher that falls more than the capacity
/// behind sees `Lagged` and is cut off by its stream.
#[derive(Debug)]
pub(crate) struct Bus<T> {
    channels: std::sync::Mutex<HashMap<String, tokio::sync::broadcast::Sender<T>>>,
}

impl<T> Default for Bus<T> {
    fn default() -> Self {
        Bus {
            channels: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// Items a watcher may be behind before it is cut off.
const BUS_CAPACITY: usize = 4096;

impl<T: Clone> Bus<T> {
    pub(crate) fn subscribe(&self, tenant: &str) -> tokio::sync::broadcast::Receiver<T> {
        let mut c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        c.entry(tenant.to_owned())
            .or_insert_with(|| tokio::sync::broadcast::channel(BUS_CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone watches `tenant` (spares building what nobody reads).
    pub(crate) fn watched(&self, tenant: &str) -> bool {
        let c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        c.get(tenant).is_some_and(|tx| tx.receiver_count() > 0)
    }

    pub(crate) fn publish(&self, tenant: &str, item: &T) {
        let c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = c.get(tenant) {
            let _ = tx.send(item.clone());
        }
    }
}

/// `inner`, until the call's owners are revoked: then one final
/// `PERMISSION_DENIED` naming why, and the end.
pub(crate) fn until_revoked<T: Send + 'static>(
    shared: std::sync::Arc<crate::Shared>,
    owners: Owners,
    inner: impl tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static,
) -> std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>> {
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let reg = shared.live.register(owners);
        let mut ended = reg.ended.clone();
        tokio::pin!(inner);
        loop {
            tokio::select! {
                item = inner.next() => match item {
                    // A status ends a gRPC stream: nothing follows an error.
                    Some(item) => {
                        let last = item.is_err();
                        if tx.send(item).await.is_err() || last { break }
                    }
                    None => break,
                },
                _ = ended.changed() => {
                    let _ = tx.send(Err(reg.why())).await;
                    break;
                }
                _ = tx.closed() => break,
            }
        }
        drop(reg);
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
