//! Prometheus metrics, served over plain HTTP on their own address
//! (`metrics_listen`), apart from the gRPC port.
//!
//! The rest of the server reports through the small functions below, never
//! through the `metrics` macros directly: names, labels and units are decided
//! here once. Labels are bounded: a tenant id (tenants are created by an
//! operator), a refusal reason or an API method from a fixed set; never a
//! device, a peer address or anything a client sends.
//!
//! The recorder is process-wide. Until [`install`] runs, every function here
//! is a no-op (the `metrics` facade drops what no recorder takes).
//!
//! | Metric | Kind | Labels |
//! |---|---|---|
//! | `vigil_ingest_records_total` | counter | `tenant` |
//! | `vigil_ingest_duplicates_total` | counter | `tenant` |
//! | `vigil_ingest_batches_total` | counter | `tenant` |
//! | `vigil_ingest_batch_seconds` | histogram | |
//! | `vigil_refused_calls_total` | counter | `reason` |
//! | `vigil_store_bytes` | gauge | `tenant` |
//! | `vigil_records_held` | gauge | `tenant`, `level` |
//! | `vigil_api_call_seconds` | histogram | `method` |
//! | `vigil_sensor_streams_open` | gauge | |
//! | `vigil_ingest_bytes_in_flight` | gauge | |

use crate::ServerError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

/// Histogram buckets for durations, in seconds: 1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where the exporter listens, once installed.
static SERVING: Mutex<Option<SocketAddr>> = Mutex::new(None);

/// Installs the process-wide recorder and serves `GET /metrics` on `listen`.
///
/// The exporter runs on a thread of its own, not on the caller's runtime, so
/// it outlives any one server. Once per process: a later call (another
/// [`crate::Server`] in the same process, as in tests) keeps the first
/// listener and recorder, which go on recording for every server; when it
/// names another address it is logged, not served.
pub(crate) fn install(listen: SocketAddr) -> Result<(), ServerError> {
    let mut serving = SERVING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(addr) = *serving {
        if addr != listen {
            tracing::warn!(%addr, ignored = %listen, "Metrics already served on another address");
        }
        return Ok(());
    }
    let failed = |e: &dyn std::fmt::Display| ServerError::Io(format!("metrics on {listen}: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&e))?;
    let builder = PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| failed(&e))?;
    // `build` binds the listener (an error here is a bad or taken address) and
    // spawns its upkeep task on the runtime entered.
    let (recorder, exporter) = {
        let _entered = runtime.enter();
        builder.build().map_err(|e| failed(&e))?
    };
    ::metrics::set_global_recorder(recorder).map_err(|e| failed(&e))?;
    std::thread::Builder::new()
        .name("vigil-metrics".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(exporter) {
                tracing::error!(error = ?e, "Metrics listener stopped");
            }
        })
        .map_err(|e| failed(&e))?;
    describe();
    *serving = Some(listen);
    tracing::info!(addr = %listen, "Serving metrics over HTTP");
    Ok(())
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "vigil_ingest_records_total",
        "Records stored, by tenant (re-sent ones not counted)."
    );
    describe_counter!(
        "vigil_ingest_duplicates_total",
        "Records re-sent by a sensor and already stored, by tenant."
    );
    describe_counter!(
        "vigil_ingest_batches_total",
        "Batches committed, by tenant."
    );
    describe_histogram!(
        "vigil_ingest_batch_seconds",
        Unit::Seconds,
        "Time to check, store and acknowledge one batch."
    );
    describe_counter!(
        "vigil_refused_calls_total",
        "Calls or batches refused, by reason."
    );
    describe_gauge!(
        "vigil_store_bytes",
        Unit::Bytes,
        "Size of a tenant's store on disk."
    );
    describe_gauge!(
        "vigil_records_held",
        "Records a tenant's store holds, by data level (required, optional)."
    );
    describe_histogram!(
        "vigil_api_call_seconds",
        Unit::Seconds,
        "Analyst and administration calls, by method."
    );
    describe_gauge!(
        "vigil_index_backlog_chunks",
        "Stored chunks of records the tenant's indexer has not reached yet (lookups open them whole)."
    );
    describe_gauge!(
        "vigil_sensor_streams_open",
        "Sensor record streams open now."
    );
    describe_gauge!(
        "vigil_ingest_bytes_in_flight",
        Unit::Bytes,
        "Encoded bytes of sensor batches read and not yet stored (at most max_ingest_bytes_in_flight)."
    );
    describe_counter!(
        "vigil_correlation_skipped_total",
        "Batches not seen by tenant-wide correlations (their queue was full), by tenant."
    );
}

