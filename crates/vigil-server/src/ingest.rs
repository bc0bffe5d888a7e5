//! The Ingest service: enrollment (token → device certificate) and the record
//! stream (mutual TLS; tenant from the certificate, never from the payload).

use crate::admission::Held;
use crate::audit::{Who, result_text};
use crate::auth::peer_of;
use crate::commit::{Pending, StreamFailed};
use crate::live::Owners;
use crate::{Shared, alert, internal, store_status};
use prost::Message;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::v1::{
    Alert, BatchAck, EnrollRequest, EnrollResponse, RawRecordBatch, Record, WatchPolicyRequest,
    raw::ingest_server::Ingest, record::Payload,
};
use vigil_store::{BatchOutcome, DeviceRecord, Redeemed};

pub(crate) struct IngestService {
    pub(crate) shared: Arc<Shared>,
}

/// The authenticated device behind a request, from its verified certificate.
/// Every refusal is audited: in the deployment log, and in the log of each
/// tenant the certificate or the device record names.
pub(crate) fn device_of<T>(shared: &Shared, req: &Request<T>) -> Result<DeviceRecord, Status> {
    let peer = peer_of(req);
    let refuse = |who: &Who, tenants: &[&str], s: Status, reason: &'static str| {
        shared.refused(who, METHOD, tenants.first().copied(), "", &s, reason);
        for t in tenants.iter().skip(1) {
            let _ = shared
                .audit
                .write(who, false, Some(t), METHOD, "", &result_text(Err(&s)));
        }
        s
    };
    let Some(certs) = req.peer_certs() else {
        return Err(refuse(
            &Who::anonymous(&peer),
            &[],
            Status::unauthenticated("a device certificate is required: enroll first"),
            "unauthenticated",
        ));
    };
    let Some(leaf) = certs.first() else {
        return Err(refuse(
            &Who::anonymous(&peer),
            &[],
            Status::unauthenticated("empty certificate chain"),
            "unauthenticated",
        ));
    };
    let id = match vigil_pki::device_identity(leaf.as_ref()) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "Stream refused: certificate without device identity");
            return Err(refuse(
                &Who::anonymous(&peer),
                &[],
                Status::unauthenticated("certificate carries no device identity"),
                "unauthenticated",
            ));
        }
    };
    let claimed = Who::device(&id.device_id, &id.tenant_id, &peer);
    let dev = match shared.control.device(&id.device_id).map_err(internal)? {
        Some(d) => d,
        None => {
            return Err(refuse(
                &claimed,
                &[&id.tenant_id],
                Status::permission_denied("unknown device"),
                "permission_denied",
            ));
        }
    };
    if dev.tenant_id != id.tenant_id {
        tracing::warn!(device = %id.device_id, "Stream refused: certificate tenant does not match the device record");
        return Err(refuse(
            &claimed,
            &[&id.tenant_id, &dev.tenant_id],
            Status::permission_denied("device identity mismatch"),
            "wrong_tenant",
        ));
    }
    if dev.revoked {
        return Err(refuse(
            &claimed,
            &[&dev.tenant_id],
            Status::permission_denied("device revoked"),
            "revoked",
        ));
    }
    Ok(dev)
}

const METHOD: &str = "Ingest/Stream";

