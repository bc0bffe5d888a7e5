//! The Ingest service: enrollment (token → device certificate) and the record
//! stream (mutual TLS; tenant from the certificate, never from the payload).

use crate::{Shared, alert};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::v1::{
    BatchAck, EnrollRequest, EnrollResponse, RecordBatch, ingest_server::Ingest, record::Payload,
};
use vigil_store::{DeviceRecord, Redeemed};

pub(crate) struct IngestService {
    pub(crate) shared: Arc<Shared>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "Internal error");
    Status::internal("internal error")
}

/// The authenticated device behind a request, from its verified certificate.
fn device_of<T>(shared: &Shared, req: &Request<T>) -> Result<DeviceRecord, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        tracing::warn!(peer = ?req.remote_addr(), "Stream refused: no device certificate");
        Status::unauthenticated("a device certificate is required: enroll first")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty certificate chain"))?;
    let id = vigil_pki::device_identity(leaf.as_ref()).map_err(|e| {
        tracing::warn!(error = %e, "Stream refused: certificate without device identity");
        Status::unauthenticated("certificate carries no device identity")
    })?;
    let dev = shared
        .control
        .device(&id.device_id)
        .map_err(internal)?
        .ok_or_else(|| Status::permission_denied("unknown device"))?;
    if dev.tenant_id != id.tenant_id {
        tracing::warn!(device = %id.device_id, "Stream refused: certificate tenant does not match the device record");
        return Err(Status::permission_denied("device identity mismatch"));
    }
    if dev.revoked {
        return Err(Status::permission_denied("device revoked"));
    }
    Ok(dev)
}

type AckStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = req.remote_addr();
        let req = req.into_inner();
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let tenant = match shared.control.redeem_enrollment_token(&req.enrollment_token).map_err(internal)? {
                Redeemed::Tenant(t) => t,
                Redeemed::Expired => {
                    tracing::warn!(?peer, "Enrollment refused: token expired");
                    return Err(Status::unauthenticated("enrollment token expired"));
                }
                Redeemed::Unknown => {
                    tracing::warn!(?peer, "Enrollment refused: unknown token");
                    return Err(Status::unauthenticated("enrollment token is not valid"));
                }
            };
            let device_id = vigil_store::new_id().map_err(internal)?;
            let identity = vigil_pki::DeviceIdentity { tenant_id: tenant.clone(), device_id: device_id.clone() };
            let cert = shared
                .ca
                .sign_device(&req.csr_pem, &identity, vigil_pki::DEVICE_CERT_VALIDITY)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let hostname: String = req.host.map(|h| h.hostname).unwrap_or_default().chars().take(255).collect();
            shared
                .control
                .put_device(&DeviceRecord {
                    device_id: device_id.clone(),
                    tenant_id: tenant.clone(),
                    hostname: hostname.clone(),
                    enrolled_unix_ns: vigil_store::now_unix_ns(),
                    revoked: false,
                })
                .map_err(internal)?;
            tracing::info!(target: "audit", tenant = %tenant, device = %device_id, hostname = %hostname, "Device enrolled");
            Ok(Response::new(EnrollResponse {
                device_id,
                tenant_id: tenant,
                certificate_pem: cert,
                ca_pem: shared.ca.cert_pem().to_owned(),
            }))
        })
        .await
        .map_err(internal)?
        .inspect_err(crate::metrics::refused_status) // ops: metrics
    }

    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<RecordBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let device = device_of(&self.shared, &req).inspect_err(crate::metrics::refused_status)?; // ops: metrics
        let store = self
            .shared
            .control
            .tenant_store(&device.tenant_id)
            .map_err(internal)?;
        let shared = Arc::clone(&self.shared);
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BatchAck, Status>>(16);
        tracing::info!(tenant = %device.tenant_id, device = %device.device_id, "Sensor stream opened");
        tokio::spawn(async move {
            crate::metrics::streams_open(1); // ops: metrics
            loop {
                let batch = match inbound.next().await {
                    None => break,
                    Some(Ok(b)) => b,
                    Some(Err(status)) => {
                        // Malformed protobuf, oversized message, dropped connection.
                        tracing::warn!(device = %device.device_id, code = ?status.code(), message = status.message(), "Sensor stream ended with an error");
                        // Tell the sensor why, when it is still listening.
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let result = handle_batch(&shared, &store, &device, batch).await;
                let failed = result.is_err();
                if let Err(s) = &result {
                    crate::metrics::refused_status(s); // ops: metrics
                    tracing::warn!(device = %device.device_id, code = ?s.code(), message = s.message(), "Batch rejected");
                }
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
            crate::metrics::streams_open(-1); // ops: metrics
            tracing::info!(device = %device.device_id, "Sensor stream closed");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn handle_batch(
    shared: &Arc<Shared>,
    store: &Arc<vigil_store::TenantStore>,
    device: &DeviceRecord,
    batch: RecordBatch,
) -> Result<BatchAck, Status> {
    let started = std::time::Instant::now(); // ops: metrics
    if batch.records.len() > shared.config.max_batch_records {
        return Err(Status::resource_exhausted(format!(
            "batch of {} records exceeds the limit of {}",
            batch.records.len(),
            shared.config.max_batch_records
        )));
    }
    if batch
        .records
        .windows(2)
        .any(|w| w[0].sequence >= w[1].sequence)
        || batch.records.iter().any(|r| r.sequence == 0)
    {
        return Err(Status::invalid_argument(
            "record sequence numbers must be positive and strictly increasing",
        ));
    }
    let received = vigil_store::now_unix_ns();
    let mut records = Vec::with_capacity(batch.records.len());
    let mut alerts = Vec::new();
    for r in batch.records {
        if let Some(Payload::Detection(d)) = &r.payload {
            let id = alert::new_alert_id(received).map_err(internal)?;
            let time = d.matched.first().map_or(r.time_unix_ns, |m| m.time_unix_ns);
            let a = alert::from_detection(
                id.clone(),
                d.clone(),
                &device.device_id,
                &device.hostname,
                time,
                received,
            );
            alerts.push((r.sequence, id, a));
        }
        records.push((r.sequence, r.encode_to_vec()));
    }
    let encoded: Vec<(u64, String, Vec<u8>)> = alerts
        .iter()
        .map(|(s, id, a)| (*s, id.clone(), a.encode_to_vec()))
        .collect();
    let (st, dev) = (Arc::clone(store), device.device_id.clone());
    let outcome = tokio::task::spawn_blocking(move || st.commit_batch(&dev, &records, &encoded))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    for (seq, _, a) in &alerts {
        if *seq > outcome.previous_high {
            tracing::info!(tenant = %device.tenant_id, alert = %a.id, rule = %a.rule_id, device = %device.device_id, "Alert raised");
            shared.alerts.publish(&device.tenant_id, a);
        }
    }
    crate::metrics::batch_stored(
        &device.tenant_id,
        outcome.accepted.into(),
        outcome.duplicates.into(),
        started.elapsed().as_secs_f64(),
    ); // ops: metrics
    Ok(BatchAck {
        batch_id: batch.batch_id,
        stored_through: outcome.stored_through,
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    })
}
