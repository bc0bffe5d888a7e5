//! The Hunt service, for analysts: search over a tenant's stored records,
//! process trees, file prevalence, the devices with their latest host details
//! and health, and a live stream of records as they are stored. Bearer token
//! of the tenant (admin, analyst, read-only; an operator only under a grant);
//! every call is audited with the shape of what it asked, never the values.
//!
//! Records stay sealed; what finds them is the store's index (`index.rs`
//! says what each record is indexed under). Everything here reads through
//! `vigil_store::TenantData`.

mod filter;
pub(crate) mod index;
mod tree;

pub(crate) use filter::Filter;
pub(crate) use tree::process_tree;

use crate::auth::{Access, READERS};
use crate::live::Owners;
use crate::{Shared, internal};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use vigil_proto::v1::{
    Device, DeviceInfo, DeviceSighting, FilePrevalenceRequest, FilePrevalenceResponse,
    GetDeviceRequest, GetProcessTreeRequest, HostInfo, ListHuntDevicesRequest,
    ListHuntDevicesResponse, ProcessRef, ProcessTree, Record, SearchEventsRequest,
    SearchEventsResponse, SensorHealth, StoredRecord, hunt_server::Hunt, record::Payload,
};
use vigil_store::{DeviceRecord, TenantData};

pub(crate) struct HuntService {
    pub(crate) shared: Arc<Shared>,
}

/// Records per page of a search.
const PAGE: usize = 500;

/// A record as stored, for live watchers.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) device: Arc<str>,
    pub(crate) record: Arc<Record>,
}

/// Per-tenant broadcast of stored records (`WatchEvents`).
pub(crate) type EventBus = crate::live::Bus<Stored>;

/// The process a record is about: the one started or ended, or the one
/// that acted (vigil-evaluate's view, which leaves exits out, plus exits).
pub(crate) fn acting_process(payload: &Payload) -> Option<ProcessRef> {
    match payload {
        Payload::ProcessExit(e) => Some(ProcessRef {
            guid: e.guid.clone(),
            pid: e.pid,
            ..Default::default()
        }),
        other => vigil_evaluate::acting_process(other),
    }
}

/// What the audit log says of a search: its shape, not its values.
fn search_summary(r: &SearchEventsRequest) -> String {
    let fields: Vec<String> = r
        .conditions
        .iter()
        .map(|c| format!("{}:{}", c.field.chars().take(64).collect::<String>(), c.op))
        .collect();
    format!(
        "device_id={:?} kind={:?} since={} until={} conditions=[{}] limit={}",
        r.device_id,
        r.kind.chars().take(32).collect::<String>(),
        r.since_unix_ns,
        r.until_unix_ns,
        fields.join(","),
        r.limit
    )
}

/// The `DeviceInfo` of a device record: what the control store, the live
/// registry and the tenant's store say of it. `running` is the rule versions
/// the tenant's sensors report ([`crate::rules`]), read once per listing.
pub(crate) fn device_info(
    shared: &Shared,
    store: &dyn TenantData,
    running: &HashMap<String, String>,
    d: &DeviceRecord,
) -> Result<DeviceInfo, Status> {
    let (streams, last) = shared.live.device(&d.device_id);
    Ok(DeviceInfo {
        device_id: d.device_id.clone(),
        hostname: d.hostname.clone(),
        enrolled_unix_ns: d.enrolled_unix_ns,
        revoked_unix_ns: d.revoked_unix_ns,
        connected: streams > 0,
        last_seen_unix_ns: last,
        stored_through: store.high_water(&d.device_id).map_err(internal)?,
        rules_version: running.get(&d.device_id).cloned().unwrap_or_default(),
    })
}

/// The tenant's sensors' reported rule versions.
pub(crate) fn running(shared: &Shared, tenant: &str) -> Result<HashMap<String, String>, Status> {
    Ok(shared
        .rules
        .sets
        .running(&shared.control, tenant)
        .map_err(internal)?
        .into_iter()
        .collect())
}

/// A device with its latest host details and health.
pub(crate) fn device(
    shared: &Shared,
    store: &dyn TenantData,
    running: &HashMap<String, String>,
    d: &DeviceRecord,
) -> Result<Device, Status> {
    let info = device_info(shared, store, running, d)?;
    let latest = |kind| -> Result<Option<(i64, Payload)>, Status> {
        Ok(store
            .latest(&d.device_id, kind)
            .map_err(internal)?
            .and_then(|(t, bytes)| Some((t, Record::decode(bytes.as_slice()).ok()?.payload?))))
    };
    let (host, host_unix_ns): (Option<HostInfo>, i64) = match latest(index::HOST)? {
        Some((t, Payload::Host(h))) => (Some(h), t),
        _ => (None, 0),
    };
    let (health, health_unix_ns): (Option<SensorHealth>, i64) = match latest(index::HEALTH)? {
        Some((t, Payload::Health(h))) => (Some(h), t),
        _ => (None, 0),
    };
    let lost = health.as_ref().map_or(0, |h| {
        h.dropped.values().fold(0u64, |a, b| a.saturating_add(*b))
    });
    Ok(Device {
        info: Some(info),
        host,
        host_unix_ns,
        health,
        health_unix_ns,
        lost,
    })
}