/// A device enrolled before the server kept device keys gets its key from
/// the certificate it streams with (verified by TLS), so that it can import
/// offline bundles from now on.
fn keep_public_key<T>(shared: &Shared, device: &DeviceRecord, req: &Request<T>) {
    if !device.public_key.is_empty() {
        return;
    }
    let key = req.peer_certs().and_then(|c| {
        c.first()
            .map(|leaf| vigil_pki::certificate_public_key(leaf.as_ref()))
    });
    match key {
        Some(Ok(key)) => {
            if let Err(e) = shared
                .control
                .set_device_public_key(&device.device_id, &key)
            {
                tracing::warn!(device = %device.device_id, error = %e, "Keeping the device's public key failed");
            }
        }
        Some(Err(e)) => {
            tracing::warn!(device = %device.device_id, error = %e, "The device certificate's public key is unreadable")
        }
        None => {}
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        const M: &str = "Ingest/Enroll";
        let peer = peer_of(&req);
        let req = req.into_inner();
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let refuse = |s: Status| {
                shared.refused(&Who::anonymous(&peer), M, None, "", &s, "unauthenticated");
                Err(s)
            };
            let tenant = match shared.control.redeem_enrollment_token(&req.enrollment_token).map_err(internal)? {
                Redeemed::Tenant(t) => t,
                Redeemed::Expired => return refuse(Status::unauthenticated("enrollment token expired")),
                Redeemed::Revoked => return refuse(Status::unauthenticated("enrollment token revoked")),
                Redeemed::Unknown => return refuse(Status::unauthenticated("enrollment token is not valid")),
            };
            if let Some(rec) = shared.control.tenant(&tenant).map_err(internal)?
                && let Err(e) = shared.control.tenant_dir(&rec)
            {
                return Err(store_status(e));
            }
            let device_id = vigil_store::new_id().map_err(internal)?;
            let identity = vigil_pki::DeviceIdentity { tenant_id: tenant.clone(), device_id: device_id.clone() };
            let cert = shared
                .ca
                .sign_device(&req.csr_pem, &identity, vigil_pki::DEVICE_CERT_VALIDITY)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let hostname: String = req.host.map(|h| h.hostname).unwrap_or_default().chars().take(255).collect();
            // Under a policy of pseudonyms the registry keeps the host's
            // pseudonym (the one its records will carry), never its name.
            let (pseudonym_key, policy) = crate::privacy::for_enrollment(&shared, &tenant)?;
            let hostname = match <[u8; 32]>::try_from(pseudonym_key.as_slice()) {
                Ok(k) if policy.pseudonymize => vigil_pseudonym::Pseudonymizer::new(k).host(&hostname).into_owned(),
                _ => hostname,
            };
            // What verifies the offline bundles this device signs (transfer.rs).
            let public_key = vigil_pki::pem_to_der(&cert)
                .and_then(|der| vigil_pki::certificate_public_key(&der))
                .map_err(internal)?;
            shared
                .control
                .put_device(&DeviceRecord {
                    device_id: device_id.clone(),
                    tenant_id: tenant.clone(),
                    hostname: hostname.clone(),
                    enrolled_unix_ns: shared.control.now(),
                    revoked: false,
                    revoked_unix_ns: 0,
                    public_key,
                })
                .map_err(internal)?;
            tracing::info!(tenant = %tenant, device = %device_id, hostname = %hostname, "Device enrolled");
            shared.audit.write(
                &Who::device(&device_id, &tenant, &peer),
                false,
                Some(&tenant),
                M,
                &format!("hostname={hostname:?}"),
                "ok",
            )?;
            Ok(Response::new(EnrollResponse {
                device_id,
                tenant_id: tenant,
                certificate_pem: cert,
                ca_pem: shared.ca.cert_pem().to_owned(),
                pseudonym_key,
                policy: Some(policy),
                transfer_public_key: shared.transfer.public().to_sec1_bytes(),
            }))
        })
        .await
        .map_err(internal)?
    }

    type StreamStream = AckStream;

    type WatchPolicyStream = crate::privacy::PolicyStream;

    async fn watch_policy(
        &self,
        req: Request<WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        let device = device_of(&self.shared, &req)?;
        let held = req.into_inner().version;
        Ok(Response::new(crate::privacy::watch(
            Arc::clone(&self.shared),
            device,
            held,
        )))
    }

    async fn stream(
        &self,
        req: Request<Streaming<RawRecordBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        // First, before the control store or a tenant's store is touched: a
        // storm of reconnects past the limit costs little and is told when
        // to come back (`admission.rs`).
        let slot = self.shared.admission.open_stream()?;
        let device = device_of(&self.shared, &req)?;
        keep_public_key(&self.shared, &device, &req);
        let store = self
            .shared
            .control
            .tenant_store(&device.tenant_id)
            .map_err(store_status)?;
        let shared = Arc::clone(&self.shared);
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BatchAck, Status>>(16);
        tracing::info!(tenant = %device.tenant_id, device = %device.device_id, "Sensor stream opened");
        tokio::spawn(async move {
            let _slot = slot;
            let reg = shared.live.register(Owners {
                tenant: device.tenant_id.clone(),
                device: Some(device.device_id.clone()),
                token: None,
                grant: None,
            });
            let mut ended = reg.ended.clone();
            let failed = Arc::new(StreamFailed::default());
            // Batches handed to the committer, oldest first: acknowledged in
            // this order; each holds its bytes of the ingest budget until stored.
            let mut waiting: VecDeque<(Waiting, Held)> = VecDeque::new();
            // A batch read, waiting for room in the budget; nothing more is
            // read meanwhile, so HTTP/2 flow control holds the sensor back.
            let mut unadmitted: Option<(RawRecordBatch, HoldFuture)> = None;
            // Set once nothing more is read: `Some(status)` is sent after the waiting acks.
            let mut closing: Option<Option<Status>> = None;
            loop {
                if closing.is_some() && waiting.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = ended.changed() => {
                        let mut why = reg.why();
                        tracing::warn!(device = %device.device_id, why = why.message(), "Sensor stream closed by the server");
                        if why.code() == tonic::Code::Unavailable {
                            // Shutdown: every sensor hears it at once; the hint spreads their return.
                            why = shared.admission.hinted(why);
                        }
                        let _ = tx.send(Err(why)).await;
                        closing = None;
                        break;
                    }
                    outcome = async { (&mut waiting.front_mut().expect("checked non-empty").0.done).await },
                        if !waiting.is_empty() =>
                    {
                        let Some((w, held)) = waiting.pop_front() else { break };
                        let outcome = outcome.unwrap_or_else(|_| Err(Status::internal("internal error")));
                        let result = acknowledge(&shared, &device, w, outcome, Via::Stream);
                        // Stored (or refused) and its records freed: its room is given back
                        // before the ack is sent, so a sensor slow to read acks holds none.
                        drop(held);
                        let failed = result.is_err();
                        if let Err(s) = &result {
                            crate::metrics::refused_status(s);
                            tracing::warn!(device = %device.device_id, code = ?s.code(), message = s.message(), "Batch rejected");
                        }
                        if tx.send(result).await.is_err() || failed {
                            closing = None;
                            break;
                        }
                    }
                    held = async { (&mut unadmitted.as_mut().expect("checked some").1).await },
                        if unadmitted.is_some() =>
                    {
                        let Some((batch, _)) = unadmitted.take() else { break };
                        match submit(&shared, &store, &device, &failed, batch).await {
                            Ok(w) => waiting.push_back((w, held)),
                            Err(s) => {
                                crate::metrics::refused_status(&s);
                                tracing::warn!(device = %device.device_id, code = ?s.code(), message = s.message(), "Batch rejected");
                                closing = Some(Some(s));
                            }
                        }
                    }
                    next = inbound.next(),
                        if closing.is_none() && unadmitted.is_none() && waiting.len() < MAX_WAITING =>
                    {
                        match next {
                            None => closing = Some(None),
                            Some(Err(status)) => {
                                // Malformed protobuf, oversized message, dropped connection.
                                tracing::warn!(device = %device.device_id, code = ?status.code(), message = status.message(), "Sensor stream ended with an error");
                                // Tell the sensor why, when it is still listening.
                                closing = Some(Some(status));
                            }
                            Some(Ok(batch)) => {
                                let room = Box::pin(shared.admission.hold(batch.encoded_len()));
                                unadmitted = Some((batch, room));
                            }
                        }
                    }
                }
            }
            if let Some(Some(status)) = closing {
                let _ = tx.send(Err(status)).await;
            }
            drop(reg);
            tracing::info!(device = %device.device_id, "Sensor stream closed");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Room in the ingest budget, once there is.
type HoldFuture = Pin<Box<dyn std::future::Future<Output = Held> + Send>>;

/// Batches of one stream handed to the committer and not yet acknowledged, at
/// most (the sensor keeps 8 in flight): the next is read once one is answered.
const MAX_WAITING: usize = 8;

/// A batch handed to the committer: what its acknowledgement needs.
pub(crate) struct Waiting {
    batch_id: u64,
    started: std::time::Instant,
    received: i64,
    /// The batch's records, decoded: what live watchers and tenant-wide
    /// correlations get once stored.
    decoded: Vec<Record>,
    pub(crate) done: tokio::sync::oneshot::Receiver<Result<BatchOutcome, Status>>,
}

/// Checks a batch, makes its alerts, and queues it for the tenant's next
/// commit. Records are stored as the bytes the sensor sent: each one's
/// top-level fields are checked (`wire.rs`); detections are decoded in full.
pub(crate) async fn submit(
    shared: &Arc<Shared>,
    store: &Arc<dyn vigil_store::TenantData>,
    device: &DeviceRecord,
    failed: &Arc<StreamFailed>,
    batch: RawRecordBatch,
) -> Result<Waiting, Status> {
    if batch.records.len() > shared.config.max_batch_records {
        return Err(Status::resource_exhausted(format!(
            "batch of {} records exceeds the limit of {}",
            batch.records.len(),
            shared.config.max_batch_records
        )));
    }
    let started = std::time::Instant::now();
    let received = shared.control.now();
    let mut records = Vec::with_capacity(batch.records.len());
    let mut index = Vec::with_capacity(batch.records.len());
    let decode_all = shared.events.watched(&device.tenant_id)
        || shared.correlators.wants(shared, &device.tenant_id);
    let mut decoded = Vec::with_capacity(batch.records.len());
    let mut encoded = Vec::new();
    let mut last = 0;
    for bytes in batch.records {
        let head = crate::wire::record_head(&bytes)
            .ok_or_else(|| Status::invalid_argument("a record is not a well-formed Record"))?;
        if head.sequence <= last {
            return Err(Status::invalid_argument(
                "record sequence numbers must be positive and strictly increasing",
            ));
        }
        last = head.sequence;
        let mut ix = crate::hunt::index::head_index(head.time, head.payload);
        ix.optional = head.level == vigil_proto::v1::DataLevel::Optional as u64;
        index.push(ix);
        // Decoded in full only when something reads it now: a detection
        // (it becomes an alert), live watchers, tenant-wide correlations.
        // The indexer reads stored records later, off this path.
        if !(head.detection || decode_all) {
            records.push((head.sequence, bytes));
            continue;
        }
        let r = Record::decode(bytes.clone()).map_err(|e| {
            Status::invalid_argument(format!("record {} does not decode: {e}", head.sequence))
        })?;
        if head.detection
            && let Some(Payload::Detection(d)) = r.payload.clone()
        {
            {
                let id = alert::new_alert_id(received).map_err(internal)?;
                let time = d.matched.first().map_or(r.time_unix_ns, |m| m.time_unix_ns);
                let a = alert::from_detection(
                    id.clone(),
                    d,
                    &device.device_id,
                    &device.hostname,
                    time,
                    received,
                );
                let group = (shared.config.alert_aggregation_seconds > 0).then(|| alert::group(&a));
                encoded.push(vigil_store::NewAlert {
                    seq: r.sequence,
                    id,
                    bytes: a.encode_to_vec(),
                    group,
                });
            }
        }
        records.push((head.sequence, bytes));
        if decode_all {
            decoded.push(r);
        }
    }
    let (done, rx) = tokio::sync::oneshot::channel();
    shared
        .committers
        .submit(
            &device.tenant_id,
            Pending {
                store: Arc::clone(store),
                device: device.device_id.clone(),
                received_ns: received,
                records,
                index,
                alerts: encoded,
                aggregation_ns: i64::try_from(shared.config.alert_aggregation_seconds)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000_000),
                stream: Arc::clone(failed),
                done,
            },
        )
        .await?;
    Ok(Waiting {
        batch_id: batch.batch_id,
        started,
        received,
        decoded,
        done: rx,
    })
}

/// How a batch arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The device's own stream: the device is seen now.
    Stream,
    /// An offline bundle a person imported (transfer.rs): the device is not.
    Import,
}

