//! The Transfer service: offline bundles (`vigil-sensor export`, the
//! `vigil-bundle` crate) imported by a tenant admin.
//!
//! A bundle is checked in full before anything of it is stored: its layout;
//! its device (known, of the caller's tenant, not revoked); the device's
//! signature, with the public key kept from its certificate at enrollment;
//! that it is encrypted to this server's transfer key, and decrypts; every
//! record (well formed, its sequence the one its frame names). Its records
//! then take the live stream's own path (`ingest::submit`, the tenant's
//! committer, the device's high-water mark): a record is stored at most once,
//! however often its bundle is imported or the sensor re-sends it live.

use crate::audit::result_text;
use crate::auth::{ADMINS, Access};
use crate::commit::StreamFailed;
use crate::ingest::{Via, acknowledge, submit};
use crate::{Shared, internal, store_status};
use prost::bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use vigil_bundle::{BundleError, Frames, Header};
use vigil_proto::v1::{
    ImportBundleRequest, ImportBundleResponse, RawRecordBatch, transfer_server::Transfer,
};
use vigil_store::DeviceRecord;

const M: &str = "Transfer/ImportBundle";

/// Imports that run at once, at most: each holds its bundle and the
/// decrypted records in memory (up to twice `MAX_BUNDLE_BYTES`). Others wait.
pub(crate) const MAX_CONCURRENT_IMPORTS: usize = 2;

/// The largest request the service reads: a bundle and its protobuf framing,
/// whatever the server's `max_message_bytes` (which bounds sensor batches).
pub(crate) const MAX_REQUEST_BYTES: usize = vigil_bundle::MAX_BUNDLE_BYTES + 64 * 1024;

pub(crate) struct TransferService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) imports: Semaphore,
}

impl TransferService {
    pub(crate) fn new(shared: Arc<Shared>) -> TransferService {
        TransferService {
            shared,
            imports: Semaphore::new(MAX_CONCURRENT_IMPORTS),
        }
    }
}

/// A bundle that passed every check, ready to store.
struct Checked {
    device: DeviceRecord,
    header: Header,
    plain: Vec<u8>,
    frames: Frames,
    store: Arc<dyn vigil_store::TenantData>,
}

fn refused(code: tonic::Code, why: impl std::fmt::Display) -> Status {
    Status::new(code, format!("bundle refused: {why}"))
}

/// A bundle error as the status the importer sees.
fn bundle_status(e: BundleError) -> Status {
    use tonic::Code;
    let code = match &e {
        BundleError::WrongRecipient { .. } | BundleError::Key(_) => Code::FailedPrecondition,
        BundleError::TooLarge { .. } => Code::ResourceExhausted,
        _ => Code::InvalidArgument,
    };
    refused(code, e)
}

/// Every check, in order; nothing is stored here.
fn check(shared: &Shared, tenant: &str, bytes: &[u8], allow_gap: bool) -> Result<Checked, Status> {
    let sealed = vigil_bundle::parse(bytes).map_err(bundle_status)?;
    let claimed = sealed.header().device_id.clone();
    // Another tenant's device is indistinguishable from a missing one.
    let device = match shared.control.device(&claimed).map_err(internal)? {
        Some(d) if d.tenant_id == tenant => d,
        _ => {
            return Err(refused(
                tonic::Code::PermissionDenied,
                format_args!("device {claimed} is unknown or of another tenant"),
            ));
        }
    };
    if device.public_key.is_empty() {
        return Err(refused(
            tonic::Code::FailedPrecondition,
            format_args!(
                "device {claimed} enrolled before the server kept device keys: its key is kept \
                 at its next connection (or enroll it again), then import again"
            ),
        ));
    }
    let verified = sealed.verify(&device.public_key).map_err(bundle_status)?;
    if verified.header().tenant_id != device.tenant_id {
        return Err(refused(
            tonic::Code::InvalidArgument,
            format_args!(
                "it names tenant {}, its device belongs to {}",
                verified.header().tenant_id,
                device.tenant_id
            ),
        ));
    }
    if device.revoked {
        return Err(refused(
            tonic::Code::PermissionDenied,
            format_args!("device {claimed} is revoked"),
        ));
    }
    let opened = verified.open(&shared.transfer).map_err(bundle_status)?;
    let (header, plain, frames) = opened.into_parts();
    for (i, (seq, range)) in frames.iter().enumerate() {
        let malformed = |why: String| {
            refused(
                tonic::Code::InvalidArgument,
                format_args!("malformed record {}: {why}", i + 1),
            )
        };
        let head = plain
            .get(range.clone())
            .and_then(crate::wire::record_head)
            .ok_or_else(|| malformed("not a well-formed Record".into()))?;
        if head.sequence != *seq {
            return Err(malformed(format!(
                "its sequence field is {}, its frame says {seq}",
                head.sequence
            )));
        }
    }
    // The tenant's data, in its region (refused when this server does not serve it).
    let store = shared.control.tenant_store(tenant).map_err(store_status)?;
    let high = store.high_water(&device.device_id).map_err(internal)?;
    if !allow_gap && header.first_sequence > high.saturating_add(1) {
        return Err(refused(
            tonic::Code::FailedPrecondition,
            format_args!(
                "it starts at sequence {}, but the server holds device {claimed}'s records only \
                 through {high}: records {}..{} would never be stored after it. Export from \
                 sequence {high} (vigil-sensor export --after {high}), or import with \
                 --allow-gap if those records are lost",
                header.first_sequence,
                high + 1,
                header.first_sequence - 1
            ),
        ));
    }
    Ok(Checked {
        device,
        header,
        plain,
        frames,
        store,
    })
}