impl HuntService {
    fn store(&self, tenant: &str) -> Result<Arc<dyn TenantData>, Status> {
        self.shared
            .control
            .tenant_store(tenant)
            .map_err(crate::store_status)
    }

    /// Device id → hostname, for the tenant's devices.
    fn hostnames(&self, tenant: &str) -> Result<HashMap<String, String>, Status> {
        Ok(self
            .shared
            .control
            .devices(tenant)
            .map_err(internal)?
            .into_iter()
            .map(|d| (d.device_id, d.hostname))
            .collect())
    }

    fn search(
        &self,
        tenant: &str,
        req: &SearchEventsRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<SearchEventsResponse, Status>>, Status> {
        let filter = Filter::compile(req)?;
        let store = self.store(tenant)?;
        let names = self.hostnames(tenant)?;
        let limit = req.limit as usize;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut page = Vec::new();
            let mut sent = 0usize;
            let mut gone = false;
            // Pages go out as they fill (the receiver's pace holds the scan);
            // the last one says how many chunks the search opened.
            let flush = |page: &mut Vec<StoredRecord>, chunks: u64| {
                let out = SearchEventsResponse {
                    records: std::mem::take(page),
                    chunks_scanned: chunks,
                };
                tx.blocking_send(Ok(out)).is_ok()
            };
            let result = store.scan(&filter.scan(), &mut |device, _, bytes| {
                let Ok(r) = Record::decode(bytes) else {
                    return true;
                };
                if !filter.matches(device, &r, true) {
                    return true;
                }
                page.push(StoredRecord {
                    device_id: device.to_owned(),
                    hostname: names.get(device).cloned().unwrap_or_default(),
                    record: Some(r),
                });
                sent += 1;
                if page.len() >= PAGE && !flush(&mut page, 0) {
                    gone = true;
                    return false;
                }
                limit == 0 || sent < limit
            });
            match result {
                Ok(stats) if !gone => {
                    flush(&mut page, stats.chunks);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(internal(e)));
                }
            }
        });
        Ok(rx)
    }
}

type PageStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<SearchEventsResponse, Status>> + Send>,
>;
type RecordStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<StoredRecord, Status>> + Send>>;

#[tonic::async_trait]
impl Hunt for HuntService {
    type SearchEventsStream = PageStream;