/// The acknowledgement of a committed batch; raises its new alerts.
pub(crate) fn acknowledge(
    shared: &Arc<Shared>,
    device: &DeviceRecord,
    w: Waiting,
    outcome: Result<BatchOutcome, Status>,
    via: Via,
) -> Result<BatchAck, Status> {
    let outcome = outcome?;
    if via == Via::Stream {
        shared
            .live
            .saw(&device.tenant_id, &device.device_id, w.received);
    }
    crate::metrics::batch_stored(
        &device.tenant_id,
        u64::from(outcome.accepted),
        u64::from(outcome.duplicates),
        w.started.elapsed().as_secs_f64(),
    );
    // The store returns only alerts above the high-water mark: a re-send raises nothing.
    for stored in &outcome.alerts {
        let Ok(a) = Alert::decode(stored.bytes.as_slice()) else {
            continue;
        };
        if stored.merged {
            tracing::debug!(tenant = %device.tenant_id, alert = %a.id, count = a.count, "Alert repeated");
        } else {
            tracing::info!(tenant = %device.tenant_id, alert = %a.id, rule = %a.rule_id, device = %device.device_id, "Alert raised");
        }
        shared.alerts.publish(&device.tenant_id, &a);
    }
    // Only records above the old high-water mark were stored: live watchers
    // and tenant-wide correlations (correlate.rs) see each record once.
    let fresh: Vec<Record> = w
        .decoded
        .into_iter()
        .filter(|r| r.sequence > outcome.previous_high)
        .collect();
    if shared.events.watched(&device.tenant_id) {
        let dev: std::sync::Arc<str> = device.device_id.as_str().into();
        for r in &fresh {
            shared.events.publish(
                &device.tenant_id,
                &crate::hunt::Stored {
                    device: std::sync::Arc::clone(&dev),
                    record: std::sync::Arc::new(r.clone()),
                },
            );
        }
    }
    // `fresh` is empty unless submit decoded the batch for a watcher or a correlation.
    if !fresh.is_empty() && shared.correlators.wants(shared, &device.tenant_id) {
        let (tenant, id, host) = (&device.tenant_id, &device.device_id, &device.hostname);
        shared.correlators.observe(tenant, id, host, fresh);
    }
    Ok(BatchAck {
        batch_id: w.batch_id,
        stored_through: outcome.stored_through,
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    })
}