/// Stores a checked bundle in batches through the committer, in order.
async fn store(shared: &Arc<Shared>, c: Checked) -> Result<ImportBundleResponse, Status> {
    let plain = Bytes::from(c.plain);
    let failed = Arc::new(StreamFailed::default());
    let mut out = ImportBundleResponse {
        device_id: c.device.device_id.clone(),
        records: c.header.record_count,
        first_sequence: c.header.first_sequence,
        last_sequence: c.header.last_sequence,
        ..Default::default()
    };
    let per_batch = shared.config.max_batch_records.max(1);
    for (i, chunk) in c.frames.chunks(per_batch).enumerate() {
        let batch = RawRecordBatch {
            batch_id: i as u64 + 1,
            records: chunk.iter().map(|(_, r)| plain.slice(r.clone())).collect(),
        };
        let stored = async {
            let mut w = submit(shared, &c.store, &c.device, &failed, batch).await?;
            let outcome = (&mut w.done)
                .await
                .unwrap_or_else(|_| Err(Status::internal("internal error")));
            acknowledge(shared, &c.device, w, outcome, Via::Import)
        }
        .await;
        match stored {
            Ok(ack) => {
                out.accepted += ack.accepted;
                out.duplicates += ack.duplicates;
                out.stored_through = ack.stored_through;
            }
            Err(s) if out.stored_through > 0 => {
                return Err(Status::new(
                    s.code(),
                    format!(
                        "{} (records through sequence {} were stored; importing the bundle again stores the rest)",
                        s.message(),
                        out.stored_through
                    ),
                ));
            }
            Err(s) => return Err(s),
        }
    }
    Ok(out)
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn import_bundle(
        &self,
        req: Request<ImportBundleRequest>,
    ) -> Result<Response<ImportBundleResponse>, Status> {
        let caller = self.shared.authorize(&req, M, Access::Tenant(ADMINS))?;
        let tenant = caller.tenant()?.to_owned();
        let ImportBundleRequest { bundle, allow_gap } = req.into_inner();
        let size = bundle.len();
        let _turn = self
            .imports
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is stopping"))?;
        let shared = Arc::clone(&self.shared);
        let checked =
            tokio::task::spawn_blocking(move || check(&shared, &tenant, &bundle, allow_gap))
                .await
                .map_err(internal)?;
        // What the audit keeps: who, which device and sequences, how many; never a record.
        let mut summary = format!("bytes={size}");
        let result = match checked {
            Ok(c) => {
                summary = format!(
                    "device_id={} first_sequence={} last_sequence={} records={} bytes={size}",
                    c.device.device_id,
                    c.header.first_sequence,
                    c.header.last_sequence,
                    c.header.record_count
                );
                store(&self.shared, c).await
            }
            Err(s) => Err(s),
        };
        match &result {
            Ok(r) => {
                summary.push_str(&format!(
                    " accepted={} duplicates={}",
                    r.accepted, r.duplicates
                ));
                tracing::info!(
                    tenant = caller.tenant.as_deref().unwrap_or_default(),
                    device = %r.device_id,
                    accepted = r.accepted,
                    duplicates = r.duplicates,
                    "Bundle imported"
                );
            }
            Err(s) => {
                crate::metrics::refused_status(s);
                tracing::warn!(
                    tenant = caller.tenant.as_deref().unwrap_or_default(),
                    result = %result_text(Err(s)),
                    "Bundle refused"
                );
            }
        }
        self.shared
            .audited(&caller, M, None, &summary, result.map(Response::new))
    }
}