    async fn search_events(
        &self,
        req: Request<SearchEventsRequest>,
    ) -> Result<Response<PageStream>, Status> {
        const M: &str = "Hunt/SearchEvents";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let req = req.into_inner();
        let result = self.search(&tenant, &req).map(|rx| {
            Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as PageStream)
        });
        self.shared
            .audited(&caller, M, None, &search_summary(&req), result)
    }

    async fn get_process_tree(
        &self,
        req: Request<GetProcessTreeRequest>,
    ) -> Result<Response<ProcessTree>, Status> {
        const M: &str = "Hunt/GetProcessTree";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let req = req.into_inner();
        let summary = format!("max_events={}", req.max_events);
        let result = async {
            if req.guid.is_empty() || req.guid.len() > 128 {
                return Err(Status::invalid_argument("malformed process guid"));
            }
            let store = self.store(&tenant)?;
            let names = self.hostnames(&tenant)?;
            let tree = tokio::task::spawn_blocking(move || {
                process_tree(store.as_ref(), &req.guid, req.max_events)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("no records of that process"))?;
            let hostname = names.get(&tree.device_id).cloned().unwrap_or_default();
            Ok(Response::new(ProcessTree { hostname, ..tree }))
        }
        .await;
        self.shared.audited(&caller, M, None, &summary, result)
    }

    async fn file_prevalence(
        &self,
        req: Request<FilePrevalenceRequest>,
    ) -> Result<Response<FilePrevalenceResponse>, Status> {
        const M: &str = "Hunt/FilePrevalence";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let q = req.into_inner().hash_or_path;
        let result = async {
            let hex = q.len() == 64 && q.bytes().all(|b| b.is_ascii_hexdigit());
            let terms: Vec<(index::Term, &str)> = if hex {
                vec![
                    (index::Term::Sha256, "sha256"),
                    (index::Term::Blake3, "blake3"),
                ]
            } else if q.starts_with('/') && q.len() <= 4096 {
                vec![(index::Term::Path, "path")]
            } else {
                return Err(Status::invalid_argument(
                    "expected a SHA-256 or BLAKE3 hash (64 hex digits) or an absolute path",
                ));
            };
            let value = if hex {
                q.to_ascii_lowercase()
            } else {
                q.clone()
            };
            let store = self.store(&tenant)?;
            let names = self.hostnames(&tenant)?;
            let found = tokio::task::spawn_blocking(move || {
                for (term, name) in terms {
                    let s = store.sightings(&term.material(&value), &crate::indexer::derive)?;
                    if !s.is_empty() {
                        return Ok((name, s));
                    }
                }
                Ok::<_, vigil_store::StoreError>(("", Vec::new()))
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            let devices = found
                .1
                .into_iter()
                .map(|s| DeviceSighting {
                    hostname: names.get(&s.device).cloned().unwrap_or_default(),
                    device_id: s.device,
                    first_seen_unix_ns: s.first_ns,
                    last_seen_unix_ns: s.last_ns,
                    count: s.count,
                })
                .collect();
            Ok(Response::new(FilePrevalenceResponse {
                matched_as: found.0.to_owned(),
                devices,
            }))
        }
        .await;
        let kind = if q.starts_with('/') { "path" } else { "hash" };
        self.shared
            .audited(&caller, M, None, &format!("by={kind}"), result)
    }

    async fn list_devices(
        &self,
        req: Request<ListHuntDevicesRequest>,
    ) -> Result<Response<ListHuntDevicesResponse>, Status> {
        const M: &str = "Hunt/ListDevices";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let shared = Arc::clone(&self.shared);
        let store = self.store(&tenant);
        let result = async {
            let store = store?;
            tokio::task::spawn_blocking(move || {
                let running = running(&shared, &tenant)?;
                let devices = shared
                    .control
                    .devices(&tenant)
                    .map_err(internal)?
                    .iter()
                    .map(|d| device(&shared, store.as_ref(), &running, d))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Response::new(ListHuntDevicesResponse { devices }))
            })
            .await
            .map_err(internal)?
        }
        .await;
        self.shared.audited(&caller, M, None, "", result)
    }

    async fn get_device(&self, req: Request<GetDeviceRequest>) -> Result<Response<Device>, Status> {
        const M: &str = "Hunt/GetDevice";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let id = req.into_inner().device_id;
        let summary = format!("device_id={:?}", id.chars().take(128).collect::<String>());
        let shared = Arc::clone(&self.shared);
        let store = self.store(&tenant);
        let result = async {
            let store = store?;
            tokio::task::spawn_blocking(move || {
                // Another tenant's device is indistinguishable from a missing one.
                let d = shared
                    .control
                    .device(&id)
                    .map_err(internal)?
                    .filter(|d| d.tenant_id == tenant)
                    .ok_or_else(|| Status::not_found("no such device"))?;
                let running = running(&shared, &tenant)?;
                device(&shared, store.as_ref(), &running, &d).map(Response::new)
            })
            .await
            .map_err(internal)?
        }
        .await;
        self.shared.audited(&caller, M, None, &summary, result)
    }

    type WatchEventsStream = RecordStream;

    async fn watch_events(
        &self,
        req: Request<SearchEventsRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        const M: &str = "Hunt/WatchEvents";
        let caller = self.shared.authorize(&req, M, Access::Tenant(READERS))?;
        let tenant = caller.tenant()?.to_owned();
        let req = req.into_inner();
        let summary = search_summary(&req);
        let result =
            Filter::compile(&req).and_then(|filter| {
                let names = self.hostnames(&tenant)?;
                let rx = self.shared.events.subscribe(&tenant);
                let owners = Owners {
                    tenant: tenant.clone(),
                    device: None,
                    token: Some(caller.token.id.clone()),
                    grant: caller.grant.clone(),
                };
                let records = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |r| {
                use tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged;
                match r {
                    Ok(s) if filter.matches(&s.device, &s.record, false) => Some(Ok(StoredRecord {
                        hostname: names.get(&*s.device).cloned().unwrap_or_default(),
                        device_id: s.device.to_string(),
                        record: Some((*s.record).clone()),
                    })),
                    Ok(_) => None,
                    Err(Lagged(n)) => Some(Err(Status::resource_exhausted(format!(
                        "the watcher fell {n} records behind and was cut off: narrow its filters, \
                         or use SearchEvents for what it missed"
                    )))),
                }
            });
                Ok(Response::new(crate::live::until_revoked(
                    Arc::clone(&self.shared),
                    owners,
                    records,
                )))
            });
        self.shared.audited(&caller, M, None, &summary, result)
    }
}