/// A batch of `tenant` was not correlated: its tenant-wide correlations were behind.
pub(crate) fn correlation_skipped(tenant: &str) {
    ::metrics::counter!("vigil_correlation_skipped_total", "tenant" => tenant.to_owned())
        .increment(1);
}

/// A batch was committed for `tenant`: `records` newly stored, `duplicates`
/// already stored before, in `seconds`.
pub(crate) fn batch_stored(tenant: &str, records: u64, duplicates: u64, seconds: f64) {
    let tenant = tenant.to_owned();
    ::metrics::counter!("vigil_ingest_records_total", "tenant" => tenant.clone())
        .increment(records);
    ::metrics::counter!("vigil_ingest_duplicates_total", "tenant" => tenant.clone())
        .increment(duplicates);
    ::metrics::counter!("vigil_ingest_batches_total", "tenant" => tenant).increment(1);
    ::metrics::histogram!("vigil_ingest_batch_seconds").record(seconds);
}

/// A call (or a batch within a stream) was refused. `reason` is one of a fixed
/// set: `unauthenticated`, `permission_denied`, `revoked`, `wrong_tenant`,
/// `resource_exhausted`, `invalid_argument`, `region_not_served`,
/// `tls_handshake`, `disk_full`, `overloaded` (a sensor stream past
/// `max_sensor_streams`).
pub(crate) fn refused(reason: &'static str) {
    ::metrics::counter!("vigil_refused_calls_total", "reason" => reason).increment(1);
}

/// Counts `status` with [`refused`] when it refuses the caller; internal
/// errors and the like are not refusals and are not counted.
pub(crate) fn refused_status(status: &tonic::Status) {
    use tonic::Code;
    let reason = match status.code() {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::InvalidArgument => "invalid_argument",
        _ => return,
    };
    refused(reason);
}

/// The size of `tenant`'s store on disk now.
pub(crate) fn store_bytes(tenant: &str, bytes: u64) {
    ::metrics::gauge!("vigil_store_bytes", "tenant" => tenant.to_owned()).set(bytes as f64);
}

/// What `tenant`'s store holds per data level now.
pub(crate) fn records_held(tenant: &str, required: u64, optional: u64) {
    for (level, n) in [("required", required), ("optional", optional)] {
        ::metrics::gauge!("vigil_records_held", "tenant" => tenant.to_owned(), "level" => level)
            .set(n as f64);
    }
}

/// An analyst or administration call to `method` (e.g. `ListAlerts`) took `seconds`.
pub(crate) fn api_call(method: &'static str, seconds: f64) {
    ::metrics::histogram!("vigil_api_call_seconds", "method" => method).record(seconds);
}

/// Stored chunks `tenant`'s indexer has not reached yet.
pub(crate) fn index_backlog(tenant: &str, chunks: u64) {
    ::metrics::gauge!("vigil_index_backlog_chunks", "tenant" => tenant.to_owned())
        .set(chunks as f64);
}

/// Sensor streams opened (`delta` > 0) or closed (< 0).
pub(crate) fn streams_open(delta: i64) {
    ::metrics::gauge!("vigil_sensor_streams_open").increment(delta as f64);
}

/// Bytes of sensor batches ingest took on (`delta` > 0) or gave back (< 0).
pub(crate) fn ingest_bytes_in_flight(delta: i64) {
    ::metrics::gauge!("vigil_ingest_bytes_in_flight").increment(delta as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporting_before_install_is_a_no_op() {
        batch_stored("acme", 3, 1, 0.01);
        refused("unauthenticated");
        refused_status(&tonic::Status::internal("x"));
        store_bytes("acme", 1);
        records_held("acme", 1, 0);
        api_call("ListAlerts", 0.1);
        streams_open(1);
        streams_open(-1);
        ingest_bytes_in_flight(1);
        ingest_bytes_in_flight(-1);
    }
}
